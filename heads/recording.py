"""Recordings of live head streams: the DESIGN.md §4 JSON-lines format, written and read.

One event per line, in arrival order, optionally gzip-compressed when the path ends in ``.gz``::

    {"t": 0.0131, "client": "a", "head":  { ...header object exactly as received... }}
    {"t": 0.0140, "client": "a", "block": { ...header fetched by backfill... }}
    {"t": 3.2000, "client": "b", "event": "disconnected"}

``t`` is seconds since the recording started, read from an injected clock. The writer flushes
at least every ``flush_interval`` seconds of recording time (and on every connection event), so a
recorder killed with ``kill -9`` leaves a file whose every flushed line reads back; the reader
tolerates the truncated last line (and the missing gzip trailer) such a kill leaves.

The reader streams: memory stays bounded by one line, not the file, and it keeps up with replay
at hundreds of thousands of heads per second (one ``orjson.loads`` per line, nothing else).
"""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import orjson

from heads.errors import RecordingError

__all__ = [
    "RecordedLine",
    "Recorder",
    "RecordingError",
    "iter_recording",
]

Kind = Literal["head", "block", "event"]

_NEWLINE = b"\n"
_READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class RecordedLine:
    """One line of a recording: ``header`` for ``head``/``block`` lines, ``event`` otherwise."""

    t: float
    client: str
    kind: Kind
    header: dict[str, Any] | None
    event: str | None


class Recorder:
    """Append §4 lines to ``path`` (gzip when it ends in ``.gz``).

    Synchronous and cheap: one ``orjson.dumps`` and one buffered write per line. ``clock`` is a
    monotonic seconds source (``time.monotonic`` unless a test injects one); ``t`` is measured
    from the moment the recorder was opened.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        flush_interval: float = 0.5,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._start = clock()
        self._flush_interval = flush_interval
        self._last_flush = self._start
        self._gzip = self.path.suffix == ".gz"
        self._raw: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._gz: gzip.GzipFile | None = None
        if self._gzip:
            self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6, mtime=0)
        out: Any = self._raw if self._gz is None else self._gz  # GzipFile is not an IO[bytes]
        self._out: IO[bytes] = out
        self.heads = 0
        self.blocks = 0
        self.events = 0
        self.closed = False

    def _write(self, record: dict[str, Any], now: float) -> None:
        self._out.write(orjson.dumps(record) + _NEWLINE)
        if now - self._last_flush >= self._flush_interval:
            self.flush(now)

    def _t(self, now: float) -> float:
        return round(now - self._start, 6)

    def head(self, client: str, header: dict[str, Any]) -> None:
        """A newHeads announcement, exactly as received."""
        now = self._clock()
        self.heads += 1
        self._write({"t": self._t(now), "client": client, "head": header}, now)

    def block(self, client: str, header: dict[str, Any]) -> None:
        """A header fetched by backfill (data only: replay feeds it to ``on_block``)."""
        now = self._clock()
        self.blocks += 1
        self._write({"t": self._t(now), "client": client, "block": header}, now)

    def event(self, client: str, event: str) -> None:
        """A connection event (``connected`` / ``disconnected``); flushed at once."""
        now = self._clock()
        self.events += 1
        self._out.write(orjson.dumps({"t": self._t(now), "client": client, "event": event}))
        self._out.write(_NEWLINE)
        self.flush(now)

    def flush(self, now: float | None = None) -> None:
        """Push everything written so far to the OS (a gzip sync point for ``.gz``)."""
        if self.closed:
            return
        self._last_flush = self._clock() if now is None else now
        if self._gz is not None:
            # Z_SYNC_FLUSH ends the deflate block on a byte boundary: everything up to here
            # decompresses even if the process dies before the gzip trailer is written.
            self._gz.flush(zlib.Z_SYNC_FLUSH)
        self._raw.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        if self._gz is not None:
            self._gz.close()
        self._raw.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _raw_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(_READ_CHUNK):
        yield chunk


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress gzip members as they stream by, at most ``_READ_CHUNK`` bytes at a time.

    zlib directly rather than ``gzip.GzipFile``: a file cut short by a kill (no trailer, maybe
    half a deflate block) yields everything that was synced, where ``GzipFile`` raises
    ``EOFError`` and drops the data of the read that hit the end.
    """
    inflater = zlib.decompressobj(wbits=31)
    for chunk in chunks:
        data = chunk
        while data:
            try:
                out = inflater.decompress(data, _READ_CHUNK)
            except zlib.error:  # a torn tail: what came before it has been yielded
                return
            if out:
                yield out
            if inflater.eof:
                data = inflater.unused_data  # concatenated members (an appended recording)
                inflater = zlib.decompressobj(wbits=31)
            else:
                data = inflater.unconsumed_tail  # output was capped: memory stays bounded
    try:
        tail = inflater.flush()
    except zlib.error:
        return
    if tail:
        yield tail


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The file's content in large pieces, decompressed when it starts with the gzip magic."""
    magic = stream.read(2)
    stream.seek(0)
    chunks = _raw_chunks(stream)
    return _gunzip(chunks) if magic == b"\x1f\x8b" else chunks


def iter_line_batches(path: str | Path) -> Iterator[list[bytes]]:
    """The file's lines (without newlines), in batches as they decompress: plain or gzip.

    The last batch ends with the final line even when it has no newline (a killed recorder's
    torn tail); callers decide what to do with a line that is not valid JSON.
    """
    with open(path, "rb") as stream:
        rest = b""
        for chunk in _chunks(stream):
            lines = (rest + chunk if rest else chunk).split(_NEWLINE)
            rest = lines.pop()
            yield lines
        if rest:
            yield [rest]


def iter_recording(path: str | Path) -> Iterator[RecordedLine]:
    """Stream the lines of a §4 recording (plain or gzip), in file order.

    Blank lines are skipped. A truncated last line (no newline, not valid JSON: a recorder that
    was killed) ends the stream quietly; any other bad line raises ``RecordingError``.
    """
    path = Path(path)
    number = 0
    batches = iter_line_batches(path)
    batch = next(batches, None)
    while batch is not None:
        following = next(batches, None)
        # Only the file's very last line may be torn; it is the last one of the last batch.
        yield from _parse_lines(batch, path, number, last_complete=following is not None)
        number += len(batch)
        batch = following


def _parse_lines(
    lines: list[bytes], path: Path, number: int, last_complete: bool = True
) -> Iterator[RecordedLine]:
    loads = orjson.loads
    make = RecordedLine
    for line in lines:
        number += 1
        try:
            record = loads(line)
        except orjson.JSONDecodeError:
            if not line or line.isspace():
                continue
            if not last_complete and line is lines[-1]:
                return  # the torn last line of a killed recorder
            raise RecordingError(str(path), number, "not valid JSON") from None
        try:
            header = record.get("head")
            if header is not None:
                yield make(record["t"], record["client"], "head", header, None)
                continue
            header = record.get("block")
            if header is not None:
                yield make(record["t"], record["client"], "block", header, None)
                continue
            yield make(record["t"], record["client"], "event", None, record["event"])
        except (KeyError, TypeError, AttributeError):
            raise RecordingError(
                str(path), number, "expected t, client and one of head/block/event"
            ) from None
