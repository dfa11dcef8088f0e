"""Replacing a directory by a new one in place, so that a failure at any step leaves the old one whole.

The old directory is renamed aside and each of its files moved into its own staging folder (a rename out of a
folder needs what deleting from it needs, so this proves every file can be deleted); only then does the new one
take the name. Each step is undone when a later one fails. mnist_gan.run.directory uses this for --overwrite.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Collection
from pathlib import Path

from mnist_gan.errors import MnistGanError

STAGED = ".staged"  # inside a directory being replaced: where its files wait, moved but not yet deleted


def sibling(path: Path, role: str) -> Path:
    """A fresh hidden name beside `path`, e.g. runs/.x.3f9a0c1d.replaced."""
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.{role}"


def rename(source: Path, target: Path, shown: Path) -> None:
    """os.rename, its failure a MnistGanError saying that nothing was changed (`shown` names the directory)."""
    try:
        os.rename(source, target)
    except OSError as error:
        raise MnistGanError(f"{shown}: cannot replace ({error.strerror or error}); --overwrite changed "
                            "nothing") from None


def restore(aside: Path, path: Path, shown: Path) -> None:
    """Put the old directory back under its name after a failed replacement (when it had been moved aside)."""
    if path.exists() or not aside.exists():
        return
    try:
        os.rename(aside, path)
    except OSError as error:
        raise MnistGanError(f"{shown}: --overwrite failed and could not move the old run back "
                            f"({error.strerror or error}); it is whole in {aside}") from None


def stage(aside: Path, shown: Path, folders: Collection[str]) -> list[tuple[Path, Path]]:
    """Move every file of the directory at `aside` into aside/.staged/ (same relative paths); return the moves.

    A rename out of a folder needs what deleting from it needs, so once this succeeds the later delete cannot be
    refused; if one file cannot be moved, every move is undone and the error names that file as `shown`/..."""
    moves: list[tuple[Path, Path]] = []
    current = aside
    try:
        (aside / STAGED).mkdir()  # proves the directory's own entries (its folders) can be removed
        for folder in folders:
            if (aside / folder).is_dir():
                (aside / STAGED / folder).mkdir()
                for file in sorted((aside / folder).iterdir()):
                    current = file
                    os.rename(file, aside / STAGED / folder / file.name)
                    moves.append((file, aside / STAGED / folder / file.name))
        for file in sorted(aside.iterdir()):
            if file.name not in folders and file.name != STAGED:
                current = file
                os.rename(file, aside / STAGED / file.name)
                moves.append((file, aside / STAGED / file.name))
    except BaseException as error:
        unstage(aside, moves, shown, folders)
        if not isinstance(error, OSError):
            raise
        where = shown / current.relative_to(aside)
        raise MnistGanError(f"{where}: cannot be removed ({error.strerror or error}); --overwrite changed "
                            "nothing") from None
    return moves


def unstage(aside: Path, moves: list[tuple[Path, Path]], shown: Path, folders: Collection[str]) -> None:
    """Undo `stage`: every file back where it was, the staging folders gone."""
    try:
        for original, staged in reversed(moves):
            os.rename(staged, original)
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                (aside / STAGED / folder).rmdir()
        with contextlib.suppress(FileNotFoundError):
            (aside / STAGED).rmdir()
    except OSError as error:
        raise MnistGanError(f"{shown}: --overwrite failed and could not put every file of the old run back "
                            f"({error.strerror or error}); the rest are in its {STAGED}/ folder") from None


def remove_new(directory: Path, folders: Collection[str], files: Collection[str]) -> None:
    """Quietly undo the making of a new directory this process made: its empty folders, the files named, itself.
    Anything else found there stays (rmdir refuses a folder that is not empty)."""
    with contextlib.suppress(OSError):
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                (directory / folder).rmdir()
        for file in files:
            (directory / file).unlink(missing_ok=True)
        directory.rmdir()
