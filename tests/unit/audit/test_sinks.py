"""Secondary sinks: the JSON-lines file (0600, append-only, fsync, whole lines even on a full disk),
syslog, and the checkpoint directory."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from pathlib import Path

import pytest

from broker.audit import sinks
from broker.audit.checkpoint import Signer, generate_private_pem
from broker.audit.sinks import CheckpointDirectory, FileSink, SinkError, SyslogSink, parse_syslog_target


def test_file_sink_appends_whole_lines_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path, timeout=5)
    sink.check()
    assert path.stat().st_mode & 0o777 == 0o600

    async def go() -> None:
        await asyncio.gather(*(sink.write(f'{{"n":{i}}}\n'.encode()) for i in range(200)))

    try:
        asyncio.run(go())
    finally:
        sink.close()
    lines = path.read_bytes().splitlines()
    assert sorted(int(ln[5:-1]) for ln in lines) == list(range(200))


def test_file_sink_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    path.chmod(0o644)
    with pytest.raises(SinkError, match="chmod 600"):
        FileSink(path, timeout=5).check()


def test_file_sink_does_not_follow_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(SinkError, match="ELOOP"):
        FileSink(link, timeout=5).check()


def test_disk_full_mid_write_leaves_only_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path, timeout=5)
    real_write = os.write
    state = {"full": False}

    def write(fd: int, data: bytes) -> int:
        if state["full"]:
            real_write(fd, data[:7])  # half a line reaches the disk, then it is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(sinks.os, "write", write)

    async def go() -> None:
        await sink.write(b'{"a":1}\n')
        state["full"] = True
        with pytest.raises(OSError, match="No space left") as err:
            await sink.write(b'{"b":2}\n')
        assert sinks.describe(err.value).startswith("ENOSPC")
        state["full"] = False
        await sink.write(b'{"c":3}\n')

    try:
        asyncio.run(go())
    finally:
        sink.close()
    assert path.read_bytes() == b'{"a":1}\n{"c":3}\n'


def test_a_hanging_sink_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    release = threading.Event()
    sink = FileSink(tmp_path / "audit.jsonl", timeout=0.2)
    real_fsync = os.fsync

    def hang(fd: int) -> None:
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(sinks.os, "fsync", hang)

    async def go() -> None:
        with pytest.raises(SinkError, match="timed out"):
            await sink.write(b"{}\n")

    try:
        asyncio.run(go())
    finally:
        release.set()
        sink.close()


def test_syslog_unix_socket_gets_one_message_per_event(tmp_path: Path) -> None:
    path = tmp_path / "log.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    sink = SyslogSink(f"unix:{path}", timeout=5)
    try:
        asyncio.run(sink.write(b'{"a":1}\n{"b":"x\\ny"}\n'))
        first, second = server.recv(4096), server.recv(4096)
    finally:
        sink.close()
        server.close()
    assert first.startswith(b"<86>1 ") and first.endswith(b' audit - {"a":1}')
    assert second.endswith(b'{"b":"x\\ny"}') and b"\n" not in second


def test_syslog_without_a_listener_fails(tmp_path: Path) -> None:
    sink = SyslogSink(f"unix:{tmp_path / 'nobody.sock'}", timeout=1)
    try:
        with pytest.raises(OSError):
            asyncio.run(sink.write(b"{}\n"))
    finally:
        sink.close()


@pytest.mark.parametrize("bad", ["unix:relative", "http://x", "udp://", "tcp://h:notaport", "/dev/log"])
def test_syslog_targets_are_checked(bad: str) -> None:
    with pytest.raises(SinkError, match="audit_syslog"):
        parse_syslog_target(bad)


def test_checkpoint_directory(tmp_path: Path) -> None:
    signer = Signer.from_pem(generate_private_pem())
    store = CheckpointDirectory(tmp_path / "cps")
    assert store.latest() is None and store.between(0, None) == []
    store.ensure(signer.public)
    assert (tmp_path / "cps").stat().st_mode & 0o777 == 0o700
    for seq in (5, 10, 100):
        store.write(signer.sign(seq=seq, head="ab" * 32, time=f"2026-11-26T10:00:{seq % 60:02d}.000000Z"))
    store.write(signer.sign(seq=5, head="ab" * 32, time="2026-11-26T10:00:05.000000Z"))  # idempotent
    assert store.latest() is not None and store.latest().seq == 100  # type: ignore[union-attr]
    assert [c.seq for c in store.between(6, 100)] == [10, 100]
    files = sorted(p.name for p in (tmp_path / "cps").iterdir())
    assert files[0] == "checkpoint-00000000000000000005.json" and files[-1].startswith("public-key-")
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (tmp_path / "cps").iterdir())
    (tmp_path / "cps" / "checkpoint-00000000000000000200.json").write_text("{garbage")
    with pytest.raises(SinkError, match="checkpoint file"):
        store.latest()
