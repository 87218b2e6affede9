"""What every reader framer shares: the framer interface and garbage accounting, and
the scan loop of the binary protocols whose header announces the frame size.

A framer turns a byte stream into whole frames:

* ``feed(data)`` returns the whole frames completed by ``data`` and keeps the rest
  (at most one frame's worth of bytes, so the buffer is bounded by the protocol).
* ``flush()`` is for an idle line (a serial read timed out): a reader sends each frame
  in one burst, so an incomplete frame at idle is garbage. It drops it, rescans what is
  buffered for frames and empties the buffer.
* Bytes that are not part of a frame are discarded. ``discarded`` counts them for ever;
  ``drain_garbage()`` returns the runs of discarded bytes since the last call, for the
  ingest to store in ``dead_letter``. That log is bounded: at most ``GARBAGE_CHUNKS``
  runs of at most ``GARBAGE_CHUNK_BYTES`` each; beyond that the oldest runs and the
  tail of long runs are dropped (the counter stays exact). A run that straddles two
  ``feed`` calls may be reported as two runs.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

GARBAGE_CHUNKS = 64
GARBAGE_CHUNK_BYTES = 4096


class Framer(Protocol):
    """The interface of every reader framer (see the module docstring)."""

    @property
    def discarded(self) -> int: ...

    @property
    def pending(self) -> int: ...

    def feed(self, data: bytes) -> list[bytes]: ...

    def flush(self) -> list[bytes]: ...

    def drain_garbage(self) -> list[bytes]: ...


class GarbageLog:
    """Counts discarded bytes and keeps a bounded log of the runs."""

    def __init__(self) -> None:
        self.discarded = 0
        self._runs: deque[bytes] = deque(maxlen=GARBAGE_CHUNKS)

    def add(self, run: bytes | bytearray) -> None:
        if run:
            self.discarded += len(run)
            self._runs.append(bytes(run[:GARBAGE_CHUNK_BYTES]))

    def drain(self) -> list[bytes]:
        runs = list(self._runs)
        self._runs.clear()
        return runs


class BufferedFramer:
    """The buffer and garbage accounting every framer has; subclasses add ``feed``/``flush``."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._garbage = GarbageLog()

    @property
    def discarded(self) -> int:
        return self._garbage.discarded

    @property
    def pending(self) -> int:
        return len(self._buf)

    def drain_garbage(self) -> list[bytes]:
        return self._garbage.drain()


class SizedFrameScanner(BufferedFramer):
    """Scan loop for frames whose size the header gives and a CRC confirms.

    Subclasses implement :meth:`frame_size`. Where it says "no", one byte is dropped and
    the scan goes on from the next; where it says "not known yet", the framer waits for
    more bytes. Decisions are taken only on complete candidates, so the frames found do
    not depend on how the stream was split into ``feed`` calls.
    """

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        return self._scan(idle=False)

    def flush(self) -> list[bytes]:
        return self._scan(idle=True)

    def frame_size(self, buf: bytearray, pos: int) -> int:
        """Size of the valid frame that starts at ``buf[pos]``; 0 if more bytes are
        needed to tell; -1 if no frame starts there."""
        raise NotImplementedError

    def first_candidate(self, buf: bytearray, pos: int) -> int:
        """Where the next frame could start, at or after ``pos`` (-1: nowhere)."""
        return pos

    def _scan(self, *, idle: bool) -> list[bytes]:
        buf, frames = self._buf, []
        pos = junk = 0
        while pos < len(buf):
            start = self.first_candidate(buf, pos)
            if start < 0:
                pos = len(buf)
                break
            pos = start
            size = self.frame_size(buf, pos)
            if size == 0 and not idle:
                break
            if size <= 0:
                pos += 1
                continue
            self._garbage.add(buf[junk:pos])
            frames.append(bytes(buf[pos : pos + size]))
            pos = junk = pos + size
        self._garbage.add(buf[junk:pos])
        del buf[:pos]
        return frames
