"""Wrap-around arithmetic for RTP sequence numbers (16 bit) and timestamps (32 bit).

RFC 3550 section A.1 compares sequence numbers modulo 2**16: ``a`` is "after" ``b`` when
the forward distance from ``b`` to ``a`` is less than half the space. Timestamps use the
same rule modulo 2**32.
"""

from __future__ import annotations

from typing import Final

SEQ_MOD: Final = 1 << 16
TS_MOD: Final = 1 << 32
SEQ_MASK: Final = SEQ_MOD - 1
TS_MASK: Final = TS_MOD - 1


def seq_add(seq: int, n: int) -> int:
    """``seq + n`` modulo 2**16 (``n`` may be negative)."""
    return (seq + n) & SEQ_MASK


def seq_plus_one(seq: int) -> int:
    return (seq + 1) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in [-32768, 32767]: positive when ``a`` is later."""
    d = (a - b) & SEQ_MASK
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


def seq_gt(a: int, b: int) -> bool:
    """True when ``a`` comes after ``b`` (modulo 2**16)."""
    return seq_diff(a, b) > 0


def ts_add(ts: int, n: int) -> int:
    """``ts + n`` modulo 2**32 (``n`` may be negative)."""
    return (ts + n) & TS_MASK


def ts_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in [-2**31, 2**31 - 1]."""
    d = (a - b) & TS_MASK
    return d - TS_MOD if d >= TS_MOD // 2 else d


def ts_gt(a: int, b: int) -> bool:
    return ts_diff(a, b) > 0
