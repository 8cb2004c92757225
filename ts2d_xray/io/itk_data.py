"""The pixel data of NIfTI, NRRD and MetaImage files: where it is stored, and checks that it is all there.

SimpleITK reads a truncated or corrupted file without complaint where it can (a short
``.nii``, any damaged ``.nii.gz``, a bit flip in a compressed NRRD or MHA): the missing
voxels come out as zeros, a normal-looking image.  The checks here refuse such files:

* before any pixel is read (:func:`check_declared`): the decoded size against a limit,
  and the declared size against what the file can hold (its length; for compressed
  data, deflate's largest ratio of about 1032:1), so a small file declaring a huge
  image never allocates it;
* after SimpleITK has read the pixels (:func:`check_decoded`): for compressed data, the
  stream's own checksum (gzip CRC-32, zlib Adler-32) is compared with the checksum of
  the decoded buffer (a scaled NIfTI's values mapped back to the stored ones), which
  costs a fraction of the decompression.  When the two cannot be compared (byte-swapped
  data, data followed by more bytes) or differ, the compressed stream is decompressed
  once more, in bounded memory (:mod:`ts2d_xray.io.inflate`), and decides.

A sound, ordinarily written file is decompressed once, by SimpleITK.  Uncompressed
pixel data carries no checksum: a flipped bit there is simply a different value.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from ts2d_xray.errors import InputError
from ts2d_xray.image import non_finite
from ts2d_xray.io.inflate import CHUNK, GZIP_MAGIC, inflate

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["MAX_IMAGE_BYTES", "StoredData", "check_decoded", "check_declared", "check_limit", "check_stored",
           "decoded_bytes", "stored_data"]

#: Largest image SimpleITK is asked to decode, in bytes of its pixel type: a CT of
#: 2^31 voxels as float32 (e.g. 512 x 512 x 8192 slices).
MAX_IMAGE_BYTES = 2**33
# Deflate's largest compression ratio is 1032:1 (runs of one byte); with room for headers.
_DEFLATE_RATIO = 1032
_SLACK_BYTES = 1 << 16
_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                1536: 16, 1792: 16, 2048: 32, 2304: 4}
_NIFTI_VALUES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}


@dataclass(frozen=True)
class StoredData:
    """Where a file keeps its pixel data, as its header declares.

    Attributes:
        file: The file holding the data (the image file, or a detached data file).
        start: Byte offset in ``file`` where the (possibly compressed) data stream starts.
        skip: Bytes of the decoded stream before the pixel data (a ``.nii.gz`` holds its
            header inside the compressed stream).
        nbytes: Declared size of the pixel data as stored, in bytes.
        compression: ``"raw"``, ``"gzip"``, ``"zlib"`` or ``"bzip2"``.
        floats: The numpy dtype of stored floating-point values whose NaN and
            infinities SimpleITK hides (NIfTI: it reads them as 0), else None.
        values: The numpy dtype (with byte order) of the stored values, where known.
        scale: ``(slope, intercept)`` a NIfTI header applies to the stored values
            (SimpleITK returns the scaled values), else None.
    """

    file: Path
    start: int
    skip: int
    nbytes: int
    compression: str
    floats: str | None = None
    values: str | None = None
    scale: tuple[float, float] | None = None


def stored_data(path: Path) -> StoredData | None:
    """The stored data layout of a NIfTI, NRRD or MetaImage file, or None when it cannot be told.

    None for layouts these checks do not follow (ASCII/hex encodings, lists of data
    files, odd byte skips): SimpleITK's own checks are then all there is.

    Raises:
        InputError: A header whose fields make no sense (a negative size, an offset
            past the end of the file, an unknown data type).
    """
    name = path.name.lower()
    with open(path, "rb") as f:
        head = f.read(CHUNK)
    if name.endswith((".nii", ".nii.gz")):
        return _nifti(path, head)
    if name.endswith((".nrrd", ".nhdr")) and head.startswith(b"NRRD"):
        return _nrrd(path, head)
    if name.endswith((".mha", ".mhd")):
        return _meta(path, head)
    return None


def _nifti(path: Path, head: bytes) -> StoredData | None:
    gz = head.startswith(GZIP_MAGIC)
    if gz:
        head = _gunzip_head(path, head)
    if len(head) < 348:
        raise InputError(path, f"truncated NIfTI header ({len(head)} bytes, at least 348 expected)")
    for order in "<>":
        size = struct.unpack_from(order + "i", head, 0)[0]
        if size in (348, 540):
            break
    else:
        raise InputError(path, "not a NIfTI file (header size is neither 348 nor 540)")
    if size == 348:
        dims = struct.unpack_from(order + "8h", head, 40)
        datatype, offset = struct.unpack_from(order + "h", head, 70)[0], struct.unpack_from(order + "f", head, 108)[0]
    else:
        dims = struct.unpack_from(order + "8q", head, 16)
        datatype, offset = struct.unpack_from(order + "h", head, 12)[0], struct.unpack_from(order + "q", head, 168)[0]
    if size == 348 and head[344:347] != b"n+1":
        return None  # an Analyze header or a .hdr/.img pair: ITK finds the data file itself
    if datatype not in _NIFTI_BYTES:
        raise InputError(path, f"unknown NIfTI datatype code {datatype}")
    if not 1 <= dims[0] <= 7 or min(dims[1:dims[0] + 1]) < 0 or not np.isfinite(offset):
        raise InputError(path, f"invalid NIfTI header (dim {list(dims)}, vox_offset {offset})")
    count = int(np.prod([max(int(d), 1) for d in dims[1:dims[0] + 1]], dtype=object))  # the NIfTI library reads 0 as 1
    offset = max(int(offset), size)  # as the NIfTI library reads a single file
    floats = {16: order + "f4", 64: order + "f8"}.get(datatype)
    slope, inter = struct.unpack_from(order + ("2f" if size == 348 else "2d"), head, 112 if size == 348 else 176)
    scaled = np.isfinite(slope) and np.isfinite(inter) and slope != 0 and (slope, inter) != (1, 0)
    return StoredData(path, 0 if gz else offset, offset if gz else 0, count * _NIFTI_BYTES[datatype],
                      "gzip" if gz else "raw", floats, _NIFTI_VALUES.get(datatype) and order + _NIFTI_VALUES[datatype],
                      (float(slope), float(inter)) if scaled else None)


def _gunzip_head(path: Path, head: bytes) -> bytes:
    """The first bytes (up to 1 MiB) of a gzip stream, decompressed: a ``.nii.gz`` header."""
    try:
        return zlib.decompressobj(47).decompress(head, CHUNK)
    except zlib.error as exc:
        raise InputError(path, f"corrupt gzip stream at its start ({exc})") from None


def _nrrd(path: Path, head: bytes) -> StoredData | None:
    end = head.find(b"\n\n")
    if end < 0:
        return None  # a header over 1 MiB, or no data: left to ITK
    fields = {}
    for line in head[:end].decode("latin-1").splitlines()[1:]:
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.lstrip("=").strip()
    encoding = {"gz": "gzip", "bz2": "bzip2", "raw": "raw", "gzip": "gzip", "bzip2": "bzip2"}.get(
        fields.get("encoding", "").lower())
    skip = int(fields.get("byte skip", "0") or 0) if re.fullmatch(r"-?\d+", fields.get("byte skip", "0")) else -1
    if encoding is None or skip < 0 or "line skip" in fields and fields["line skip"] != "0":
        return None
    itemsize = _nrrd_itemsize(fields.get("type", ""))
    sizes = fields.get("sizes", "").split()
    if itemsize is None or not sizes or not all(re.fullmatch(r"\d+", s) for s in sizes):
        return None  # SimpleITK judges a header these checks do not understand
    nbytes = int(np.prod([int(s) for s in sizes], dtype=object)) * itemsize
    detached = fields.get("data file") or fields.get("datafile")
    if detached and (" " in detached or "%" in detached or detached.upper().startswith("LIST")):
        return None
    file, start = (path.parent / detached, 0) if detached else (path, end + 2)
    raw = encoding == "raw"  # a byte skip counts in the file when raw, in the decoded data otherwise
    return StoredData(file, start + (skip if raw else 0), 0 if raw else skip, nbytes, encoding)


def _nrrd_itemsize(name: str) -> int | None:
    """Bytes per value of a NRRD ``type`` (any of its spellings), None for an unknown one."""
    name = name.lower().replace("unsigned", "").replace("signed", "").replace("_t", "").strip()
    return {"char": 1, "int8": 1, "short": 2, "int16": 2, "int": 4, "int32": 4, "long long": 8, "longlong": 8,
            "int64": 8, "float": 4, "double": 8}.get(name.replace(" int", "").lstrip("u"))


def _meta(path: Path, head: bytes) -> StoredData | None:
    match = re.search(rb"ElementDataFile\s*=\s*([^\r\n]*)\r?\n?", head)
    if match is None:
        return None
    fields = {}
    for line in head[:match.start()].decode("latin-1").splitlines():
        key, _, value = line.partition("=")
        fields[key.strip()] = value.strip()
    itemsize = _META_BYTES.get(fields.get("ElementType", ""))
    dims = fields.get("DimSize", "").split()
    if itemsize is None or not dims or not all(re.fullmatch(r"\d+", d) for d in dims) or \
            fields.get("HeaderSize", "0") != "0":
        return None  # SimpleITK judges a header these checks do not understand
    channels = int(fields.get("ElementNumberOfChannels", "1") or 1)
    nbytes = int(np.prod([int(d) for d in dims], dtype=object)) * itemsize * channels
    compression = "zlib" if fields.get("CompressedData", "False").lower() == "true" else "raw"
    target = match.group(1).decode("latin-1").strip()
    if target.upper() == "LOCAL":
        return StoredData(path, match.end(), 0, nbytes, compression)
    if " " in target or "%" in target or target.upper() == "LIST":
        return None
    return StoredData(path.parent / target, 0, 0, nbytes, compression)


_META_BYTES = {f"MET_{u}{t}": n for u in ("", "U") for t, n in
               (("CHAR", 1), ("SHORT", 2), ("INT", 4), ("LONG", 4), ("LONG_LONG", 8))} | {"MET_FLOAT": 4, "MET_DOUBLE": 8}


def check_limit(path: Path, size: tuple[int, ...], nbytes: int, max_bytes: int = MAX_IMAGE_BYTES) -> None:
    """Refuse an image of ``nbytes`` bytes once decoded when that is above ``max_bytes``."""
    if nbytes > max_bytes:
        raise InputError(path, f"image of {' x '.join(map(str, size))} voxels would take {nbytes / 2**30:,.1f} GiB in "
                               f"memory, above the limit of {max_bytes / 2**30:g} GiB; refusing it before reading")


def decoded_bytes(reader: sitk.ImageFileReader) -> int:
    """Bytes of the image SimpleITK will allocate, from the header it has read."""
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = re.search(r"(\d+)-bit", name)
    itemsize = (int(bits.group(1)) // 8 if bits else 8) * (2 if "complex" in name else 1)
    count = int(np.prod([int(s) for s in reader.GetSize()], dtype=object))
    return count * int(reader.GetNumberOfComponents()) * itemsize


def check_declared(path: Path, reader: sitk.ImageFileReader, max_bytes: int = MAX_IMAGE_BYTES) -> StoredData | None:
    """Refuse, before any pixel is read, an image too large to decode or larger than its file can hold.

    Args:
        path: The image file.
        reader: A SimpleITK reader that has read the header of ``path``.
        max_bytes: Largest image to accept, in bytes once decoded.

    Returns:
        The stored data layout (for :func:`check_decoded`), or None when unknown.

    Raises:
        InputError: Above ``max_bytes`` once decoded, a missing data file, or pixel data
            that the file is too short to hold (truncated, or a header-only size bomb).
    """
    check_limit(path, reader.GetSize(), decoded_bytes(reader), max_bytes)
    stored = stored_data(path)
    if stored is not None:
        _check_length(path, stored)
        if stored.compression == "gzip" and _gzip_size(stored) != (stored.skip + stored.nbytes) % 2**32:
            # The trailer does not give the declared size: truncated, unless the stream is
            # made of several members; decide in bounded memory before allocating the image.
            _scan_stream(path, stored)
    return stored


def check_stored(path: Path) -> None:
    """Refuse a NIfTI/NRRD/MetaImage file whose pixel data is short, damaged, NaN or infinite, reading it to check.

    For readers other than SimpleITK (nibabel, slicerio), which stop reading where the
    declared data ends and so never see a damaged checksum.  A full decompression: use
    :func:`check_declared` and :func:`check_decoded` around a SimpleITK read instead.

    Raises:
        InputError: Naming the file.
    """
    stored = stored_data(path)
    if stored is None:
        return
    _check_length(path, stored)
    if stored.compression != "raw":
        _scan_stream(path, stored)
    elif stored.floats:
        _check_raw_floats(path, stored)


def _check_length(path: Path, stored: StoredData) -> None:
    """Refuse pixel data longer than its file holds (raw) or than its compressed bytes can hold."""
    if not stored.file.is_file():
        raise InputError(stored.file, f"pixel data file of {path.name} not found")
    held = stored.file.stat().st_size - stored.start
    if stored.compression == "raw" and held < stored.nbytes:
        raise InputError(path, f"truncated file: the header declares {stored.nbytes:,} bytes of pixel data, "
                               f"the file holds {max(held, 0):,}")
    if stored.compression in ("gzip", "zlib") and stored.skip + stored.nbytes > _DEFLATE_RATIO * held + _SLACK_BYTES:
        raise InputError(path, f"truncated or corrupt file: the header declares {stored.nbytes:,} bytes of pixel "
                               f"data, more than {held:,} compressed bytes can hold")


def _gzip_size(stored: StoredData) -> int:
    """The ISIZE field of a gzip trailer: the decoded size of the last member, modulo 2^32."""
    with open(stored.file, "rb") as f:
        f.seek(-4, 2)
        return struct.unpack("<I", f.read(4))[0]


def check_decoded(path: Path, stored: StoredData | None, image: sitk.Image) -> None:
    """Refuse a compressed file whose stream is damaged, after SimpleITK has read its pixels.

    Fast path: the checksum of the decoded buffer (with a ``.nii.gz`` header's bytes)
    equals the stream's trailer.  Otherwise the stream itself is checked.

    Raises:
        InputError: A truncated or corrupted compressed stream, naming the file.
    """
    if stored is None:
        return
    if stored.compression == "raw":
        if stored.floats:
            _check_raw_floats(path, stored)
        return
    if stored.compression in ("gzip", "zlib") and _trailer_matches(stored, image):
        return  # the buffer holds the stored bytes: the caller's finite check sees every value
    _scan_stream(path, stored)


def _trailer_matches(stored: StoredData, image: sitk.Image) -> bool:
    import SimpleITK as sitk

    buffer = sitk.GetArrayViewFromImage(image)
    pieces = _stored_bytes(buffer.reshape(-1), stored) if buffer.flags.c_contiguous else None
    if pieces is None:
        return False  # another layout: not the stored bytes
    with open(stored.file, "rb") as f:
        f.seek(-8, 2)
        trailer = f.read(8)
        if stored.compression == "zlib":
            adler = 1
            for piece in pieces:
                adler = zlib.adler32(piece, adler)
            return len(trailer) == 8 and adler == struct.unpack(">I", trailer[4:])[0]
        f.seek(stored.start)
        prefix = zlib.decompressobj(47).decompress(f.read(CHUNK), stored.skip) if stored.skip else b""  # 0: no limit
    crc = zlib.crc32(prefix)
    for piece in pieces:
        crc = zlib.crc32(piece, crc)
    expected, size = struct.unpack("<II", trailer)
    return len(prefix) == stored.skip and size == (stored.skip + stored.nbytes) % 2**32 and crc == expected


def _stored_bytes(buffer: np.ndarray, stored: StoredData) -> Iterator[memoryview] | None:
    """The stored bytes of a decoded buffer, piece by piece: the buffer, or a NIfTI's scaled values
    mapped back (where that is not what was stored, the checksum differs and the stream decides)."""
    if buffer.nbytes == stored.nbytes:
        return iter([memoryview(buffer.view(np.uint8))])
    dtype = np.dtype(stored.values) if stored.values else None
    if stored.scale is None or dtype is None or buffer.size * dtype.itemsize != stored.nbytes:
        return None
    slope, inter = stored.scale
    # float32 holds a 16-bit integer plus an integer intercept exactly: one subtraction, no float64 pass
    if slope == 1 and inter == int(inter) and dtype.kind in "iu" and dtype.itemsize <= 2 and buffer.dtype == "f4":
        return (memoryview((buffer[i:i + CHUNK] - np.float32(inter)).astype(dtype).view(np.uint8))
                for i in range(0, buffer.size, CHUNK))
    unscaled = ((buffer[i:i + CHUNK].astype(np.float64) - inter) / slope for i in range(0, buffer.size, CHUNK))
    return (memoryview((np.rint(v) if dtype.kind in "iu" else v).astype(dtype).view(np.uint8)) for v in unscaled)


def _check_raw_floats(path: Path, stored: StoredData) -> None:
    """Refuse uncompressed stored floats holding NaN or infinities (read in place, from the page cache)."""
    values = np.memmap(stored.file, dtype=stored.floats, mode="r", offset=stored.start,
                       shape=(stored.nbytes // np.dtype(stored.floats).itemsize,))
    if values.size and not (np.isfinite(values.min()) and np.isfinite(values.max())):
        raise non_finite(path, int(values.size - np.count_nonzero(np.isfinite(values))), values.size)


class _FloatCounter:
    """Counts NaN and infinite values of stored floats in a decoded stream fed chunk by chunk."""

    def __init__(self, stored: StoredData) -> None:
        self.lo, self.hi = stored.skip, stored.skip + stored.nbytes
        self.dtype = np.dtype(stored.floats) if stored.floats else None
        self.position, self.rest, self.bad = 0, b"", 0

    def feed(self, out: bytes) -> None:
        start, end = max(self.lo - self.position, 0), min(self.hi - self.position, len(out))
        self.position += len(out)
        if self.dtype is None or end <= start:
            return
        data = self.rest + out[start:end]
        whole = len(data) // self.dtype.itemsize * self.dtype.itemsize
        self.bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:whole], self.dtype))))
        self.rest = data[whole:]


def _scan_stream(path: Path, stored: StoredData) -> None:
    """Decompress the whole stream in bounded memory: refuse it if damaged or shorter than declared.

    Stored floats are checked on the way (NaN and infinities, which SimpleITK hides in NIfTI).
    """
    counter = _FloatCounter(stored)
    try:
        with open(stored.file, "rb") as f:
            f.seek(stored.start)
            complete = inflate(f, stored.compression, counter.feed)
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        raise InputError(path, f"corrupt compressed pixel data ({exc})") from None
    decoded, declared = counter.position, stored.skip + stored.nbytes
    if not complete:
        raise InputError(path, f"truncated file: the compressed pixel data ends early ({decoded:,} bytes decoded "
                               f"of {declared:,} declared)")
    if decoded < declared:
        raise InputError(path, f"truncated file: {decoded:,} bytes of data decoded, {declared:,} declared by the header")
    if counter.bad:
        raise non_finite(path, counter.bad, stored.nbytes // counter.dtype.itemsize)
