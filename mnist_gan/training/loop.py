"""train(config, out) starts a run and resume(run_dir) continues one: build the step, loop over the batches
calling it and the recorder, checkpoint, finish.

The run directory holds config.json, metrics.jsonl, samples/ (grids, progress.gif), losses.png, checkpoints/
(with last.ckpt pointing at the newest), generator.safetensors and, with --tensorboard, tensorboard/. Under torchrun every process trains its share
of each batch and rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mnist_gan.data.datasets import load_dataset
from mnist_gan.data.images import ImageDataset, to_float
from mnist_gan.diagnosis.detectors import divergence_hint
from mnist_gan.errors import MnistGanError
from mnist_gan.gan import distributed
from mnist_gan.gan.clusters import SelfConditioning
from mnist_gan.gan.device import configure_backend, configure_threads, resolve_precision
from mnist_gan.gan.distributed import Ranks
from mnist_gan.gan.losses import get_loss
from mnist_gan.gan.step import GanStep
from mnist_gan.run.checkpoint import (
    check_config_edits,
    config_from_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from mnist_gan.run.directory import RunDir
from mnist_gan.run.generator_file import export_generator
from mnist_gan.settings.config import RunConfig
from mnist_gan.settings.validation import validate
from mnist_gan.training.recorder import NullRecorder, Recorder, last_good
from mnist_gan.training.tensorboard import require_tensorboard

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished (or interrupted) run leaves behind."""

    run_dir: Path | None  # None only on ranks > 0 of a torchrun run without --out (rank 0 names the directory)
    iteration: int
    checkpoint: Path | None
    interrupted: bool = False
    history: list[dict] = field(default_factory=list)  # the train lines of metrics.jsonl
    evaluations: list[dict] = field(default_factory=list)  # sample-quality figures, with --eval-every


def train(config: RunConfig, out: str | Path | None = None, *, overwrite: bool = False,
          dataset: ImageDataset | None = None, progress: bool = True) -> TrainResult:
    """Train G and D as `config` says, writing everything into the new run directory `out` (default
    runs/<preset>-<time>); `overwrite` replaces a run already there. `dataset` stands in for config.data.

    While training, the run directory is locked against other mnist-gan processes.
    """
    if out is not None:
        RunDir(out).check_new(overwrite, config.data)  # refuse before the (slow) data load
    with contextlib.ExitStack() as resources:
        run = _build(config, dataset)  # a data or device error leaves no run directory behind
        if run.ranks.is_main:  # created (or an old run replaced) with config.json in it, locked until the end
            new_run = RunDir(out) if out is not None else RunDir.default(config)
            run.run_dir = resources.enter_context(new_run.create(config, overwrite=overwrite)).path
        else:  # only rank 0 writes files
            run.run_dir = Path(out) if out is not None else None
        return run.carry_out(resources, start=0, progress=progress)


