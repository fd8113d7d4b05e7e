"""softswitch: a multi-tenant SIP phone system for coworking spaces."""

__version__ = "0.1.0"
