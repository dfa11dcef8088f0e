"""What a run writes while it trains: metrics.jsonl, the progress bar, the diagnosis' warnings, the sample grids,
progress.gif, losses.png, the periodic evaluations (--eval-every) and, with --tensorboard, the same figures,
warnings and grids as TensorBoard events (see mnist_gan.training.tensorboard).

Every metrics.jsonl line is one JSON object with a `kind`: "train" (the losses and D's scores averaged over the
iterations since the previous line, and the probes' fields: gradient norms, and every PROBE_EVERY iterations the
samples' class histogram and D's scores of training and held-out reals; see mnist_gan.diagnosis.probes) or "eval"
(sample-quality figures). Read the kind with `record_kind`, which also classifies lines written before the field
existed. The diagnosis runs on each grid, each train line and each evaluation; a problem it newly raises is
logged once (a warning) and its code goes into the `warnings` list of the next line written. The epoch summaries
are logged too (INFO); the `mnist_gan` logger's own handler writes through tqdm, so the bar is redrawn below them.

Under torchrun rank 0 records with a `Recorder`; the other ranks use a `NullRecorder`, which writes nothing and
runs no probe.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mnist_gan.data.images import ImageDataset
from mnist_gan.diagnosis.detectors import (
    Problem,
    divergence_hint,
    evaluation_problems,
    record_problems,
    sample_problems,
)
from mnist_gan.diagnosis.loss_plot import plot_losses
from mnist_gan.diagnosis.probes import RunProbes
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.step import GanStep
from mnist_gan.run.directory import RunDir
from mnist_gan.run.history import CLASS_PROBE, CLASS_REFERENCE, SeriesBuilder, newest
from mnist_gan.run.records import EVAL, TRAIN, format_line, record_kind
from mnist_gan.sampling.grids import save_grid
from mnist_gan.sampling.sample import grid_inputs, save_gif
from mnist_gan.training.tensorboard import NullBoard, open_board

logger = logging.getLogger(__name__)

GRID_SIZE = 64  # an 8x8 grid from one fixed noise batch, so frames compare


def last_good(checkpoint: Path | None) -> str:
    return f"the last good checkpoint, {checkpoint}, is kept" if checkpoint else "no checkpoint was written"


class NullRecorder:
    """Records nothing: the recorder of ranks > 0 under torchrun, where rank 0 writes the run.

    It still does what every rank must do at the same point: at each log step, average the window's losses over
    the ranks (a collective) and check they are finite, so all ranks stop together when training diverges.
    """

    def __init__(self, step: GanStep, run_dir: Path | None, dataset: ImageDataset, *, start: int, total: int,
                 history: list[dict] | None = None, progress: bool = True) -> None:
        self.step, self.run_dir, self.config, self.ranks = step, run_dir, step.config, step.ranks
        self.start, self.total = start, total
        self.batches_per_epoch = len(dataset) // self.config.train.batch_size
        self.window: list[torch.Tensor] = []  # (4,) per iteration since the last log (see GanStep), on the device
        self.last_checkpoint: Path | None = None  # the newest checkpoint known to be good
        self.history: list[dict] = []  # train lines, oldest first
        self.evaluations: list[dict] = []  # eval lines, oldest first

    def __enter__(self) -> NullRecorder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Release what the recorder holds open (nothing here)."""

    def after_step(self, iteration: int, stats: torch.Tensor) -> None:
        """Take the figures (4,) of the step that completed `iteration`; log at each log step and at the end."""
        self.window.append(stats)
        if iteration % self.config.train.log_every == 0 or iteration == self.total:
            self.log(iteration)

    def log(self, iteration: int) -> torch.Tensor:
        """Average the window over the ranks, check it and empty it; return the averages (window, 4)."""
        values = self.ranks.mean(torch.stack(self.window))  # (window, 4)
        self.check_losses(iteration, values)
        self.window.clear()
        return values

    def check_losses(self, iteration: int, values: torch.Tensor | None = None) -> None:
        """Raise MnistGanError if a loss in `values` (window, 4), the iterations up to `iteration` (by default
        those not yet logged), is NaN or infinite: a state that such a loss has spoilt is never saved."""
        if values is None:
            if not self.window:
                return
            values = torch.stack(self.window)
        finite = torch.isfinite(values[:, :2]).all(1)  # (window,)
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0])
        loss_d, loss_g = values[first, :2].tolist()
        raise MnistGanError(f"training diverged: non-finite loss at iteration {iteration - len(values) + first + 1}"
                            f" (d_loss={loss_d}, g_loss={loss_g}); stopped without saving; "
                            f"{last_good(self.last_checkpoint)}; {divergence_hint(self.config)}")

    def end(self, iteration: int, interrupted: bool) -> None:
        """The loop has ended at `iteration`: log what the last window holds."""
        if self.window:  # stopped between log steps (signal or --max-minutes)
            self.log(iteration)

    def finish(self, iteration: int) -> None:
        """The final state is saved: draw and plot what the run ends with (nothing here)."""


