"""Identifiers for tags, Call-IDs and branches.

They must be unique, not secret: nothing authenticates with a tag or a branch (RFC 3261
asks for 32 random bits so that two UAs never pick the same one). One generator per
process, seeded once from the operating system's CSPRNG, gives that uniqueness without a
system call for every message, which at thousands of messages per second was a visible
cost. Digest nonces, which are secrets, do not come from here.
"""

from __future__ import annotations

import random
import secrets

_rng = random.Random(secrets.randbits(128))


def random_hex(nbytes: int) -> str:
    """``2 * nbytes`` hex digits from the process-wide generator."""
    return f"{_rng.getrandbits(nbytes * 8):0{nbytes * 2}x}"


def new_tag() -> str:
    return random_hex(6)
