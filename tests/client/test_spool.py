"""The spool: framed, checksummed records that survive until acknowledged."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from runstream.client.errors import SpoolError
from runstream.client.spool import (
    FolderLock,
    Spool,
    process_folders,
    read_segment,
    segments,
)


def test_records_read_back_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, label="rank-0", segment_bytes=1 << 20)
    bodies = [b"first", b"second" * 100, b"third"]

    records = [spool.append(body) for body in bodies]

    assert [spool.read(r) for r in records] == bodies
    (segment,) = segments(spool.path)
    assert [body for _, body in read_segment(segment)] == bodies
    assert spool.path.name.startswith("rank-0.")


def test_segment_is_deleted_once_every_record_is_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=64)
    records = [spool.append(bytes([i]) * 40) for i in range(3)]
    assert len(segments(spool.path)) == 3

    spool.ack(records[0])
    spool.ack(records[2])

    assert segments(spool.path) == [records[1].segment]
    spool.ack(records[1])
    assert segments(spool.path) == []
    assert spool.close() is False
    assert not spool.path.exists()


def test_close_keeps_unacked_records_for_sync(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    spool.append(b"unsent")

    assert spool.close() is True

    assert process_folders(tmp_path) == [spool.path]
    (segment,) = segments(spool.path)
    assert [body for _, body in read_segment(segment)] == [b"unsent"]


@pytest.mark.parametrize("damage", ["cut", "flip"])
def test_torn_tail_is_dropped_and_earlier_records_kept(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    spool.append(b"whole record")
    last = spool.append(b"the record being written when the process died")
    spool.close()
    data = bytearray(last.segment.read_bytes())
    if damage == "cut":
        data = data[:-10]
    else:
        data[-1] ^= 0xFF
    last.segment.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        bodies = [body for _, body in read_segment(last.segment)]

    assert bodies == [b"whole record"]
    assert "torn record" in caplog.text
    with pytest.raises(SpoolError, match="damaged"):
        spool.read(last)


def test_a_live_spool_is_locked_against_sync(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1 << 20)
    spool.append(b"x")

    with FolderLock(spool.path) as busy:
        held_while_open = busy.held
    spool.close()
    with FolderLock(spool.path) as free:
        held_after_close = free.held

    assert held_while_open is False
    assert held_after_close is True
