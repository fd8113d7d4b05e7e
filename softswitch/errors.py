"""The root of every error the softswitch raises on purpose."""


class SoftswitchError(Exception):
    """Base class: anything else escaping a layer is a bug."""


class ConfigError(SoftswitchError):
    """A configuration file is wrong; the message names the file, the key and the fault."""
