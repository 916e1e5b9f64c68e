"""Secondary audit sinks (an append-only JSON-lines file, syslog) and the checkpoint directory.

The database is the primary record; these copies are for a SIEM and for the rule "a request goes on
while at least one sink recorded its event". Each sink does its blocking I/O on one worker thread of
its own: requests that arrive while it is writing share the next write (and, for the file, the next
fsync), so a busy broker pays one fsync per batch rather than per request, and a sink that hangs
costs a request at most `timeout` seconds before it counts as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from broker.audit.checkpoint import CheckpointError, PublicKey, SignedCheckpoint, parse
from broker.audit.restore import RestoreMarker
from broker.audit.restore import parse as parse_marker
from broker.files import ensure_private_dir, fsync_directory, loose_mode, write_private


class SinkError(Exception):
    """A sink could not record an event; the message is safe to log (no event content)."""


def describe(exc: BaseException) -> str:
    """A short, content-free description of a sink failure (errno name and text, or the type)."""
    if isinstance(exc, SinkError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, str(exc.errno))} ({os.strerror(exc.errno)})"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


class EventSink(Protocol):
    """Somewhere besides the database that records events."""

    name: str

    async def write(self, data: bytes) -> None:
        """Record one or more complete lines durably, or raise."""

    def close(self) -> None:
        """Stop the worker thread."""


_Job = tuple[bytes, "asyncio.Future[None]", asyncio.AbstractEventLoop]


class _Worker:
    """A single thread that runs `flush(batch)` for everything queued since its last run."""

    def __init__(self, flush: Callable[[list[bytes]], None], name: str, timeout: float) -> None:
        self._flush = flush
        self._name = name
        self._timeout = timeout
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # None: stop
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put((data, done, loop))
        try:
            await asyncio.wait_for(asyncio.shield(done), self._timeout)
        except TimeoutError:
            raise SinkError(f"timed out after {self._timeout:g} s") from None

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            jobs = [job for job in batch if job is not None]
            error: BaseException | None = None
            try:
                self._flush([data for data, _, _ in jobs])
            except Exception as exc:  # every failure of the sink is reported to its callers
                error = exc
            for _, done, loop in jobs:
                with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown)
                    loop.call_soon_threadsafe(_settle, done, error)
            if len(jobs) != len(batch):
                return

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class FileSink:
    """Append-only JSON lines in a 0600 file, fsynced before a request goes on.

    The file is opened for each batch (O_APPEND, O_NOFOLLOW, created 0600), so a rotated or removed
    file is recreated. A write that fails half-way is cut back to the last whole line, so a full disk
    never leaves a broken line in front of the next event (unless another process appended meanwhile;
    give each broker process its own file).
    """

    def __init__(self, path: Path, *, timeout: float) -> None:
        self.path = path
        self.name = f"file:{path}"
        self._worker = _Worker(self._flush, "strongroom-audit-file", timeout)

    def check(self) -> None:
        """At start-up: the file can be opened for appending and is not readable by others."""
        try:
            self._flush([])
        except OSError as exc:
            raise SinkError(f"audit file {self.path}: {describe(exc)}") from None
        if (loose := loose_mode(self.path, "audit file")) is not None:
            raise SinkError(loose)

    def _flush(self, batch: list[bytes]) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o600)
        try:
            if not batch:
                return
            data = b"".join(batch)
            start = os.fstat(fd).st_size
            written = 0
            try:  # a short write is continued; an error cuts the file back to the last whole line
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    if start <= os.fstat(fd).st_size <= start + len(data):
                        os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)

    async def write(self, data: bytes) -> None:
        """Append and fsync (shared with concurrent callers)."""
        await self._worker.submit(data)

    def close(self) -> None:
        """Stop the worker thread."""
        self._worker.close()


@dataclass(frozen=True)
class SyslogTarget:
    """Where syslog messages go: a unix datagram socket, UDP or TCP."""

    kind: str
    address: str | tuple[str, int]


def parse_syslog_target(text: str) -> SyslogTarget:
    """`unix:/dev/log`, `udp://host:514` or `tcp://host:601`."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path.startswith("/"):
            raise SinkError("audit_syslog: unix: needs an absolute socket path, e.g. unix:/dev/log")
        return SyslogTarget("unix", path)
    parts = urlsplit(text)
    if parts.scheme not in ("udp", "tcp") or not parts.hostname:
        raise SinkError("audit_syslog: must be unix:/path, udp://host:port or tcp://host:port")
    try:
        port = parts.port or 514
    except ValueError:
        raise SinkError("audit_syslog: the port is not a number") from None
    return SyslogTarget(parts.scheme, (parts.hostname, port))


