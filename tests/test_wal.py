"""The write-ahead log against a plain reference of its rules: records come back in order,
a torn tail is cut off, corruption elsewhere is refused, concurrent syncs are grouped, and
checkpoints make the log they cover droppable."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from service.stores.errors import DurabilityError, StoreConfigError
from service.stores.wal import WriteAheadLog
from service.stores.wal.segments import MAGIC, scan, segments


def payloads(n: int) -> list[bytes]:
    return [os.urandom(1 + (i * 37) % 300) for i in range(n)]


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, "no", segment_bytes=2000)
    log.open(after=0)
    data = payloads(50)
    for i, p in enumerate(data):
        assert log.append(i % 3 + 1, p) == i + 1
    log.close()
    assert len(segments(tmp_path)) > 3  # rolled over several times
    found = scan(tmp_path, after=0)
    assert [bytes(r.payload) for r in found.records] == data
    assert [r.kind for r in found.records] == [i % 3 + 1 for i in range(50)]
    assert found.last_seq == 50
    # after a checkpoint at 20, only the later records are returned
    assert [r.seq for r in scan(tmp_path, after=20).records] == list(range(21, 51))
    again = WriteAheadLog(tmp_path, "no", segment_bytes=2000)
    again.open(after=50)
    assert again.append(1, b"x") == 51  # numbering goes on
    again.close()


@pytest.mark.parametrize("cut", [1, 5, 17, 40])
def test_a_torn_tail_is_cut_off(tmp_path: Path, cut: int) -> None:
    """A record half written when the process died (never acknowledged) is dropped, and
    the log goes on after the last whole record."""
    log = WriteAheadLog(tmp_path, "no")
    log.open(after=0)
    for p in payloads(10):
        log.append(1, p)
    log.close()
    (_, path), = segments(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - cut)
    again = WriteAheadLog(tmp_path, "always")
    found = again.open(after=0)
    assert [r.seq for r in found.records] == list(range(1, 10))
    assert found.torn_bytes > 0
    assert again.append(1, b"after") == 10
    again.close()
    assert [bytes(r.payload) for r in scan(tmp_path, 9).records] == [b"after"]


def test_a_flipped_byte_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, "no")
    log.open(after=0)
    for p in payloads(5):
        log.append(1, p)
    log.close()
    (_, path), = segments(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the CRC of record 5 fails
    path.write_bytes(bytes(data))
    assert [r.seq for r in scan(tmp_path, 0).records] == [1, 2, 3, 4]


def test_corruption_before_the_tail_is_refused(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, "no", segment_bytes=600)
    log.open(after=0)
    for p in payloads(30):
        log.append(1, p)
    log.close()
    first = segments(tmp_path)[0][1]
    data = bytearray(first.read_bytes())
    data[len(MAGIC) + 20] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(StoreConfigError, match="corrupt"):
        scan(tmp_path, 0)


def test_a_missing_segment_is_refused(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, "no", segment_bytes=600)
    log.open(after=0)
    for p in payloads(30):
        log.append(1, p)
    log.close()
    segments(tmp_path)[1][1].unlink()
    with pytest.raises(StoreConfigError, match="missing"):
        scan(tmp_path, 0)


def test_concurrent_requests_share_syncs(tmp_path: Path) -> None:
    """Group commit: 200 requests each waiting for its record need far fewer syncs than
    records, and every wait returns once its record is synced."""
    log = WriteAheadLog(tmp_path, "always")
    log.open(after=0)

    async def request(i: int) -> int:
        seq = log.append(1, b"x" * 2000)
        await asyncio.sleep(0)
        await log.durable(seq)
        assert log.synced_seq >= seq
        return seq

    async def run() -> list[int]:
        return await asyncio.gather(*(request(i) for i in range(200)))

    assert sorted(asyncio.run(run())) == list(range(1, 201))
    assert 1 <= log.syncs < 200
    log.close()


@pytest.mark.parametrize("policy", ["everysec", "no"])
def test_other_policies_answer_at_once(tmp_path: Path, policy: str) -> None:
    log = WriteAheadLog(tmp_path, policy)  # type: ignore[arg-type]
    log.open(after=0)
    seq = log.append(1, b"x")
    asyncio.run(log.durable(seq))  # returns without a sync
    log.close()  # a clean stop syncs whatever the policy
    assert scan(tmp_path, 0).last_seq == 1


def test_drop_through_keeps_what_a_checkpoint_does_not_hold(tmp_path: Path) -> None:
    log = WriteAheadLog(tmp_path, "no")
    log.open(after=0)
    for _ in range(5):
        log.append(1, b"a")
    log.roll()  # a checkpoint at 5 starts a new segment
    for _ in range(3):
        log.append(1, b"b")
    assert log.drop_through(5) == 1
    assert [r.seq for r in scan(tmp_path, 5).records] == [6, 7, 8]
    assert log.drop_through(8) == 0  # the open segment is never dropped
    log.close()


def test_a_write_that_fails_leaves_nothing(tmp_path: Path) -> None:
    """A failed write raises DurabilityError and leaves the file as it was (here the
    descriptor is closed under the log, as an I/O error would leave it unusable)."""
    log = WriteAheadLog(tmp_path, "no")
    log.open(after=0)
    log.append(1, b"kept")
    os.close(log._fd)
    with pytest.raises(DurabilityError):
        log.append(1, b"lost")
    assert log.last_seq == 1
    log._fd = -1
    assert [bytes(r.payload) for r in scan(tmp_path, 0).records] == [b"kept"]


def test_a_log_dropped_as_it_goes_reopens_from_its_oldest_segment(tmp_path: Path) -> None:
    """A Redis worker's log drops segments as flushes are confirmed (not at checkpoints), so
    it reopens from whatever segment is oldest; ``after=0`` would call the dropped records
    missing (the bug the durability bench found once segments rolled over by size)."""
    log = WriteAheadLog(tmp_path, "no", segment_bytes=600)
    log.open(after=0)
    for p in payloads(30):
        log.append(1, p)
    dropped = log.drop_through(20)
    log.close()
    assert dropped >= 1
    first = segments(tmp_path)[0][0]
    assert 1 < first <= 21  # records up to 20 may go, none after
    with pytest.raises(StoreConfigError, match="missing"):
        WriteAheadLog(tmp_path, "no", segment_bytes=600).open(after=0)
    again = WriteAheadLog(tmp_path, "no", segment_bytes=600)
    found = again.open(after=None)
    assert [r.seq for r in found.records] == list(range(first, 31))
    assert again.append(1, b"x") == 31
    again.close()