def resume(run_dir: str | Path, iterations: int | None = None, *, epochs: int | None = None,
           progress: bool = True) -> TrainResult:
    """Continue the run in `run_dir` from its newest complete checkpoint (weights, optimizers, RNGs, step),
    with the run's own settings, to `iterations` in all (or `epochs`; neither: the run's own length).

    The result is bit for bit what one uninterrupted run would have given. A run stopped before its first
    checkpoint starts again from iteration 0. While training, the run directory is locked.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MnistGanError(f"--resume: {run_dir} is not a run directory")
    saved = RunDir(run_dir)
    with contextlib.ExitStack() as resources:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone writes the run
            resources.enter_context(saved.reopened())  # locked; killed writers' temporaries removed
        checkpoint, state, config = _saved_run(saved)
        length_given = iterations is not None or epochs is not None
        if state is not None:  # a hand-edited config.json is refused, naming the field (see check_config_edits)
            check_config_edits(saved.config_file, config, checkpoint, length_given)
        if length_given:
            config.train.iterations = iterations
            config.train.epochs = config.train.epochs if epochs is None else epochs
        run = _build(config, None)
        if run.ranks.is_main:
            saved.record_config(config)  # what the resumed run uses: serve and diagnose read its length there
        run.run_dir, start = run_dir, 0
        if state is not None:
            run.step.load_state_dict(state, checkpoint)
            run.batches.load_clusters(state, checkpoint)
            start, run.saved_at = state["iteration"], state["iteration"]
            logger.info(f"resuming {run_dir} from {checkpoint.name} at iteration {start} of {run.total}")
            if start >= run.total:
                logger.warning(f"nothing to do: the run already has {start} iterations (pass a larger --iterations)")
        history = saved.truncate_metrics(start) if run.ranks.is_main else []
        return run.carry_out(resources, start=start, history=history, checkpoint=checkpoint if state else None,
                             progress=progress)


def _saved_run(run: RunDir) -> tuple[Path | None, dict | None, RunConfig]:
    """(newest usable checkpoint, its state, the run's config); (None, None, config.json's) before the first."""
    if run.list_checkpoints() or not run.config_file.is_file():
        checkpoint, state = load_latest_checkpoint(run.path)
        return checkpoint, state, config_from_checkpoint(state, checkpoint)
    config = run.read_config()
    logger.info(f"{run.path} has no checkpoint yet: starting it again from iteration 0")
    return None, None, config


def _build(config: RunConfig, dataset: ImageDataset | None) -> _Run:
    """Check the config, join torchrun's processes (if any), load the data and build the step."""
    validate(config, training=True)
    get_loss(config)  # an unknown loss or an impossible combination stops here, before any data loads
    if config.train.tensorboard:
        require_tensorboard()
    ranks, device = distributed.setup(config.train.device, config.train.batch_size, config.model.pack,
                                      paired=bool(config.train.diversity))  # one process unless torchrun
    configure_backend(device)
    configure_threads()
    if dataset is None:
        dataset = load_dataset(config.data)
    if dataset.channels != config.model.channels:
        raise MnistGanError(f"{dataset.source} has {dataset.channels}-channel images and the model "
                            f"{config.model.channels}: pass --channels {dataset.channels}")
    batches_per_epoch = len(dataset) // config.train.batch_size
    if batches_per_epoch == 0:
        raise MnistGanError(f"--batch-size {config.train.batch_size} is larger than the data set "
                            f"({len(dataset)} images)")
    logger.info(f"data: {len(dataset)} images from {dataset.source}")
    batches = Batches(dataset, config, ranks, device)
    total = config.train.iterations or config.train.epochs * batches_per_epoch
    logger.debug(f"{total} iterations of {config.train.batch_size} images ({batches_per_epoch} per epoch), seed "
                 f"{config.train.seed}" + (f", {ranks.world_size} processes" if ranks.world_size > 1 else ""))
    step = GanStep(config, device, ranks, batches_per_epoch)  # a precision this device cannot run stops here
    return _Run(config, ranks, dataset, batches, step, total)


