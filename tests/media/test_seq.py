from __future__ import annotations

from softswitch.media.seq import (
    seq_add,
    seq_diff,
    seq_gt,
    seq_plus_one,
    ts_add,
    ts_diff,
    ts_gt,
)


def test_seq_wraps_at_16_bits():
    assert seq_plus_one(65535) == 0
    assert seq_plus_one(0) == 1
    assert seq_add(65530, 10) == 4
    assert seq_add(3, -5) == 65534


def test_seq_diff_is_signed_across_the_wrap():
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(5, 5) == 0
    assert seq_diff(32767, 0) == 32767
    assert seq_diff(32768, 0) == -32768


def test_seq_gt_across_the_wrap():
    assert seq_gt(0, 65535)
    assert not seq_gt(65535, 0)
    assert seq_gt(100, 50)
    assert not seq_gt(50, 50)


def test_timestamp_wraps_at_32_bits():
    assert ts_add(0xFFFFFF00, 0x200) == 0x100
    assert ts_add(0, -160) == 0xFFFFFF60
    assert ts_diff(0x100, 0xFFFFFF00) == 0x200
    assert ts_diff(0xFFFFFF00, 0x100) == -0x200
    assert ts_gt(160, 0xFFFFFFA0)
    assert not ts_gt(0xFFFFFFA0, 160)
