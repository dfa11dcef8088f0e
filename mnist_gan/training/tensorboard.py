"""A run's TensorBoard events (--tensorboard): the recorder's figures, warnings and grids, and the run's config,
written under RUN_DIR/tensorboard/ so that `tensorboard --logdir runs` shows and compares runs.

Every event's step is the training iteration. The tags:

    train/NAME      every number of a metrics.jsonl train line: d_loss, g_loss, d_x (D(x)), d_g_z (D(G(z))),
                    images_per_s, and the probes' grad_norm_g, grad_norm_d, d_train_real, d_heldout where logged
    eval/NAME       every number of an eval line (--eval-every): fid, kid, classifier_score, precision, ...
    warnings        the diagnosis' newly raised problems (text), at the iteration they were raised
    samples         each sample grid (image), at the iterations the grids are drawn
    hparams         the run's config, flattened (model.width, train.lr, ...), once, when the run starts

A resumed run appends a new event file that begins with a purge at its first new step, so readers drop what a
killed run wrote past the checkpoint being resumed and each curve goes on without duplicates.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mnist_gan.diagnosis.signs import Problem
from mnist_gan.errors import MnistGanError
from mnist_gan.run.directory import SAMPLES, RunDir
from mnist_gan.sampling.grids import grid_image
from mnist_gan.settings.config import RunConfig

EVENT_FILE_PREFIX = "events.out.tfevents."  # what SummaryWriter names its files: PREFIX<seconds>.<host>.<pid>.<n>
FLUSH_SECONDS = 5  # a live TensorBoard shows new points within seconds; SummaryWriter's default waits 2 minutes
BOOKKEEPING = ("iteration", "epoch", "time")  # fields of a line that are not figures: the step and wall time
GRID_ROWS = 8  # the recorder's 64-image grids are 8x8, as in samples/
GRID_TAG = SAMPLES  # the grids' tag is their folder's name: one name for them on disk and in TensorBoard


def require_tensorboard() -> None:
    """Raise MnistGanError unless TensorBoard events can be written (the tensorboard package is installed)."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (raises ImportError without the tensorboard package)
    except ImportError:
        raise MnistGanError('--tensorboard needs the tensorboard package: pip install "mnist-gan[tensorboard]"') \
            from None


def open_board(run_dir: Path, config: RunConfig, start: int) -> NullBoard:
    """The board of a run that records from iteration `start`: a TensorBoardLog with --tensorboard, else one
    that writes nothing."""
    return TensorBoardLog(RunDir(run_dir).tensorboard, config, start) if config.train.tensorboard else NullBoard()


class NullBoard:
    """Writes nothing: the board of a run without --tensorboard."""

    def figures(self, record: dict) -> None:
        """Write the numbers of a metrics.jsonl line (train or eval) as scalars at its iteration."""

    def problems(self, iteration: int, problems: list[Problem]) -> None:
        """Write newly raised diagnosis problems as one text event."""

    def grid(self, iteration: int, images: torch.Tensor) -> None:
        """Write a sample grid, images (N, 1, 28, 28) in [-1, 1], as one image event."""

    def close(self) -> None:
        """Flush and close the event file."""


class TensorBoardLog(NullBoard):
    """Events of one training session (a run's start, or a resume) in `directory`, from iteration `start` on."""

    def __init__(self, directory: Path, config: RunConfig, start: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        try:
            directory.mkdir(exist_ok=True)
            _wait_to_sort_last(directory)
            # Readers drop every event at or past the purge step read before it: a fresh start (or a restart
            # from 0) writes from iteration 0 again, a resume from its checkpoint's iteration + 1.
            self.writer = SummaryWriter(str(directory), purge_step=start + 1 if start else 0,
                                        flush_secs=FLUSH_SECONDS)
        except OSError as error:
            raise MnistGanError(f"{directory}: cannot write TensorBoard events ({error.strerror or error})") from None
        if start == 0:
            self._hparams(config)

    def figures(self, record: dict) -> None:
        section, iteration = record["kind"], record["iteration"]
        for name, value in record.items():
            if name not in BOOKKEEPING and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{section}/{name}", value, iteration)

    def problems(self, iteration: int, problems: list[Problem]) -> None:
        if problems:  # markdown: one bullet per problem
            self.writer.add_text("warnings", "\n".join(f"- `{p.code}`: {p.message}" for p in problems), iteration)

    def grid(self, iteration: int, images: torch.Tensor) -> None:
        pixels = np.asarray(grid_image(images, GRID_ROWS))  # (H, W) or, in colour, (H, W, 3) uint8: samples/'s grid
        self.writer.add_image(GRID_TAG, pixels, iteration, dataformats="HW" if pixels.ndim == 2 else "HWC")

    def close(self) -> None:
        self.writer.close()

    def _hparams(self, config: RunConfig) -> None:
        """The config as the hparams plugin's session start: TensorBoard's HPARAMS tab lists every run's values
        side by side (no experiment summary: the plugin then gathers the hyperparameters of all runs)."""
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb

        self.writer.file_writer.add_summary(hparams_pb(flat_config(config)))


def flat_config(config: RunConfig) -> dict[str, bool | int | float | str]:
    """The config's values by dotted name ("preset", "model.width", "train.lr", ...); unset (None) fields left out."""
    flat = {"preset": config.preset}
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            flat |= {f"{section}.{name}": value for name, value in values.items() if value is not None}
    return flat


def _wait_to_sort_last(directory: Path) -> None:
    """Readers read a folder's event files in name order, which begins with the second each was created in: wait
    (under a second) until a new file's name sorts after those of earlier sessions, so its purge comes last."""
    seconds = [int(stamp) for path in directory.glob(EVENT_FILE_PREFIX + "*")
               if (stamp := path.name[len(EVENT_FILE_PREFIX):].split(".")[0]).isdigit()]
    while seconds and int(time.time()) == max(seconds):
        time.sleep(0.05)