@dataclass
class _Run:
    """One run being carried out: its step, its data, how far it goes and where it writes."""

    config: RunConfig
    ranks: Ranks
    dataset: ImageDataset
    batches: Batches
    step: GanStep
    total: int
    run_dir: Path | None = None
    recorder: NullRecorder | None = None
    saved_at: int | None = None  # the iteration of the newest checkpoint

    def carry_out(self, resources: contextlib.ExitStack, *, start: int, progress: bool,
                  history: list[dict] | None = None, checkpoint: Path | None = None) -> TrainResult:
        """Train from iteration `start` to the end (or a stop), save the final state and finish the record."""
        logger.info(_device_note(self.step))
        if self.config.model.self_condition and self.batches.clusters is None:
            self.batches.start_clusters(self.step)
        stop = resources.enter_context(StopRequest().installed())  # to the end: the final plots included
        kind = Recorder if self.ranks.is_main else NullRecorder
        self.recorder = resources.enter_context(kind(self.step, self.run_dir, self.dataset, start=start,
                                                     total=self.total, history=history, progress=progress))
        self.recorder.last_checkpoint = checkpoint
        iteration = self.loop(start, stop)
        self.recorder.end(iteration, interrupted=stop.signal_name is not None)
        if self.saved_at != iteration:
            self.checkpoint(iteration)
        self.recorder.finish(iteration)  # a signal meanwhile is noted and said below: the plots take seconds
        last, stopped_by = self.recorder.last_checkpoint, stop.signal_name
        if stopped_by is not None:
            logger.warning(f"stopped by {stopped_by} at iteration {iteration}; checkpoint {last}. "
                           f"Continue with: mnist-gan train --resume {self.run_dir}")
        else:
            logger.info(f"done: {iteration} iterations; run directory {self.run_dir}")
        return TrainResult(self.run_dir, iteration, last, stopped_by is not None, self.recorder.history,
                           self.recorder.evaluations)

    def loop(self, start: int, stop: StopRequest) -> int:
        """Train until the run's length, a signal (`stop`, installed) or --max-minutes; return the iteration
        reached."""
        train, iteration = self.config.train, start
        deadline = time.perf_counter() + 60 * train.max_minutes if train.max_minutes else math.inf
        while iteration < self.total and not _should_stop(stop, deadline, self.ranks,
                                                          iteration % train.log_every == 0, self.step.device):
            stats = self.step(*self.batches.at(iteration))  # (4,): d_loss, g_loss, D(x), D(G(z))
            iteration += 1
            self.recorder.after_step(iteration, stats)
            if self.batches.clusters is not None and train.recluster_every and \
                    iteration % train.recluster_every == 0:
                self.batches.recluster(self.step, iteration)
            if train.checkpoint_every and iteration % train.checkpoint_every == 0:
                self.checkpoint(iteration)
        return iteration

    def checkpoint(self, iteration: int) -> None:
        """Save the step's state as checkpoints/iter_N.ckpt (rank 0), point last.ckpt at it, drop the oldest
        beyond --keep and export G; refuse to save a state that has diverged."""
        self.recorder.check_losses(iteration)  # never save a state that a non-finite loss has already spoilt
        try:
            self.step.check_finite(iteration)
        except MnistGanError as error:
            raise MnistGanError(f"{error}; {last_good(self.recorder.last_checkpoint)}; "
                                f"{divergence_hint(self.config)}") from None
        run = RunDir(self.run_dir) if self.run_dir is not None else None
        path = run.checkpoint(iteration) if run is not None else None
        if self.ranks.is_main:
            state = self.step.state_dict()
            save_checkpoint(path, {"iteration": state.pop("iteration"), "epoch": iteration // self.batches.per_epoch,
                                   "config": self.config.to_dict(), **state, **self.batches.cluster_state()})
            run.point_last(path)
            run.rotate(self.config.train.keep, path)
            export_generator(self.step.G_sample, self.config.model, run.generator, iteration)
        self.recorder.last_checkpoint, self.saved_at = path, iteration