class Recorder(NullRecorder):
    """Writes the run's record into `run_dir` as it trains. Use as a context manager (it holds metrics.jsonl
    open). `history` holds the lines of a resumed run that stay (see training's metrics truncation)."""

    def __init__(self, step: GanStep, run_dir: Path, dataset: ImageDataset, *, start: int, total: int,
                 history: list[dict] | None = None, progress: bool = True) -> None:
        super().__init__(step, run_dir, dataset, start=start, total=total)
        self.dataset, self.progress = dataset, progress
        self.history = [r for r in history or [] if record_kind(r) == TRAIN]
        self.evaluations = [r for r in history or [] if record_kind(r) == EVAL]
        self.series = SeriesBuilder(self.history)  # the train lines as arrays, for the checks at each log step
        # the data's own class mix and how the probe reads classes: logged once, at a run's first class probe
        self.class_reference = newest(self.history, CLASS_REFERENCE), newest(self.history, CLASS_PROBE)
        self.run = RunDir(run_dir)
        self.metrics_path = self.run.metrics
        self.fixed_z, self.fixed_labels = grid_inputs(GRID_SIZE, self.config.model, self.config.train.seed + 1,
                                                      step.device)
        self.monitor, self.pending_problems = Monitor(), []  # warnings not yet attached to a metrics line
        self.epoch_records: list[dict] = []  # train lines of the epoch in progress
        self.postfix, self.window_start = "", time.perf_counter()
        self.metrics_file = self.bar = self.evaluator = self.probes = None
        self.board = NullBoard()  # TensorBoard events, with --tensorboard (opened with the run)

    def __enter__(self) -> Recorder:
        self.metrics_file = open(self.metrics_path, "a", encoding="utf-8")
        try:
            return self._begin()
        except BaseException:
            self.close()
            raise

    def _begin(self) -> Recorder:
        """The TensorBoard events (with --tensorboard), the evaluator's real-image features (with --eval-every),
        the probes, the first grid and the progress bar."""
        self.board = open_board(self.run_dir, self.config, self.start)
        if self.config.train.eval_every and self.start < self.total:
            from mnist_gan.evaluation.evaluator import Evaluator

            # the real images' features, once
            self.evaluator = Evaluator.for_dataset(self.dataset, self.config.data.cache_dir, device=self.step.device)
        if self.start < self.total:
            self.probes = RunProbes(self.step, self.dataset, self.evaluator.classifier if self.evaluator else None)
        if self.start == 0 and self.total > 0:
            self.grid(0)
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=self.start, disable=not self.progress, unit="it",
                        dynamic_ncols=True, file=sys.stderr)
        self.window_start = time.perf_counter()
        return self

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.metrics_file is not None:
            self.metrics_file.close()
        self.board.close()

    def after_step(self, iteration: int, stats: torch.Tensor) -> None:
        """Also: draw a grid, evaluate, advance the progress bar and summarise the epoch at their intervals."""
        train = self.config.train
        if train.sample_every and iteration % train.sample_every == 0:
            self.grid(iteration)  # first, so that the line logged at this iteration carries what the grid showed
        super().after_step(iteration, stats)
        if self.evaluator is not None and iteration % train.eval_every == 0:
            self.evaluate(iteration)
        self.bar.update(1)
        if iteration % self.batches_per_epoch == 0 and self.epoch_records:
            logger.info(_epoch_summary(iteration // self.batches_per_epoch, self.epoch_records))
            self.epoch_records = []

    def log(self, iteration: int) -> torch.Tensor:
        """Also: probe, check the history, write a train line (with the warnings raised since the last line) and
        show it on the bar."""
        values = super().log(iteration)  # (window, 4)
        record = _train_record(values.mean(0), iteration, self.batches_per_epoch,
                               self.config.train.batch_size * len(values), time.perf_counter() - self.window_start)
        if self.probes is not None:  # right after the step: the gradients are still those of its updates
            record |= self.probes(iteration)
        self.history.append(record)
        self.series.append(record)
        if CLASS_REFERENCE in record:
            self.class_reference = record[CLASS_REFERENCE], record[CLASS_PROBE]
        self.report("losses", record_problems(self.series.series(), self.step.loss.absolute_score,
                                              *self.class_reference, config=self.config), iteration)
        self.write(self.with_warnings(record))
        self.board.figures(record)
        self.epoch_records.append(record)
        self.postfix = _postfix(record)
        self.bar.set_postfix_str(self.postfix + _fid_text(self.evaluations), refresh=False)
        self.window_start = time.perf_counter()
        return values

    def evaluate(self, iteration: int) -> None:
        """Score samples of G (its average, with --ema-decay), check the evaluations and write an eval line."""
        figures = _eval_record(self.evaluator, self.step, iteration, self.batches_per_epoch)
        self.evaluations.append(figures)
        reference, kind = self.class_reference  # the probe's reference is the evaluator's only if it read classes
        self.report("evaluations", evaluation_problems(self.evaluations, reference if kind == "classes" else None,
                                                       config=self.config), iteration)
        self.write(self.with_warnings(figures))
        self.board.figures(figures)
        self.bar.set_postfix_str(self.postfix + _fid_text(self.evaluations), refresh=False)

    def with_warnings(self, record: dict) -> dict:
        """`record` with the codes of the problems raised since the last line written, as its `warnings`."""
        if self.pending_problems:
            record["warnings"] = self.pending_problems[:]
            self.pending_problems.clear()
        return record

    def write(self, record: dict) -> None:
        """Append one whole line to metrics.jsonl (a resume drops a half line a kill may leave); a non-finite
        figure (an evaluation's NaN) is written as null, so the file stays strict JSON."""
        try:
            self.metrics_file.write(format_line(record))
            self.metrics_file.flush()
        except OSError as error:
            raise MnistGanError(f"{self.metrics_path}: cannot write ({error.strerror or error})") from None

    def report(self, source: str, problems: list, iteration: int) -> None:
        """Warn of each newly raised problem once, and attach its code to the next line written."""
        new = self.monitor.update(source, problems)
        for problem in new:
            logger.warning(f"warning at iteration {iteration}: {problem.message}")
            self.pending_problems.append(problem.code)
        self.board.problems(iteration, new)

    def grid(self, iteration: int) -> None:
        """samples/iter_NNNNNNNN.png from the fixed noise (conditional: one row per class), and its diagnosis."""
        G_sample = self.step.G_sample
        G_sample.eval()
        with torch.no_grad():
            images = G_sample(self.fixed_z, self.fixed_labels).float()  # (64, 1, 28, 28); conditional (8C, ...)
        self.step.G.train()
        save_grid(images, self.run.grid(iteration), nrow=8)
        self.board.grid(iteration, images)
        if iteration > 0:
            self.report("grids", sample_problems(images, self.config), iteration)

    def end(self, iteration: int, interrupted: bool) -> None:
        """Also: a last evaluation (unless stopped by a signal), and close the progress bar."""
        super().end(iteration, interrupted)
        if self.evaluator is not None and iteration > self.start and not interrupted and \
                (not self.evaluations or self.evaluations[-1]["iteration"] != iteration):
            self.evaluate(iteration)
        self.bar.close()

    def finish(self, iteration: int) -> None:
        """The last grid (unless just drawn), progress.gif and losses.png."""
        sample_every = self.config.train.sample_every
        if not (sample_every and iteration % sample_every == 0) and iteration > self.start:
            self.grid(iteration)
        grids = self.run.grids()
        save_gif([grids[step] for step in sorted(grids)], self.run.progress_gif)
        if self.history:
            plot_losses(self.history, self.run.losses_plot, self.evaluations)


@dataclass
class Monitor:
    """Remembers which warnings are active so each is reported once per occurrence."""

    active: set[str] = field(default_factory=set)

    def update(self, source: str, warnings: list[Problem]) -> list[Problem]:
        """Record the current warnings from one source ('grids', 'losses', ...); return the newly raised ones."""
        codes = {w.code for w in warnings}
        mine = {c for c in self.active if c.startswith(source + ":")}
        self.active -= {c for c in mine if c.split(":", 1)[1] not in codes}
        new = [w for w in warnings if f"{source}:{w.code}" not in self.active]
        self.active |= {f"{source}:{w.code}" for w in warnings}
        return new


def _train_record(means: torch.Tensor, iteration: int, batches_per_epoch: int, images: int, seconds: float) -> dict:
    d_loss, g_loss, d_real, d_fake = means.tolist()
    return {"kind": TRAIN, "iteration": iteration, "epoch": (iteration - 1) // batches_per_epoch + 1,
            "d_loss": d_loss, "g_loss": g_loss, "d_x": d_real, "d_g_z": d_fake,
            "images_per_s": images / max(seconds, 1e-9), "time": time.time()}


def _eval_record(evaluator, step: GanStep, iteration: int, batches_per_epoch: int) -> dict:
    """Score TRAINING_EVAL_SAMPLES samples of the step's G_sample (same noise every time, so the figures compare)."""
    from mnist_gan.evaluation.evaluator import TRAINING_EVAL_SAMPLES, TRAINING_KID_SUBSETS

    config = step.config
    result = evaluator.evaluate_generator(step.G_sample, config.model, TRAINING_EVAL_SAMPLES, seed=config.train.seed,
                                          kid_subsets=TRAINING_KID_SUBSETS)
    keep = ("fid", "kid", "kid_std", "classifier_score", "confidence", "classes_covered", "class_kl", "precision",
            "recall", "density", "coverage", "memorization", "class_histogram")
    return {"kind": EVAL, "iteration": iteration, "epoch": (iteration - 1) // batches_per_epoch + 1,
            **{key: result[key] for key in keep}, "eval_n": result["n"], "eval_seconds": result["seconds"],
            "time": time.time()}


def _postfix(record: dict) -> str:
    return (f"ep {record['epoch']} d_loss {record['d_loss']:.4f} g_loss {record['g_loss']:.4f} "
            f"D(x) {record['d_x']:.3f} D(G(z)) {record['d_g_z']:.3f}")


def _fid_text(evaluations: list[dict]) -> str:
    return f" FID {evaluations[-1]['fid']:.2f}" if evaluations else ""


def _epoch_summary(epoch: int, records: list[dict]) -> str:
    mean = {k: sum(r[k] for r in records) / len(records) for k in ("d_loss", "g_loss", "d_x", "d_g_z", "images_per_s")}
    return (f"epoch {epoch}: d_loss {mean['d_loss']:.4f}  g_loss {mean['g_loss']:.4f}  D(x) {mean['d_x']:.3f}  "
            f"D(G(z)) {mean['d_g_z']:.3f}  {mean['images_per_s']:.0f} img/s  (through iteration {records[-1]['iteration']})")
