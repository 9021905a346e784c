"""fastgw._core.spool: request bodies and response spools, in memory then in a temporary file."""

import os

import pytest

from fastgw._core.spool import BodyBuffer, Spool


def _drain(source, n=7):
    out = []
    while True:
        data = source.read(n)
        if not data:
            return b"".join(out)
        out.append(data)


def test_body_buffer_small_body_stays_in_memory(tmp_path):
    body = BodyBuffer(16, str(tmp_path / "t"))
    body.write(b"0123456789")
    assert body.size == 10 and body.in_file == 0
    assert not (tmp_path / "t").exists()  # no directory made while nothing spills
    assert _drain(body) == b"0123456789"


def test_body_buffer_spills_and_rereads_for_a_retry(tmp_path):
    body = BodyBuffer(8, str(tmp_path / "t"))
    pieces = [b"abcd", b"efgh", b"ijklmnop", b"q" * 100]
    for p in pieces:
        body.write(p)
    assert body.size == 116
    assert body.in_file == 108
    # The file exists only as an open descriptor: nothing is left in the directory.
    assert os.listdir(tmp_path / "t") == []
    assert _drain(body) == b"".join(pieces)
    body.rewind()
    assert _drain(body, 1000) == b"".join(pieces)
    body.close()
    body.close()  # idempotent


def test_body_buffer_unwritable_directory_raises(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    body = BodyBuffer(1, str(tmp_path / "file" / "sub"))
    with pytest.raises(OSError):
        body.write(b"too big for memory")


def test_spool_is_fifo_across_memory_and_file(tmp_path):
    spool = Spool(10, str(tmp_path), 1 << 20)
    spool.write(b"aaaa")
    spool.write(b"bbbb")
    spool.write(b"cccc")          # over 10 bytes of memory: to the file
    assert spool.in_file == 4
    spool.write(b"dd")            # fits memory, but must follow the file's bytes
    assert spool.in_file == 6
    assert spool.read(100) == b"aaaa"
    spool.write(b"ee")
    assert _drain(spool, 3) == b"bbbbccccddee"
    assert spool.size == 0
    # Drained: memory is used again.
    spool.write(b"ff")
    assert spool.in_file == 0 and spool.read(10) == b"ff"


def test_spool_full_at_max_temp_file_size(tmp_path):
    spool = Spool(4, str(tmp_path), 8)
    spool.write(b"1234")
    assert not spool.full()
    spool.write(b"5678")
    assert not spool.full()
    spool.write(b"9abc")
    assert spool.full()
    assert _drain(spool) == b"123456789abc"
    assert not spool.full()


def test_spool_without_temp_files_is_full_at_memory(tmp_path):
    spool = Spool(8, str(tmp_path / "never"), 0)
    spool.write(b"12345")
    assert not spool.full()
    spool.write(b"6789")
    assert spool.full() and spool.in_file == 0
    assert not (tmp_path / "never").exists()
    assert _drain(spool) == b"123456789"


def test_spool_file_failure_keeps_order_in_memory(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    spool = Spool(4, str(tmp_path / "file" / "sub"), 1 << 20)
    spool.write(b"abcd")
    spool.write(b"efgh")          # the file cannot be made: kept in memory, in order
    assert isinstance(spool.failed, OSError)
    assert spool.full()           # the upstream must wait for the client now
    spool.write(b"ij")
    assert _drain(spool) == b"abcdefghij"
