"""The run directory: every path a run writes, and the one owner that creates, locks, replaces and prunes it.

    config.json              the run's settings (RunConfig.to_dict())
    metrics.jsonl            one JSON line per log step and per evaluation
    evaluations.jsonl        one JSON line per `mnist-gan evaluate RUN` (never truncated by --resume)
    losses.png               the loss (and FID) curves
    generator.safetensors    G's weights (the moving average when the run keeps one): what `generate` reads
    last.ckpt                a relative symlink to the newest checkpoint
    checkpoints/iter_NNNNNNNN.ckpt
    samples/iter_NNNNNNNN.png, samples/progress.gif
    tensorboard/events.out.tfevents.*   TensorBoard's event files, with --tensorboard (one per start or resume)
    diagnosis/NAME.png       the plots `mnist-gan diagnose` draws into the run

plus the hidden temporaries of those files that a writer killed mid-write leaves (`.NAME.XXXXXXXX.tmp`,
`.last.ckpt.tmp`). `--overwrite` removes exactly these and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from mnist_gan.data.datasets import default_cache_dir
from mnist_gan.errors import MnistGanError
from mnist_gan.io.dirswap import remove_new, rename, restore, sibling, stage, unstage
from mnist_gan.io.files import atomic_write_text, exclusive_lock
from mnist_gan.run.checkpoint import checkpoint_name, list_checkpoints
from mnist_gan.run.records import read_limited, read_records
from mnist_gan.settings.config import DataConfig, RunConfig
from mnist_gan.settings.config_file import MAX_CONFIG_BYTES, read_config_file

logger = logging.getLogger(__name__)

# What a run writes, folder by folder (a name pattern each); checkpoint_name() and the grids use 8+ digits.
TOP_FILES = r"config\.json|metrics\.jsonl|evaluations\.jsonl|losses\.png|generator\.safetensors|last\.ckpt"
FOLDERS = {"checkpoints": r"iter_\d{8,}\.ckpt", "samples": r"iter_\d{8,}\.png|progress\.gif",
           "tensorboard": r"events\.out\.tfevents\.\d+\.[^/]+",  # SummaryWriter's: .<seconds>.<host>.<pid>.<n>
           "diagnosis": r"(?:losses|scores|grad_norms|fid|classes)\.png"}  # diagnosis.plots.write_plots' panels
CREATED = ("checkpoints", "samples")  # made with every run; tensorboard/ by the recorder, with --tensorboard
SAMPLES = "samples"  # the grids' folder; the grids' TensorBoard tag has its name, so both places call them alike
# Names found by listing a folder, read back by the iteration in them (12 digits at most: a name longer than that
# was not written by a run, and its number would not fit the readers' bounds).
GRID_NAME = re.compile(r"iter_(\d{1,12})\.png")
CHECKPOINT_NAME = re.compile(r"iter_(\d{1,12})\.ckpt")


def _run_file_pattern(names: str) -> re.Pattern:
    """The files themselves, atomic_path's temporaries of them (.NAME.XXXXXXXX.tmp) and point_last's."""
    return re.compile(rf"(?:{names})|\.(?:{names})\.[a-z0-9_]+\.tmp|\.last\.ckpt\.tmp")


TOP_PATTERN = _run_file_pattern(TOP_FILES)
FOLDER_PATTERNS = {folder: _run_file_pattern(names) for folder, names in FOLDERS.items()}


class RunDir:
    """One run directory: its paths, and the only code that creates, locks, replaces or prunes it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def default(cls, config: RunConfig) -> RunDir:
        """runs/<preset>-<date>-<time>, the run directory when --out is not given."""
        return cls(Path("runs") / f"{config.preset}-{datetime.now():%Y%m%d-%H%M%S}")

    @classmethod
    def containing(cls, path: str | Path) -> RunDir:
        """The run directory of `path`: a run directory itself, a checkpoint in its checkpoints/, or a file at its
        top (generator.safetensors)."""
        path = Path(path)
        if path.is_dir():
            return cls(path)
        return cls(path.parent.parent if path.parent.name == "checkpoints" else path.parent)

    config_file = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    evaluations = property(lambda self: self.path / "evaluations.jsonl")  # what `mnist-gan evaluate RUN` recorded
    losses_plot = property(lambda self: self.path / "losses.png")
    generator = property(lambda self: self.path / "generator.safetensors")
    last = property(lambda self: self.path / "last.ckpt")
    checkpoints = property(lambda self: self.path / "checkpoints")
    samples = property(lambda self: self.path / SAMPLES)
    progress_gif = property(lambda self: self.path / SAMPLES / "progress.gif")
    tensorboard = property(lambda self: self.path / "tensorboard")
    diagnosis = property(lambda self: self.path / "diagnosis")  # `mnist-gan diagnose` writes its plots here

    def checkpoint(self, iteration: int) -> Path:
        return self.checkpoints / checkpoint_name(iteration)

    def grid(self, iteration: int) -> Path:
        return self.samples / f"iter_{iteration:08d}.png"

    def list_checkpoints(self) -> list[Path]:
        """The run's checkpoints, oldest first."""
        return list_checkpoints(self.path)

    def checkpoints_by_iteration(self) -> dict[int, Path]:
        """{iteration: path} of the checkpoints found by listing checkpoints/ ({} if it cannot be listed)."""
        return _by_iteration(self.checkpoints, CHECKPOINT_NAME)

    def grids(self) -> dict[int, Path]:
        """{iteration: path} of the sample grids found by listing samples/ ({} if it cannot be listed)."""
        return _by_iteration(self.samples, GRID_NAME)

    def config_dict(self) -> dict:
        """config.json as a plain dict, read as a stranger's file (any version's run, while it trains): {} if it
        is missing, unreadable, not a regular file, larger than MAX_CONFIG_BYTES or not a JSON object. Showing
        a run needs this; continuing one needs `read_config`."""
        data = read_limited(self.config_file, MAX_CONFIG_BYTES)
        try:
            config = json.loads(data) if data is not None else {}
        except (ValueError, RecursionError):
            return {}
        return config if isinstance(config, dict) else {}

    # ------------------------------------------------------------------------------------- create, replace

    def check_new(self, overwrite: bool, data: DataConfig | None = None) -> bool:
        """Raise MnistGanError unless a new run may be written here; return True if an old run is to be replaced.

        Without `overwrite` the directory must be missing or empty. With it, the directory must not be a symlink,
        `/`, the current or home directory, or hold the data set or its cache, and must hold nothing but what a
        run writes (the first other entry is named)."""
        path = self.path
        if overwrite and path.is_symlink():
            raise MnistGanError(f"{path}: is a symbolic link; --overwrite replaces only a real run directory "
                                "(pass the directory it points to)")
        if not path.exists():
            return False
        if not path.is_dir():
            raise MnistGanError(f"{path}: exists and is not a directory")
        if overwrite:
            self._refuse_protected(data)
        if not any(path.iterdir()):
            return False
        if not overwrite:
            raise MnistGanError(f"{path}: run directory exists; use --resume {path} to continue it "
                                "or --overwrite to replace it")
        foreign = self._foreign_entry()
        if foreign is not None:
            raise MnistGanError(f"{foreign}: not a file a run writes; --overwrite only replaces run directories "
                                "and deletes nothing else; choose another --out")
        if not (path / "config.json").exists() and not (path / "checkpoints").is_dir():
            raise MnistGanError(f"{path}: --overwrite only replaces run directories (this one has no "
                                "config.json or checkpoints/); choose another --out")
        return True

    @contextlib.contextmanager
    def create(self, config: RunConfig, *, overwrite: bool = False) -> Iterator[RunDir]:
        """Create the run directory with config.json in it and hold its lock until the block exits.

        With `overwrite`, an old run there is replaced atomically (see `_replace`): on any failure it is left
        whole, in place, and the error names the path that failed."""
        with contextlib.ExitStack() as held:
            if self.check_new(overwrite, config.data):
                self._replace(config, held)
            else:
                self._create_in_place(config, held)
            yield self

    def _create_in_place(self, config: RunConfig, held: contextlib.ExitStack) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)  # an empty existing directory is used as it is
        except OSError as error:
            raise MnistGanError(f"{self.path}: cannot create run directory ({error.strerror or error})") from None
        held.enter_context(exclusive_lock(self.path))
        if any(self.path.iterdir()):  # another process wrote here since the first check
            raise MnistGanError(f"{self.path}: run directory exists; use --resume {self.path} to continue it "
                                "or --overwrite to replace it")
        self._populate(self.path, config)

    def _replace(self, config: RunConfig, held: contextlib.ExitStack) -> None:
        """Swap the old run for a new one. The new run is built and locked in a hidden sibling; the old one is
        renamed aside and every file of it moved into its own .staged/ folder, which proves each can be removed
        and is undone on failure; only then does the new run take the name and the old one get deleted."""
        path = self.path.resolve()  # check_new refused a symlink: this is the directory itself
        with exclusive_lock(path):  # never replace a run another process is writing
            self.check_new(True, config.data)  # again, under the lock: the data load took a while
            new = sibling(path, "new")
            try:
                new.mkdir()
                held.enter_context(exclusive_lock(new))  # the lock follows the directory when it is renamed
                self._populate(new, config)
            except BaseException:
                remove_new(new, FOLDERS, [self.config_file.name])
                raise
            aside, shown = sibling(path, "replaced"), self.path  # messages name the path as the user gave it
            try:
                rename(path, aside, shown)
                moves = stage(aside, shown, FOLDERS)
                try:
                    rename(new, path, shown)
                except BaseException:
                    unstage(aside, moves, shown, FOLDERS)
                    raise
            except BaseException:
                remove_new(new, FOLDERS, [self.config_file.name])
                restore(aside, path, shown)
                raise
        try:
            shutil.rmtree(aside)  # each file in it was moved once already, which needs what removing it needs
        except OSError as error:
            logger.warning(f"the replaced run's remains are left in {aside} ({error.strerror or error})")

    def _populate(self, directory: Path, config: RunConfig) -> None:
        try:
            for folder in CREATED:
                (directory / folder).mkdir(exist_ok=True)
        except OSError as error:
            raise MnistGanError(f"{self.path}: cannot create run directory ({error.strerror or error})") from None
        RunDir(directory).record_config(config)

    def _refuse_protected(self, data: DataConfig | None) -> None:
        """Raise if this directory is `/`, or is or holds the current or home directory, the data or its cache."""
        resolved = self.path.resolve()
        if resolved.parent == resolved:
            raise MnistGanError(f"{self.path}: is the root directory; --overwrite refuses to replace it")
        for protected, what in _protected_paths(data):
            if resolved == protected or resolved in protected.parents:
                relation = "is" if resolved == protected else "contains"
                raise MnistGanError(f"{self.path}: {relation} {what} ({protected}); --overwrite refuses to "
                                    "replace it; choose another --out")

    def _foreign_entry(self) -> Path | None:
        """The first entry (sorted) that a run does not write, or None when every entry is a run's own."""
        for entry in sorted(self.path.iterdir()):
            if entry.name not in FOLDERS:
                if not _is_run_file(entry, TOP_PATTERN):
                    return entry
            elif not stat.S_ISDIR(entry.lstat().st_mode):  # a file, or a symlink to somewhere else, so named
                return entry
            else:
                pattern = FOLDER_PATTERNS[entry.name]
                inner = [f for f in sorted(entry.iterdir()) if not _is_run_file(f, pattern)]
                if inner:
                    return inner[0]
        return None

    # ---------------------------------------------------------------------------------------------- resume

    @contextlib.contextmanager
    def reopened(self) -> Iterator[RunDir]:
        """Lock an existing run for --resume and delete the temporaries a writer killed mid-write left in it."""
        with exclusive_lock(self.path):
            self.remove_stale_temporaries()
            yield self

    def remove_stale_temporaries(self) -> int:
        """Delete this run's own temporaries (only call it holding the lock: a live writer's look the same)."""
        removed = 0
        folders = [(self.path, TOP_PATTERN), *((self.path / f, p) for f, p in FOLDER_PATTERNS.items())]
        for directory, pattern in folders:
            for path in directory.glob(".*.tmp") if directory.is_dir() else ():
                if _is_run_file(path, pattern):
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed += 1
        return removed

    def read_config(self) -> RunConfig:
        """The run's config.json, as a checked RunConfig (a hand-edited file is treated as hostile)."""
        return read_config_file(self.config_file)

    def record_config(self, config: RunConfig) -> None:
        """Write config.json, atomically: the settings the run uses (a resumed one's new length included)."""
        atomic_write_text(self.config_file, json.dumps(config.to_dict(), indent=2) + "\n")

    def truncate_metrics(self, iteration: int) -> list[dict]:
        """Drop logged lines past the checkpoint being resumed (and any half-written last line); return the rest."""
        records = []
        for record in read_records(self.metrics):
            step = record.get("iteration")
            if isinstance(step, int) and step <= iteration and (not records or step >= records[-1]["iteration"]):
                records.append(record)
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in records))
        return records

    # ------------------------------------------------------------------------------------------ checkpoints

    def point_last(self, newest: Path) -> None:
        """Make last.ckpt a relative link to the newest checkpoint, replaced atomically."""
        tmp = self.path / ".last.ckpt.tmp"
        try:
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(newest.relative_to(self.path))
            tmp.replace(self.last)
        except OSError:  # file systems without symlinks: --resume and generate still find checkpoints/
            tmp.unlink(missing_ok=True)

    def rotate(self, keep: int, newest: Path) -> None:
        """Delete all but the `keep` newest checkpoints (never `newest`)."""
        for old in self.list_checkpoints()[:-keep]:
            if old != newest:
                old.unlink(missing_ok=True)


def _protected_paths(data: DataConfig | None) -> list[tuple[Path, str]]:
    """Directories --overwrite must never remove or contain, resolved, with what to call them."""
    protected = [(Path.cwd().resolve(), "the current directory")]
    with contextlib.suppress(RuntimeError, KeyError):  # no home directory known
        protected.append((Path.home().resolve(), "your home directory"))
    if data is not None:
        source = Path(data.data).expanduser()
        if source.exists():
            protected.append((source.resolve(), f"the data set --data {data.data}"))
        cache = Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir()
        protected.append((cache.resolve(), "the data cache"))
    return protected


def _by_iteration(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    """{iteration: path} of the files in `folder` whose names match `pattern` (none if it cannot be listed)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return {}
    return {int(match.group(1)): folder / name for name in names if (match := pattern.fullmatch(name))}


def _is_run_file(path: Path, pattern: re.Pattern) -> bool:
    """A regular file or a symlink (removing a link never touches its target) with a name a run writes."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    return (stat.S_ISREG(mode) or stat.S_ISLNK(mode)) and pattern.fullmatch(path.name) is not None