class SyslogSink:
    """RFC 5424 messages, one event per message, the event's canonical JSON as the message.

    Facility auth-priv (10), severity informational; TCP uses octet-counting framing (RFC 6587). A UDP
    send cannot tell whether anyone received it: prefer unix or TCP when this sink must count.
    """

    FACILITY = 10
    SEVERITY = 6

    def __init__(self, target: str, *, timeout: float) -> None:
        self.target = parse_syslog_target(target)
        self.name = f"syslog:{target}"
        self._sock: socket.socket | None = None
        self._host = (socket.gethostname() or "-")[:255].replace(" ", "-")
        self._worker = _Worker(self._flush, "strongroom-audit-syslog", timeout)
        self._timeout = timeout

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        if self.target.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        elif self.target.kind == "udp":
            sock = socket.socket(
                socket.AF_INET6 if ":" in self.target.address[0] else socket.AF_INET, socket.SOCK_DGRAM
            )
        else:
            sock = socket.create_connection(self.target.address, timeout=self._timeout)  # type: ignore[arg-type]
        sock.settimeout(self._timeout)
        if self.target.kind != "tcp":
            try:
                sock.connect(self.target.address)
            except OSError:
                sock.close()
                raise
        self._sock = sock
        return sock

    def _message(self, line: bytes) -> bytes:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        pri = self.FACILITY * 8 + self.SEVERITY
        return f"<{pri}>1 {stamp} {self._host} strongroom {os.getpid()} audit - ".encode() + line

    def _flush(self, batch: list[bytes]) -> None:
        lines = [ln for data in batch for ln in data.splitlines() if ln]
        try:
            sock = self._connect()
            for ln in lines:
                msg = self._message(ln)
                if self.target.kind == "tcp":
                    sock.sendall(str(len(msg)).encode() + b" " + msg)
                else:
                    sock.send(msg)
        except OSError:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            raise

    async def write(self, data: bytes) -> None:
        """Send each line as one message."""
        await self._worker.submit(data)

    def close(self) -> None:
        """Stop the worker thread and close the socket."""
        self._worker.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class CheckpointDirectory:
    """The external checkpoint sink: one 0600 file per checkpoint, `checkpoint-<seq>.json`, in a 0700 directory;
    beside them, accepted-restore markers (`restore-<seq>.marker`) and the checkpoints each set aside
    (`superseded-<seq>/`).

    Keep it on another volume or host (or sync it to object storage with retention lock): a database
    restored from a backup cannot restore it, which is how the start-up check sees the rollback.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, seq: int) -> Path:
        return self.path / f"checkpoint-{seq:020d}.json"

    def ensure(self, public: PublicKey) -> None:
        """Create the directory and put the public key beside the checkpoints (for auditors)."""
        ensure_private_dir(self.path)
        key_file = self.path / f"public-key-{public.key_id.split(':')[-1]}.pem"
        if not key_file.exists():
            write_private(key_file, public.pem())

    def write(self, signed: SignedCheckpoint) -> None:
        """Write one checkpoint atomically (an existing identical file is left alone)."""
        target = self._file(signed.seq)
        data = (signed.document() + "\n").encode("ascii")
        if target.exists() and target.read_bytes() == data:
            return
        write_private(target, data)

    def _names(self) -> list[str]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(
            n for n in names if n.startswith("checkpoint-") and n.endswith(".json") and n[11:-5].isdigit()
        )

    def latest(self) -> SignedCheckpoint | None:
        """The checkpoint with the highest sequence, or None."""
        names = self._names()
        if not names:
            return None
        return self._read(names[-1])

    def _read(self, name: str) -> SignedCheckpoint:
        try:
            return parse((self.path / name).read_bytes()[:8192])
        except CheckpointError as exc:
            raise SinkError(f"checkpoint file {self.path / name}: {exc}") from None

    def markers(self) -> list[RestoreMarker]:
        """The accepted-restore markers (`restore-<seq>.marker`), oldest first."""
        try:
            names = sorted(
                n for n in os.listdir(self.path) if n.startswith("restore-") and n.endswith(".marker")
            )
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            try:
                out.append(parse_marker((self.path / name).read_bytes()[:16384]))
            except CheckpointError as exc:
                raise SinkError(f"restore marker {self.path / name}: {exc}") from None
        return out

    def write_marker(self, marker: RestoreMarker) -> None:
        """Write an accepted-restore marker atomically."""
        write_private(self.path / f"restore-{marker.seq:020d}.marker", (marker.document() + "\n").encode())

    def set_aside(self, seqs: list[int], *, marker_seq: int) -> Path:
        """Move the checkpoints a restore superseded into `superseded-<marker seq>/` (kept for auditors, out
        of the series the broker and `strongroom audit verify --checkpoints` read)."""
        folder = self.path / f"superseded-{marker_seq:020d}"
        ensure_private_dir(folder)
        for seq in seqs:
            source = self._file(seq)
            if source.exists():
                os.replace(source, folder / source.name)
        fsync_directory(folder)
        fsync_directory(self.path)
        return folder

    def between(self, low: int, high: int | None) -> list[SignedCheckpoint]:
        """Checkpoints with low <= seq <= high (no upper bound when high is None)."""
        out = []
        for name in self._names():
            seq = int(name[len("checkpoint-") : -len(".json")])
            if seq >= low and (high is None or seq <= high):
                out.append(self._read(name))
        return out
