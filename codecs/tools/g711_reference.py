"""Bit-level G.711 reference, written from the ITU-T G.191 STL description of ``g711.c``.

This is deliberately slow, scalar, integer-only Python that mirrors the reference
algorithm step by step (one's complement of negatives, bias of 33 for mu-law, segment
search by shifting). It exists only to generate and to check the look-up tables in
``swcodecs._g711_tables``; nothing at run time imports it.

Conventions follow G.191: linear samples are 16-bit two's complement, left justified
(A-law uses the 13 most significant bits, mu-law the 14 most significant bits); codes
are 8-bit values as sent on the wire (A-law with even bits toggled, mu-law inverted).
"""

from __future__ import annotations


def _ones_complement_magnitude(lin: int, shift: int) -> int:
    # G.191 takes the one's complement of negative samples rather than negating them,
    # so -1 maps to magnitude 0 and -32768 stays in range without overflow.
    return (~lin) >> shift if lin < 0 else lin >> shift


def alaw_compress(lin: int) -> int:
    """Encode one int16 sample to an A-law code (0..255)."""
    ix = _ones_complement_magnitude(lin, 4)  # 0 <= ix < 2048
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16  # drop the implicit leading one of the mantissa
        ix += iexp << 4
    if lin >= 0:
        ix |= 0x80
    return ix ^ 0x55


def alaw_expand(code: int) -> int:
    """Decode one A-law code (0..255) to an int16 sample."""
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    if iexp > 0:
        mant += 16
    # Reconstruct at the middle of the quantisation interval.
    mant = (mant << 4) + 0x08
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


def ulaw_compress(lin: int) -> int:
    """Encode one int16 sample to a mu-law code (0..255)."""
    # 33 is the offset between the A-law and mu-law decision thresholds.
    absno = _ones_complement_magnitude(lin, 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high_nibble = 0x08 - segno
    low_nibble = 0x0F - ((absno >> segno) & 0x0F)
    code = (high_nibble << 4) | low_nibble
    if lin >= 0:
        code |= 0x80
    return code


def ulaw_expand(code: int) -> int:
    """Decode one mu-law code (0..255) to an int16 sample."""
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa &= 0x0F
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)
