"""The array and weight files mnist-gan reads (.npy, .npz, safetensors): their headers parsed and checked before
any data is read, so that a caller can check the declared shapes and sizes first; and the one safetensors writer.

Files are opened with mnist_gan.io.untrusted.open_regular; see that module for the general rules.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_gan.errors import MnistGanError, clip, quote
from mnist_gan.io.files import atomic_path
from mnist_gan.io.untrusted import (
    CHUNK_BYTES,
    MAX_TEXT_CHARS,
    check_zip,
    open_regular,
    read_exactly,
    read_into,
)

# An array or tensor has at most this many dimensions; images have 4 at most.
MAX_DIMENSIONS = 8
# numpy's own default; a real .npy header is ~120 bytes.
MAX_NPY_HEADER_BYTES = 10_000
# Arrays in one .npz: a data set has 2 or 4, a file of samples 1.
MAX_NPZ_MEMBERS = 100
# A safetensors header lists each tensor and the metadata; a generator's is ~3 KB, a classifier's ~2 KB.
MAX_SAFETENSORS_HEADER_BYTES = 2**20
# Tensors in one safetensors file: a generator has ~20.
MAX_SAFETENSORS_TENSORS = 1000
# Metadata entries of a safetensors file: a classifier's has 11, a generator export's 4.
MAX_METADATA_ENTRIES = 100
SAFETENSORS_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                          "BOOL": 1}


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
        raise refuse(f"dtype {quote(str(dtype))} is not a plain integer or float type")
    if len(shape) > MAX_DIMENSIONS:
        raise refuse(f"{len(shape)} dimensions (at most {MAX_DIMENSIONS})")
    declared = math.prod(shape) * dtype.itemsize
    if declared != stored_bytes - header_bytes:  # forged dimensions may be thousands of digits long: described
        raise refuse(f"header declares shape ({', '.join(map(quote, shape))}) of {dtype} "
                     f"({quote(declared)} bytes) but {stored_bytes - header_bytes:,} bytes follow")
    return tuple(shape), fortran_order, dtype, header_bytes


@contextlib.contextmanager
def open_arrays(path: str | Path, what: str, max_bytes: int, max_inflated: int,
                max_members: int = MAX_NPZ_MEMBERS) -> Iterator[dict[str, StoredArray]]:
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


def write_safetensors(path: str | Path, state_dict: dict, metadata: dict[str, str]) -> None:
    """Write tensors (copied to the CPU, contiguous) and text metadata to a safetensors file, atomically."""
    from safetensors.torch import save

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    with atomic_path(path) as tmp:
        tmp.write_bytes(_sorted_header(save(tensors, metadata=metadata)))


def _sorted_header(payload: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted: safetensors writes them in a random order
    per process, so equal weights would otherwise give files with different hashes."""
    length = int.from_bytes(payload[:8], "little")
    header = json.dumps(json.loads(payload[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to 8 bytes with spaces
    return len(header).to_bytes(8, "little") + header + payload[8 + length:]


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
        raise refuse(f"header is {quote(header)}")
    metadata = header.pop("__metadata__", None) or {}
    if not (isinstance(metadata, dict) and len(metadata) <= MAX_METADATA_ENTRIES and all(
            isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= MAX_TEXT_CHARS for k, v in metadata.items())):
        raise refuse(f"metadata is not a small table of text ({quote(metadata)})")
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
            raise refuse(f"malformed entry for tensor {quote(key)}")
        if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_ITEM_BYTES[entry["dtype"]]:
            raise refuse(f"tensor {quote(key)} declares shape ({', '.join(map(quote, shape))}) but "
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
