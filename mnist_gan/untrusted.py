"""Reading files a stranger may have made, in bounded time and memory.

Every reader in the package opens its input with `open_regular`, so a FIFO, a device, a socket or a directory is
refused at once instead of blocking a read forever. Before allocating anything, a reader checks what the file's
header declares against the file's size and against what a 28x28 data set can need (`check_inflation` for
compressed data). Loaded structures are checked for size and depth before anything walks or formats them
(`tree_leaves`), and error messages quote untrusted values only through `describe`.

Arrays (.npy, .npz) and safetensors files have their headers parsed and checked here, so callers can check the
declared shapes before any data is read.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import reprlib
import stat
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mnist_gan.errors import MnistGanError

# Data that inflates to no more than this is read whatever its compression ratio: 64 MiB is 80,000 uint8 images.
INFLATE_FREELY_BYTES = 64 * 2**20
# Beyond that, compressed data may inflate at most this much: real digits deflate 5x (uint8) to 20x (float64),
# while a decompression bomb is near-constant data that inflates 1,000x.
MAX_COMPRESSION_RATIO = 50
# Reads and conversions go in pieces this large, so a large array is never held twice.
CHUNK_BYTES = 16 * 2**20
# Text in a header or a config is a name, a number, a path (PATH_MAX is 4,096) or a small JSON config.
MAX_TEXT_CHARS = 65_536
# An array or tensor has at most this many dimensions; images have 4 at most.
MAX_DIMENSIONS = 8
# numpy's own default; a real .npy header is ~120 bytes.
MAX_NPY_HEADER_BYTES = 10_000
# A safetensors header lists each tensor and the metadata; a generator's is ~3 KB, a classifier's ~2 KB.
MAX_SAFETENSORS_HEADER_BYTES = 2**20
# Tensors in one safetensors file: a generator has ~20.
MAX_SAFETENSORS_TENSORS = 1000
SAFETENSORS_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                          "BOOL": 1}

_REPR = reprlib.Repr()
_REPR.maxstring = 60  # enough to recognise a value in an error message, never the whole of a large one
_REPR.maxother = 60


def describe(value: Any) -> str:
    """A one-line description of any value, computed in bounded time and space whatever the value holds."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, int):  # str() of a huge int is slow, and refused past 4,300 digits
        return repr(int(value)) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, (str, bytes)):
        text = _REPR.repr(value[: _REPR.maxstring + 1])
        return text if len(value) <= _REPR.maxstring else f"{text} ({len(value):,} characters)"
    kind = type(value).__name__
    shape = getattr(value, "shape", None)
    if kind in ("Tensor", "Parameter", "ndarray") and shape is not None:
        return f"a {kind} of shape {tuple(shape)}"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"a {kind} of {len(value)} items"
    return f"a {kind}"