class Batches:
    """This process' share of each global batch, in the epoch's order (see epoch_order)."""

    def __init__(self, dataset: ImageDataset, config: RunConfig, ranks: Ranks, device: torch.device) -> None:
        self.config, self.ranks, self.batch_size = config, ranks, config.train.batch_size
        self.per_epoch = len(dataset) // self.batch_size
        self.labels = conditional_labels(dataset, config, device)  # (N,) or None; --self-condition: cluster ids
        self.images = dataset.images.to(device)  # (N, [C,] 28, 28) uint8: the whole data set, resident on the device
        self.clusters: SelfConditioning | None = None  # --self-condition: set by start_clusters or load_clusters
        self._epoch, self._order = -1, torch.arange(0)

    def start_clusters(self, step: GanStep) -> None:
        """--self-condition: the first clustering, on the pixels (under the run's seed)."""
        model = self.config.model
        logger.info(f"self-conditioning: clustering {len(self.images)} images into {model.self_condition} clusters")
        self._use(SelfConditioning.from_pixels(self.images.cpu(), model.self_condition, self.config.train.seed), step)

    def recluster(self, step: GanStep, iteration: int) -> None:
        """--recluster-every: cluster again on D's features, the ids kept by matching (see mnist_gan.gan.clusters)."""
        self.clusters.recluster(step.D, self.images, self.config.train.seed * 1_000_033 + iteration)
        self._use(self.clusters, step)

    def load_clusters(self, state: dict, source: Path) -> None:
        """A checkpoint's clusters (a self-conditioned run's); G's copy of their shares came with its weights."""
        k = self.config.model.self_condition
        if k:
            self.clusters = SelfConditioning.from_state(state.get("clusters"), len(self.images), k, source)
            self.labels = self.clusters.assignments.to(self.images.device)

    def _use(self, clusters: SelfConditioning, step: GanStep) -> None:
        """Train on these clusters' ids, and let G (and its average) draw them in proportion to their sizes."""
        self.clusters, self.labels = clusters, clusters.assignments.to(self.images.device)
        for G in filter(None, (step.G, step.G_ema)):
            G.cluster_weights.copy_(clusters.proportions())

    def cluster_state(self) -> dict:
        """What a checkpoint holds of the clusters: {"clusters": ...} for a self-conditioned run, else nothing."""
        return {} if self.clusters is None else {"clusters": self.clusters.state_dict()}

    def at(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The real images (B, C, 28, 28) in [-1, 1], channels-last, of `iteration`, and their labels (B,) for
        a conditional run (else None)."""
        epoch, index = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(len(self.images), epoch, self.config).to(self.images.device)
        batch = self.ranks.shard(self._order[index * self.batch_size:(index + 1) * self.batch_size])  # (B,)
        real = to_float(self.images[batch]).contiguous(memory_format=torch.channels_last)  # (B, 1, 28, 28)
        return real, None if self.labels is None else self.labels[batch]


def epoch_order(n: int, epoch: int, config: RunConfig) -> torch.Tensor:
    """The image order of one epoch: a function of (seed, epoch) alone, so a resumed run sees the same batches."""
    if not config.data.shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(config.train.seed * 1_000_003 + epoch))


def conditional_labels(dataset: ImageDataset, config: RunConfig, device: torch.device) -> torch.Tensor | None:
    """The data set's labels on the training device for a conditional run, else None."""
    if not config.model.conditional:
        return None
    if dataset.labels is None:
        raise MnistGanError(f"--conditional needs labelled images, and {dataset.source} has no labels "
                            "(use an IDX directory or .npz with labels, or a folder with one sub-folder per class)")
    labels = dataset.labels
    if int(labels.min()) < 0 or int(labels.max()) >= config.model.num_classes:
        raise MnistGanError(f"--conditional: labels range over {int(labels.min())}..{int(labels.max())}, "
                            f"outside 0..{config.model.num_classes - 1}; set --num-classes")
    return labels.to(device)


def _device_note(step: GanStep) -> str:
    device, precision, wanted = step.device, step.precision, step.config.train.precision
    why = " (auto: too small a step for bf16 to pay here)" if wanted == "auto" and precision == "fp32" and \
        resolve_precision("auto", device) == "bf16" else ""
    return (f"device {device}, precision {precision}{why}, {torch.get_num_threads()} CPU threads"
            + (", compiled" if step.compiled else ""))


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked at the end of each iteration, so a stop never splits a step."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __call__(self, signum, frame) -> None:
        if self.signal_name is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _should_stop(stop: StopRequest, deadline: float, ranks, at_log_step: bool, device: torch.device) -> bool:
    """A signal or --max-minutes ends the run; with several processes they agree at log steps, so all stop at
    the same iteration."""
    wanted = stop.signal_name is not None or time.perf_counter() >= deadline
    if not ranks.enabled:
        return wanted
    return at_log_step and ranks.any(wanted, device)
