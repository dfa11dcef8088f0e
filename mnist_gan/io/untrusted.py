"""Reading files a stranger may have made, in bounded time and memory.

Every reader in the package opens its input with `open_regular`, so a FIFO, a device, a socket or a directory is
refused at once instead of blocking a read forever. Before allocating anything, a reader checks what the file's
header declares against the file's size and against what a 28x28 data set can need (`check_inflation` for
compressed data). Loaded structures are checked for size and depth before anything walks or formats them
(`tree_leaves`), and error messages quote untrusted values only through mnist_gan.errors.quote.

The headers of array and weight files are parsed and checked in mnist_gan.io.headers.
"""

from __future__ import annotations

import contextlib
import os
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mnist_gan.errors import MnistGanError, quote

# Data that inflates to no more than this is read whatever its compression ratio: 64 MiB is 80,000 uint8 images.
INFLATE_FREELY_BYTES = 64 * 2**20
# Beyond that, compressed data may inflate at most this much: real digits deflate 5x (uint8) to 20x (float64),
# while a decompression bomb is near-constant data that inflates 1,000x.
MAX_COMPRESSION_RATIO = 50
# Reads and conversions go in pieces this large, so a large array is never held twice.
CHUNK_BYTES = 16 * 2**20
# Text in a header or a config is a name, a number, a path (PATH_MAX is 4,096) or a small JSON config.
MAX_TEXT_CHARS = 65_536
# Characters of a number written as text (2**64 has 20 digits; a float's repr at most 24).
MAX_NUMBER_CHARS = 40


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
        label = f"{name}:{quote(member.filename)}"
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
                raise ValueError(f"{quote(item)}, more than {max_values:,}")
            children = [part for pair in item.items() for part in pair] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, (str, bytes)) and len(item) > MAX_TEXT_CHARS:
            raise ValueError(f"text of {len(item):,} characters (at most {MAX_TEXT_CHARS:,})")
        elif isinstance(item, int) and not isinstance(item, bool) and item.bit_length() > 64:
            raise ValueError(f"{quote(item)}, wider than 64 bits")
        elif not (item is None or isinstance(item, (bool, int, float, str, bytes))):
            leaves.append(item)
    return leaves


def ascii_int(text: Any, low: int, high: int) -> int | None:
    """The integer written in ASCII digits in text, if it lies in [low, high]; else None."""
    if not (isinstance(text, str) and 0 < len(text) <= MAX_NUMBER_CHARS and text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if low <= value <= high else None
