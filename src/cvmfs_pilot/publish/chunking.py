"""Content-defined chunking of large files with the xor32 detector of CernVM-FS (format reference §6).

The rolling value after byte ``i`` is ``x = ((x << 1) ^ byte) & 0xFFFFFFFF``; it depends only on bytes
``i-31 .. i``. A chunk starting at ``s`` is cut at the first ``i`` in ``[s+min, s+max)`` whose value passes the
test below (byte ``i`` starts the next chunk), else hard-cut at ``s+max``; the tail of the data is the last chunk.

Because the value depends on a fixed window, the test is evaluated for every position at once with numpy, and only
the walk from chunk start to chunk start is sequential.

Callers apply CernVM-FS's rules around the chunker: a file of at most ``minimum`` bytes is not chunked at all, and
a file that comes out as a single piece is stored as a normal, unchunked file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

np = None  # numpy, imported by the first chunking call: a publish that reads no file never needs it

MiB = 1 << 20
DEFAULT_MINIMUM = 4 * MiB
DEFAULT_AVERAGE = 8 * MiB
DEFAULT_MAXIMUM = 16 * MiB
BLOCK_SIZE = 16 * MiB  # bytes read per step by iter_chunks

_WINDOW = 32  # bytes that make up one rolling value
_MAGIC = 0x7FFFFFFF
_SPAN = 32 * 1024  # positions tested per vectorised step: the work arrays stay in the CPU cache


@dataclass(frozen=True)
class ChunkSizes:
    """Minimum, average and maximum chunk size in bytes, as the ``CVMFS_*_CHUNK_SIZE`` settings."""

    minimum: int = DEFAULT_MINIMUM
    average: int = DEFAULT_AVERAGE
    maximum: int = DEFAULT_MAXIMUM

    def __post_init__(self):
        if not _WINDOW <= self.minimum < self.average < self.maximum:
            raise ValueError(
                f"chunk sizes must satisfy {_WINDOW} <= minimum < average < maximum; "
                f"got minimum={self.minimum}, average={self.average}, maximum={self.maximum}"
            )


def cut_points(data: bytes | memoryview, sizes: ChunkSizes) -> list[int]:
    """Offsets where a new chunk starts, in order; 0 is not included, so ``[]`` means a single piece (always the
    case for data of at most ``sizes.minimum`` bytes)."""
    _import_numpy()
    view = np.frombuffer(data, np.uint8)
    candidates = _candidates(view, 0, _threshold(sizes))
    return _next_cuts(0, candidates, len(view), sizes)


def iter_chunks(fileobj: BinaryIO, sizes: ChunkSizes, block: int = BLOCK_SIZE) -> Iterator[tuple[int, bytes]]:
    """``(offset, data)`` of every chunk of a binary file, read ``block`` bytes at a time; the same chunks as
    :func:`cut_points` on the whole content. Holds about ``sizes.maximum + 2 * block`` bytes at most. An empty
    file has no chunks."""
    if block < 1:
        raise ValueError(f"block must be at least 1 byte; got {block}")
    _import_numpy()
    threshold = _threshold(sizes)
    start = 0  # offset of the chunk being collected
    pending = bytearray()  # the data from start up to what has been read
    history = b""  # the last bytes read, the rolling window's context for the next block
    candidates = np.empty(0, np.int64)  # positions from start on that pass the cut test
    while data := fileobj.read(block):
        window = np.frombuffer(history + data, np.uint8)
        end = start + len(pending) + len(data)
        found = _candidates(window, len(history), threshold) + (end - len(window))
        candidates = np.concatenate((candidates, found))
        history = window[-(_WINDOW - 1):].tobytes()
        del window  # a copy of the block: free it before pending grows
        pending += data
        for cut in _next_cuts(start, candidates, end, sizes):
            yield start, bytes(memoryview(pending)[: cut - start])
            del pending[: cut - start]
            start = cut
        candidates = candidates[np.searchsorted(candidates, start):]
    if pending:
        yield start, bytes(pending)


def _import_numpy():
    global np
    if np is None:
        import numpy

        np = numpy


def _threshold(sizes: ChunkSizes) -> np.int32:
    return np.int32(0xFFFFFFFF // sizes.average)


def _next_cuts(start: int, candidates: np.ndarray, end: int, sizes: ChunkSizes) -> list[int]:
    """The cuts that follow a chunk start, given the sorted ``candidates`` among the positions below ``end``.

    Stops at the first chunk whose end is not yet known: it may still reach past ``end`` (more data to come)
    or be the tail of the data."""
    cuts = []
    while True:
        earliest, latest = start + sizes.minimum, start + sizes.maximum
        k = np.searchsorted(candidates, earliest)
        if k < len(candidates) and candidates[k] < latest:
            start = int(candidates[k])
        elif latest < end:
            start = latest
        else:
            return cuts
        cuts.append(start)


def _candidates(data: np.ndarray, first: int, threshold: np.int32) -> np.ndarray:
    """Positions ``i >= first`` of ``data`` whose rolling value passes the cut test; bytes before ``data[0]``
    count as zero, so only positions from 31 on are exact."""
    found = [np.empty(0, np.int64)]
    for lo in range(first, len(data), _SPAN):
        hi = min(lo + _SPAN, len(data))
        context = max(lo - (_WINDOW - 1), 0)
        values = _rolling_values(data[context:hi])[lo - context:]
        found.append(np.flatnonzero(_passes(values, threshold)) + lo)
    return np.concatenate(found)


def _rolling_values(data: np.ndarray) -> np.ndarray:
    """The rolling value after each byte: ``x[i] = XOR over k < 32 of (data[i-k] << k)``, truncated to 32 bits.

    Built by doubling the window: a value over ``w`` bytes XOR the value ``w`` positions earlier shifted left by
    ``w`` is the value over ``2w`` bytes. Windows up to 8 bytes fit in 16 bits."""
    x = data.astype(np.uint16)
    for width in (1, 2, 4):
        x[width:] ^= x[:-width] << width
    x = x.astype(np.uint32)
    for width in (8, 16):
        x[width:] ^= x[:-width] << width
    return x


def _passes(values: np.ndarray, threshold: np.int32) -> np.ndarray:
    """The cut test ``abs(int32(x) - MAGIC) < threshold`` in C's 32-bit signed arithmetic, wraparound included:
    ``x = 0xFFFFFFFF`` gives ``abs(INT_MIN)``, which stays ``INT_MIN`` and so passes. Overwrites ``values``."""
    values -= np.uint32(_MAGIC)
    distance = values.view(np.int32)
    np.abs(distance, out=distance)
    return distance < threshold
