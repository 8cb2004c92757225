"""Decompressing a whole gzip, zlib or bzip2 stream in bounded memory, chunk by chunk.

The decoded bytes go to a caller's sink (a checksum, a counter of bad values) and are
never held whole: a damaged or truncated stream is found without decoding the image
a second time into memory.
"""

from __future__ import annotations

import bz2
import zlib
from typing import Any, BinaryIO, Callable

__all__ = ["CHUNK", "GZIP_MAGIC", "inflate"]

CHUNK, GZIP_MAGIC = 1 << 20, b"\x1f\x8b"


def inflate(f: BinaryIO, compression: str, sink: Callable[[bytes], None]) -> bool:
    """Feed the decoded bytes of the compressed members read from ``f`` to ``sink``; whether the last member ended.

    Args:
        f: A binary file positioned at the start of the stream.
        compression: ``"gzip"``, ``"zlib"`` or ``"bzip2"``.
        sink: Called with each decoded piece (at most :data:`CHUNK` bytes), in order.

    Raises:
        zlib.error, OSError, EOFError, ValueError: A corrupt stream.
    """
    new = bz2.BZ2Decompressor if compression == "bzip2" else (lambda: zlib.decompressobj(47))  # 47: gzip or zlib
    decoder, pending = new(), b""
    while True:
        chunk, pending = pending or f.read(CHUNK), b""
        if not chunk:
            return bool(decoder.eof)
        if decoder.eof:  # another gzip member follows (bgzip, concatenated files), or trailing bytes
            if not chunk.startswith(GZIP_MAGIC):
                return True
            decoder = new()
        _drain(decoder, chunk, sink)
        if decoder.eof:
            pending = decoder.unused_data


def _drain(decoder: Any, chunk: bytes, sink: Callable[[bytes], None]) -> None:
    """Feed one chunk, holding at most one chunk's worth of output at a time."""
    sink(decoder.decompress(chunk, CHUNK))
    if isinstance(decoder, bz2.BZ2Decompressor):
        while not decoder.eof and not decoder.needs_input:
            sink(decoder.decompress(b"", CHUNK))
        return
    while decoder.unconsumed_tail and not decoder.eof:
        sink(decoder.decompress(decoder.unconsumed_tail, CHUNK))
