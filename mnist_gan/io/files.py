"""Crash-safe file writing: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mnist_gan.errors import MnistGanError


@contextlib.contextmanager
def atomic_path(destination: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; on success fsync it and rename it over `destination`.

    On any error (or KeyboardInterrupt) the temporary file is removed and `destination` is left as it was. A full
    disk or a read-only folder becomes a MnistGanError naming the file. With replace=False the file is published
    only if `destination` does not exist at that moment (two writers racing: one wins, the other gets the error).
    Only a regular file (or a symbolic link, itself) is ever replaced: see `check_replaceable`.
    """
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as error:
        raise MnistGanError(f"{destination}: cannot write ({error.strerror or error})") from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        if replace:
            check_replaceable(destination)  # again at the last moment: a FIFO or device made meanwhile stays
            os.replace(tmp, destination)
        else:
            publish_new(tmp, destination)
        _fsync_directory(destination.parent)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise MnistGanError(f"{destination}: cannot write ({error.strerror or error}); the previous file, "
                            "if any, is untouched") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(destination: str | Path, payload: bytes, *, replace: bool = True) -> None:
    """Write bytes to `destination` atomically (replace=False: only if it does not exist, see atomic_path)."""
    with atomic_path(destination, replace=replace) as tmp:
        tmp.write_bytes(payload)


def atomic_write_text(destination: str | Path, text: str) -> None:
    """Write text (UTF-8) to `destination` atomically."""
    atomic_write_bytes(destination, text.encode("utf-8"))


def check_replaceable(destination: str | Path) -> None:
    """Raise MnistGanError unless `destination` is missing, a regular file or a symbolic link (which a rename
    replaces itself, never writing its target). A device, FIFO, socket or directory is never replaced: as root,
    renaming a file over /dev/null would destroy it."""
    try:
        mode = os.lstat(destination).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise MnistGanError(f"{destination}: cannot write ({error.strerror or error})") from None
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                 (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
        kind = next((name for test, name in kinds if test(mode)), "a special file")
        raise MnistGanError(f"{destination}: {kind}, not a regular file; --overwrite replaces regular "
                            "files only and leaves it as it is; choose another --out")


def publish_new(tmp: Path, destination: Path) -> None:
    """Give the finished file `tmp` the name `destination`, which must not exist: a hard link is created or
    refused in one step (no check-then-write gap). On file systems without hard links the name is claimed with
    O_EXCL first, then the file renamed over that empty claim."""
    try:
        os.link(tmp, destination)
    except FileExistsError:
        raise already_exists(destination) from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        try:
            os.close(os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise already_exists(destination) from None
        os.replace(tmp, destination)
        return
    with contextlib.suppress(OSError):  # published; a leftover second name is only clutter
        tmp.unlink()


def already_exists(destination: str | Path) -> MnistGanError:
    return MnistGanError(f"{destination}: already exists; pass --overwrite or another --out")


@contextlib.contextmanager
def atomic_directory(destination: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `destination` to fill; on success rename it to `destination`, which must
    be missing or an empty folder (a folder with anything in it is never replaced). On any error or interrupt
    the temporary folder is deleted, so `destination` never shows a partial result."""
    destination = Path(destination)
    if destination.is_symlink() or (destination.exists() and not destination.is_dir()):
        raise MnistGanError(f"{destination}: exists and is not a directory; choose another --out")
    if destination.is_dir() and any(destination.iterdir()):
        raise MnistGanError(f"{destination}: directory exists and is not empty; choose another --out")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"))
    except OSError as error:
        raise MnistGanError(f"{destination}: cannot write ({error.strerror or error})") from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        os.rename(tmp, destination)  # onto nothing or an empty folder; one filled meanwhile refuses
        _fsync_directory(destination.parent)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise already_exists(destination) from None
        if isinstance(error, OSError):
            raise MnistGanError(f"{destination}: cannot write ({error.strerror or error})") from None
        raise


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(directory: str | Path) -> int:
    """Delete the temporary files that writers killed mid-write left in `directory`; return how many.

    Only call this while holding the directory's lock (see `exclusive_lock`): a live writer's temporary
    file looks the same.
    """
    removed = 0
    for path in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def exclusive_lock(directory: str | Path, busy: str = "another mnist-gan process is using this run directory"
                   ) -> Iterator[None]:
    """Hold an exclusive lock on `directory` itself (no file is added; an existing file can be locked the same way)
    or raise MnistGanError, "{directory}: {busy}", if another process holds it. The kernel releases the lock when
    the holder dies, even by SIGKILL."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: run unlocked
        yield
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as error:
        raise MnistGanError(f"{directory}: cannot open ({error.strerror or error})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise MnistGanError(f"{directory}: {busy}") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def check_writable(directory: str | Path, why: str) -> None:
    """Raise MnistGanError unless files can be created in `directory` (or, while it does not exist, in its
    nearest existing parent, where it would be created): a probe file is created there and removed at once.

    Call it before long work whose result goes there, so an unwritable place is said at the start, not the end.
    `why` ends the message, e.g. "pass a writable --cache-dir". Nothing is created that outlives the call.
    """
    directory = Path(directory).absolute()
    existing = next((p for p in (directory, *directory.parents) if p.exists() or p.is_symlink()), None)
    if existing == directory and not existing.is_dir():
        raise MnistGanError(f"{directory}: not a directory; {why}")
    if existing is None or not existing.is_dir():
        raise MnistGanError(f"{directory}: cannot be created ({existing} is not a directory); {why}")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".mnist-gan-probe.", suffix=".tmp")
    except OSError as error:
        raise MnistGanError(f"{directory}: cannot write there ({error.strerror or error}); {why}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