def clip(text: str, limit: int = 300) -> str:
    """The first line of text, at most `limit` characters: for quoting an error from a library in ours."""
    lines = [line.strip() for line in str(text)[: 4 * limit].splitlines() if line.strip()]
    line = lines[0] if lines else "no detail"
    return line if len(line) <= limit else line[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------- files

def _kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def check_regular(path: str | Path, what: str) -> os.stat_result:
    """stat(path) (following links), or MnistGanError unless it is a regular file: never block on a FIFO."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MnistGanError(f"{path}: no such {what}") from None
    except OSError as error:
        raise MnistGanError(f"{path}: cannot read ({error.strerror or error})") from None
    if not stat.S_ISREG(info.st_mode):
        raise MnistGanError(f"{path}: {_kind(info.st_mode)}, not a regular file; refusing to read it")
    return info


@contextlib.contextmanager
def open_regular(path: str | Path, what: str, max_bytes: int) -> Iterator[tuple[BinaryIO, int]]:
    """Yield (binary file, size) for a regular file of at most max_bytes; anything else is MnistGanError.

    The file is checked before it is opened and again once open (a file swapped for a FIFO in between cannot
    block: it is opened with O_NONBLOCK, which regular files ignore).
    """
    check_regular(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise MnistGanError(f"{path}: cannot read ({error.strerror or error})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MnistGanError(f"{path}: {_kind(info.st_mode)}, not a regular file; refusing to read it")
        if info.st_size > max_bytes:
            raise MnistGanError(f"{path}: {info.st_size:,} bytes is more than a {what} can be "
                                f"(at most {max_bytes:,}); refusing to read it")
        yield handle, info.st_size


def read_exactly(stream: BinaryIO, count: int) -> bytes:
    """Up to count bytes from stream (fewer only at its end)."""
    parts, left = [], count
    while left > 0:
        part = stream.read(min(left, CHUNK_BYTES))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_into(stream: BinaryIO, array: np.ndarray) -> int:
    """Fill a contiguous array from stream in chunks; return the bytes read (fewer only at its end)."""
    buffer = memoryview(array.reshape(-1).view(np.uint8))
    done = 0
    while done < len(buffer):
        got = stream.readinto(buffer[done: done + CHUNK_BYTES])
        if not got:
            break
        done += got
    return done


def check_inflation(inflated: int, compressed: int, name: str) -> None:
    """Refuse compressed data that would inflate past INFLATE_FREELY_BYTES at more than MAX_COMPRESSION_RATIO."""
    if inflated > INFLATE_FREELY_BYTES and inflated > MAX_COMPRESSION_RATIO * max(compressed, 1):
        raise MnistGanError(f"{name}: {compressed:,} compressed bytes declare {inflated:,} bytes of data "
                            f"({inflated // max(compressed, 1):,}x; at most {MAX_COMPRESSION_RATIO}x is accepted "
                            f"past {INFLATE_FREELY_BYTES // 2**20} MiB): refusing a likely decompression bomb")


def check_zip(archive: zipfile.ZipFile, file_size: int, name: str, max_members: int, max_total: int) -> int:
    """Check a zip's central directory before any member is read; return the members' total inflated size.

    Bounds the member count, each member's compression ratio and the total, and refuses members that overlap
    (several entries inflating the same compressed bytes, the densest kind of zip bomb).
    """
    members = archive.infolist()
    if len(members) > max_members:
        raise MnistGanError(f"{name}: {len(members):,} members in the archive (at most {max_members:,})")
    inflated = compressed = 0
    for member in members:
        label = f"{name}:{describe(member.filename)}"
        if member.compress_type == zipfile.ZIP_STORED and member.file_size != member.compress_size:
            raise MnistGanError(f"{label}: damaged archive (a stored member with two sizes)")
        check_inflation(member.file_size, member.compress_size, label)
        inflated += member.file_size
        compressed += member.compress_size
    if compressed > file_size:
        raise MnistGanError(f"{name}: archive members overlap ({compressed:,} compressed bytes in a "
                            f"{file_size:,}-byte file): refusing a likely decompression bomb")
    if inflated > max_total:
        raise MnistGanError(f"{name}: archive declares {inflated:,} bytes of data (at most {max_total:,})")
    return inflated


def tree_leaves(value: Any, max_values: int, max_depth: int) -> list[Any]:
    """Every leaf of a loaded structure that is not a plain scalar (tensors, for instance).

    Raises ValueError saying what is wrong when the structure holds more than max_values values (shared parts
    counted once per reference, as any later walk visits them: a few KB of "billion laughs" nesting stops here
    after max_values steps), nests deeper than max_depth (cycles included), or holds text longer than
    MAX_TEXT_CHARS or integers wider than 64 bits.
    """
    leaves, pending, seen = [], [(value, 0)], 0
    while pending:
        item, depth = pending.pop()
        seen += 1
        if seen > max_values:
            raise ValueError(f"more than {max_values:,} values nested in it")
        if isinstance(item, (dict, list, tuple, set, frozenset)):
            if depth >= max_depth:
                raise ValueError(f"nested more than {max_depth} levels deep")
            if len(item) > max_values:
                raise ValueError(f"{describe(item)}, more than {max_values:,}")
            children = [part for pair in item.items() for part in pair] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, (str, bytes)) and len(item) > MAX_TEXT_CHARS:
            raise ValueError(f"text of {len(item):,} characters (at most {MAX_TEXT_CHARS:,})")
        elif isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 64:
            raise ValueError(f"{describe(item)}, wider than 64 bits")
        elif not (item is None or isinstance(item, (bool, int, float, str, bytes))):
            leaves.append(item)
    return leaves


def ascii_int(text: Any, low: int, high: int) -> int | None:
    """The integer written in ASCII digits in text, if it lies in [low, high]; else None."""
    if not (isinstance(text, str) and 0 < len(text) <= 20 and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if low <= value <= high else None


# --------------------------------------------------------------------------------------------- .npy and .npz

@dataclass
class StoredArray:
    """An array in an .npy file or .npz member: its header read and checked, its data not yet read."""

    name: str  # for messages, e.g. "data.npz:x_train"
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    open_data: Callable[[], BinaryIO]  # a stream positioned at the first data byte
    zip_member: bool  # read it to its end, so that zipfile checks its CRC

    def read(self, rows: int | None = None) -> np.ndarray:
        """The array, or its first `rows` rows; damaged data is MnistGanError."""
        total_rows = self.shape[0] if self.shape else 1
        rows = total_rows if rows is None or self.fortran_order or not self.shape else min(rows, total_rows)
        row_items = math.prod(self.shape[1:]) if self.shape else 1
        nbytes = rows * row_items * self.dtype.itemsize
        try:
            array = np.empty(rows * row_items, self.dtype)
            with self.open_data() as stream:
                if read_into(stream, array) < nbytes:
                    raise MnistGanError(f"{self.name}: truncated array data")
                if rows == total_rows and stream.read(1):
                    raise MnistGanError(f"{self.name}: data continues past the array its header declares")
                while self.zip_member and stream.read(CHUNK_BYTES):  # the CRC is checked at the member's end
                    pass
        except MnistGanError:
            raise
        except MemoryError:
            raise MnistGanError(f"{self.name}: {nbytes:,} bytes of array data do not fit in memory here") from None
        except Exception as error:  # zipfile.BadZipFile (CRC), zlib.error, EOFError, OSError: damaged data
            raise MnistGanError(f"{self.name}: damaged array data ({type(error).__name__}: "
                                f"{clip(error)})") from None
        shape = (rows, *self.shape[1:]) if self.shape else ()
        return array.reshape(shape, order="F" if self.fortran_order else "C")


def _npy_header(stream: BinaryIO, stored_bytes: int, name: str,
                what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, header length) of the .npy data at the start of stream, checked against the
    data size that follows and against the dtypes images and labels may have."""
    from numpy.lib import format as npy

    def refuse(reason: str) -> MnistGanError:
        return MnistGanError(f"{name}: not a readable {what} ({reason})")

    try:
        version = npy.read_magic(stream)
        readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran_order, dtype = readers[version](stream, max_header_size=MAX_NPY_HEADER_BYTES)
        header_bytes = stream.tell()
    except Exception as error:  # ValueError, SyntaxError, EOFError, zip errors: a damaged header
        raise refuse(f"{type(error).__name__}: {clip(error)}") from None
    if dtype.hasobject:
        raise refuse("it holds Python objects (dtype object), which are never loaded")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "uif" or dtype.itemsize > 8:
        raise refuse(f"dtype {describe(str(dtype))} is not a plain integer or float type")
    if len(shape) > MAX_DIMENSIONS:
        raise refuse(f"{len(shape)} dimensions (at most {MAX_DIMENSIONS})")
    declared = math.prod(shape) * dtype.itemsize
    if declared != stored_bytes - header_bytes:
        raise refuse(f"header declares shape {shape} of {dtype} ({declared:,} bytes) but "
                     f"{stored_bytes - header_bytes:,} bytes follow")
    return tuple(shape), fortran_order, dtype, header_bytes


@contextlib.contextmanager
def open_arrays(path: str | Path, what: str, max_bytes: int, max_inflated: int,
                max_members: int = 100) -> Iterator[dict[str, StoredArray]]:
    """Yield the arrays of an .npz (by name) or of an .npy file (named ""), headers checked, data unread.

    The file is at most max_bytes; an .npz's members inflate to at most max_inflated bytes in all, each within
    MAX_COMPRESSION_RATIO. Every failure is MnistGanError saying "{path}...: not a readable {what} (...)".
    """
    with open_regular(path, what, max_bytes) as (handle, size):
        magic = handle.read(6)
        handle.seek(0)
        if magic == b"\x93NUMPY":
            shape, fortran, dtype, header = _npy_header(handle, size, str(path), what)

            def from_start():
                handle.seek(header)
                return contextlib.nullcontext(handle)

            yield {"": StoredArray(str(path), shape, dtype, fortran, from_start, False)}
            return
        try:
            archive = zipfile.ZipFile(handle)
        except Exception as error:  # BadZipFile, OSError, ValueError, EOFError...
            raise MnistGanError(f"{path}: not a readable {what} ({type(error).__name__}: "
                                f"{clip(error)})") from None
        with archive:
            check_zip(archive, size, str(path), max_members, max_inflated)
            yield {member.filename[:-4]: _member_array(archive, member, f"{path}:{member.filename[:-4]}", what)
                   for member in archive.infolist() if member.filename.endswith(".npy")}


def _member_array(archive: zipfile.ZipFile, member: zipfile.ZipInfo, name: str, what: str) -> StoredArray:
    try:
        with archive.open(member) as stream:
            shape, fortran, dtype, header = _npy_header(stream, member.file_size, name, what)
    except MnistGanError:
        raise
    except Exception as error:  # encrypted, unsupported compression, damaged local header
        raise MnistGanError(f"{name}: not a readable {what} ({type(error).__name__}: "
                            f"{clip(error)})") from None

    def from_start():
        stream = archive.open(member)
        stream.read(header)
        return stream

    return StoredArray(name, shape, dtype, fortran, from_start, True)


# --------------------------------------------------------------------------------------------- safetensors

@dataclass
class SafetensorsFile:
    """A safetensors file whose header has been read and checked; `tensors()` reads the data."""

    path: Path
    metadata: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    handle: BinaryIO
    size: int

    def tensors(self) -> dict:
        """Every tensor of the file, by name."""
        from safetensors.torch import load

        self.handle.seek(0)
        blob = read_exactly(self.handle, self.size)
        try:
            return load(blob)
        except Exception as error:  # SafetensorError and friends: the bytes are the file's fault
            raise MnistGanError(f"{self.path}: not a readable safetensors file ({clip(error)})") from None


@contextlib.contextmanager
def open_safetensors(path: str | Path, what: str, max_bytes: int) -> Iterator[SafetensorsFile]:
    """Yield a safetensors file with its header parsed and checked (bounds, dtypes, shapes against offsets)."""
    with open_regular(path, what, max_bytes) as (handle, size):
        metadata, shapes = _safetensors_header(handle, size, Path(path))
        yield SafetensorsFile(Path(path), metadata, shapes, handle, size)


def _safetensors_header(handle: BinaryIO, size: int, path: Path) -> tuple[dict[str, str], dict[str, tuple]]:
    def refuse(reason: str) -> MnistGanError:
        return MnistGanError(f"{path}: not a readable safetensors file ({reason})")

    prefix = handle.read(8)
    if len(prefix) < 8:
        raise refuse(f"{size} bytes, too short")
    (length,) = struct.unpack("<Q", prefix)
    if length > min(MAX_SAFETENSORS_HEADER_BYTES, size - 8):
        raise refuse(f"header length {length:,} in a {size:,}-byte file (at most {MAX_SAFETENSORS_HEADER_BYTES:,})")
    try:
        header = json.loads(handle.read(length).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise refuse(f"corrupt header: {type(error).__name__}") from None
    if not isinstance(header, dict):
        raise refuse(f"header is {describe(header)}")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and len(metadata) <= 100 and all(
            isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= MAX_TEXT_CHARS for k, v in metadata.items())):
        raise refuse(f"metadata is not a small table of text ({describe(metadata)})")
    if len(header) > MAX_SAFETENSORS_TENSORS:
        raise refuse(f"{len(header):,} tensors (at most {MAX_SAFETENSORS_TENSORS})")
    shapes, spans = {}, []
    for key, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(shape, list) and len(shape) <= MAX_DIMENSIONS and isinstance(offsets, list)
                and len(offsets) == 2 and isinstance(entry.get("dtype"), str)
                and entry["dtype"] in SAFETENSORS_ITEM_BYTES
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape + offsets)):
            raise refuse(f"malformed entry for tensor {describe(key)}")
        if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_ITEM_BYTES[entry["dtype"]]:
            raise refuse(f"tensor {describe(key)} declares shape ({', '.join(map(describe, shape))}) but "
                         f"{offsets[1] - offsets[0]:,} bytes")
        shapes[key] = tuple(shape)
        spans.append(tuple(offsets))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise refuse("tensor data overlaps or leaves gaps")
        position = end
    if position != size - 8 - length:
        raise refuse(f"tensors declare {position:,} bytes of data but the file holds {size - 8 - length:,}")
    return metadata, shapes
