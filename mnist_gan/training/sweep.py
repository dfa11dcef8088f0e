"""train_runs_together(configs, run_dirs): K runs of one architecture trained in one process as one batched
computation (mnist_gan.gan.stacked.StackedStep), each written as an ordinary run directory.

Every run is built as `train` builds it (its GanStep seeded and initialised as a single run's, its own Batches,
Recorder and checkpoints), so generate, evaluate, diagnose, serve, export and `train --resume RUN` work on each
unchanged. Only the step is shared: the stacked weights are copied back into a run's GanStep when its files are
written (a log line, grid, evaluation or checkpoint). torch's global RNG is per run too: each run's state is
swapped in around whatever that run does, so its checkpoints hold the RNG state a single run's would.

A run whose loss turns non-finite is stopped and marked "diverged" (its last good checkpoint kept); the others go
on. `resume_runs_together(run_dirs)` continues the runs after a kill, each from its newest checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mnist_gan.errors import MnistGanError
from mnist_gan.gan.stacked import StackedStep, check_fits, check_stackable
from mnist_gan.run.checkpoint import check_config_edits
from mnist_gan.run.directory import RunDir
from mnist_gan.settings.config import RunConfig
from mnist_gan.training.loop import StopRequest, _build, _Run, _saved_run
from mnist_gan.training.recorder import Recorder

logger = logging.getLogger(__name__)

# The keys of an eval line that are not figures of sample quality
NOT_FIGURES = ("kind", "iteration", "epoch", "time", "eval_n", "eval_seconds", "warnings", "class_histogram")
OnEvaluation = Callable[[int, int, dict[str, float]], bool]


@dataclass
class SweepRunOutcome:
    """What one run of a sweep ended as."""

    run_dir: Path
    status: str  # "finished" | "diverged" | "stopped" (stopped by on_evaluation) | "interrupted" (a signal)
    iterations: int  # iterations this run completed
    evaluations: list[dict] = field(default_factory=list)  # {"iteration": int, "fid": float, ...}, in order


def figures_of(record: dict) -> dict[str, float]:
    """The numeric figures of an eval line: {"fid": ..., "kid": ...}."""
    return {key: float(value) for key, value in record.items()
            if key not in NOT_FIGURES and isinstance(value, (int, float)) and not isinstance(value, bool)}


@dataclass
class _Member:
    """One run of the sweep as it trains: the ordinary run, what it holds open, and its own global RNG state."""

    index: int
    run: _Run
    resources: contextlib.ExitStack
    iteration: int
    rng: torch.Tensor
    history: list[dict] | None = None
    checkpoint: Path | None = None
    status: str = "running"
    evaluated: int = 0  # evaluations already passed to on_evaluation

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """torch's global RNG is this run's inside the block."""
        torch.set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = torch.get_rng_state()

    def outcome(self) -> SweepRunOutcome:
        evaluations = [{"iteration": r["iteration"], **figures_of(r)} for r in self.run.recorder.evaluations] \
            if self.run.recorder is not None else []
        return SweepRunOutcome(self.run.run_dir, self.status, self.iteration, evaluations)


def train_runs_together(configs: Sequence[RunConfig], run_dirs: Sequence[str | Path], *, overwrite: bool = False,
                        on_evaluation: OnEvaluation | None = None, progress: bool = False
                        ) -> list[SweepRunOutcome]:
    """Train len(configs) runs as one batched computation; on_evaluation(run_index, iteration, figures) is called
    after each run's evaluation (config.train.eval_every) and returning True stops that run (status "stopped").
    A sweep trains in fp32: `--precision auto` means fp32 here (and the runs' config.json says so)."""
    configs = [_fp32_for_auto(config) for config in configs]
    if len(configs) != len(run_dirs):
        raise MnistGanError(f"{len(configs)} configs but {len(run_dirs)} run directories")
    if len({str(Path(d).resolve()) for d in run_dirs}) < len(run_dirs):
        raise MnistGanError("two runs of the sweep share one run directory")
    check_stackable(configs)
    for config, out in zip(configs, run_dirs, strict=True):
        RunDir(out).check_new(overwrite, config.data)  # refuse before the (slow) data load
    with contextlib.ExitStack() as resources:
        members, datasets = [], {}
        for index, (config, out) in enumerate(zip(configs, run_dirs, strict=True)):
            held = resources.enter_context(contextlib.ExitStack())
            run = _shared_build(config, datasets)
            if index == 0:
                check_fits(run.step, len(configs))  # before any directory is made
            run.run_dir = held.enter_context(RunDir(out).create(config, overwrite=overwrite)).path
            members.append(_Member(index, run, held, 0, torch.get_rng_state()))
        return _carry_out(members, on_evaluation, progress)


def resume_runs_together(run_dirs: Sequence[str | Path], *, on_evaluation: OnEvaluation | None = None,
                         progress: bool = False) -> list[SweepRunOutcome]:
    """Continue the runs in `run_dirs` together, each from its newest complete checkpoint (as `resume` does)."""
    with contextlib.ExitStack() as resources:
        members, datasets = [], {}
        for index, run_dir in enumerate(run_dirs):
            held = resources.enter_context(contextlib.ExitStack())
            members.append(_reopen(index, Path(run_dir), held, datasets))
        check_stackable([m.run.config for m in members])
        check_fits(members[0].run.step, len(members))
        return _carry_out(members, on_evaluation, progress)


def _fp32_for_auto(config: RunConfig) -> RunConfig:
    """`config`, or a copy in fp32 where it leaves the precision to the device (vmap's batched convolutions
    ignore bf16 autocast, so a sweep cannot use it)."""
    if config.train.precision != "auto":
        return config
    copy = RunConfig.from_dict(config.to_dict())
    copy.train.precision = "fp32"
    return copy


def _shared_build(config: RunConfig, datasets: dict) -> _Run:
    """loop._build, the data set loaded once for all runs that name the same data."""
    key = json.dumps(dataclasses.asdict(config.data), sort_keys=True)
    run = _build(config, datasets.get(key))
    datasets[key] = run.dataset
    return run


def _reopen(index: int, run_dir: Path, held: contextlib.ExitStack, datasets: dict) -> _Member:
    """loop.resume's opening of one run: lock, newest checkpoint, its state restored, metrics cut back to it."""
    if not run_dir.is_dir():
        raise MnistGanError(f"{run_dir} is not a run directory")
    saved = RunDir(run_dir)
    held.enter_context(saved.reopened())
    checkpoint, state, config = _saved_run(saved)
    if state is not None:
        check_config_edits(saved.config_file, config, checkpoint, False)
    run = _shared_build(config, datasets)
    saved.record_config(config)
    run.run_dir, start = run_dir, 0
    if state is not None:
        run.step.load_state_dict(state, checkpoint)  # the run's global RNG too
        run.batches.load_clusters(state, checkpoint)
        start = run.saved_at = state["iteration"]
    history = saved.truncate_metrics(start)
    return _Member(index, run, held, start, torch.get_rng_state(), history, checkpoint if state else None)


def _carry_out(members: list[_Member], on_evaluation: OnEvaluation | None, progress: bool) -> list[SweepRunOutcome]:
    """Train the members together until each ends (its length, a signal, --max-minutes, divergence or
    on_evaluation); return their outcomes in order."""
    with StopRequest().installed() as stop:  # to the end: the last runs' final files included
        return _carry_out_until_stopped(members, stop, on_evaluation, progress)


def _carry_out_until_stopped(members: list[_Member], stop: StopRequest, on_evaluation: OnEvaluation | None,
                             progress: bool) -> list[SweepRunOutcome]:
    for member in members:
        _open(member, progress)
    logger.info(f"sweep: {len(members)} runs trained together")
    active = [m for m in members if m.status == "running"]
    started = time.perf_counter()
    while active:
        engine = StackedStep([m.run.step for m in active], own_rng=[m.own_rng for m in active])
        while not any(_over(m, stop, started) for m in active):
            stats = engine([m.run.batches.at(m.iteration) for m in active])  # (K, 4)
            for k, member in enumerate(active):
                member.iteration += 1
                if _writes_files(member):
                    engine.write_back([k])
                _after_step(member, stats[k], on_evaluation)
                if _reclusters(member):  # it set the clusters' shares in the run's own G
                    engine.read_buffers(k)
            if any(m.status != "running" for m in active):
                break
        engine.write_back()
        for member in active:
            if member.status == "running" and _over(member, stop, started):
                member.status = "interrupted" if stop.signal_name is not None else "finished"  # or --max-minutes
            if member.status != "diverged" and member.status != "running":
                _end(member, interrupted=stop.signal_name is not None)
        active = [m for m in active if m.status == "running"]
    if stop.signal_name is not None:
        logger.warning(f"stopped by {stop.signal_name}; continue with: mnist-gan sweep --resume")
    return [m.outcome() for m in members]


def _open(member: _Member, progress: bool) -> None:
    """What loop._Run.carry_out does before its loop: the first clustering and the recorder."""
    run = member.run
    with member.own_rng():
        if run.config.model.self_condition and run.batches.clusters is None:
            run.batches.start_clusters(run.step)
        run.recorder = member.resources.enter_context(
            Recorder(run.step, run.run_dir, run.dataset, start=member.iteration, total=run.total,
                     history=member.history, progress=progress and member.index == 0))
    run.recorder.last_checkpoint = member.checkpoint
    member.evaluated = len(run.recorder.evaluations)
    if member.iteration >= run.total:
        member.status = "finished"


def _over(member: _Member, stop: StopRequest, started: float) -> bool:
    minutes = member.run.config.train.max_minutes
    return member.iteration >= member.run.total or stop.signal_name is not None or \
        (minutes is not None and time.perf_counter() - started >= 60 * minutes)


def _writes_files(member: _Member) -> bool:
    """Whether the recorder or a checkpoint reads the run's GanStep after this iteration."""
    train, iteration = member.run.config.train, member.iteration
    return iteration >= member.run.total or any(every and iteration % every == 0 for every in (
        train.log_every, train.sample_every, train.eval_every, train.checkpoint_every)) or _reclusters(member)


def _reclusters(member: _Member) -> bool:
    """Whether --recluster-every clusters the run's images again (on D's current features) after this
    iteration."""
    every = member.run.config.train.recluster_every
    return bool(every and member.run.batches.clusters is not None and member.iteration % every == 0)


@contextlib.contextmanager
def _marked_if_diverged(member: _Member) -> Iterator[None]:
    """Run the block with the run's own global RNG; a run found diverged (a non-finite loss or weight) is marked
    "diverged" instead of ending the sweep, so the other runs go on."""
    try:
        with member.own_rng():
            yield
    except MnistGanError as error:
        if not str(error).startswith("training diverged"):
            raise
        logger.warning(f"run {member.index} ({member.run.run_dir}): {error}")
        member.status = "diverged"


def _after_step(member: _Member, stats: torch.Tensor, on_evaluation: OnEvaluation | None) -> None:
    """The run's recorder and checkpoint after an iteration (loop._Run.loop's body); a non-finite loss or weight
    marks it diverged, and on_evaluation may stop it."""
    run, iteration = member.run, member.iteration
    with _marked_if_diverged(member):
        run.recorder.after_step(iteration, stats)
        if _reclusters(member):
            run.batches.recluster(run.step, iteration)
        every = run.config.train.checkpoint_every
        if every and iteration % every == 0:
            run.checkpoint(iteration)
    if member.status == "diverged":
        member.resources.close()
        return
    evaluations = run.recorder.evaluations
    while member.evaluated < len(evaluations):
        record = evaluations[member.evaluated]
        member.evaluated += 1
        if on_evaluation is not None and on_evaluation(member.index, record["iteration"], figures_of(record)):
            member.status = "stopped"


def _end(member: _Member, interrupted: bool) -> None:
    """What loop._Run.carry_out does after its loop: the last evaluation, checkpoint, grid and plots."""
    run, iteration = member.run, member.iteration
    with _marked_if_diverged(member):
        run.recorder.end(iteration, interrupted=interrupted)
        if run.saved_at != iteration:
            run.checkpoint(iteration)
        run.recorder.finish(iteration)
    member.resources.close()
    logger.info(f"run {member.index}: {member.status} at iteration {iteration}; run directory {run.run_dir}")


def status_line(outcomes: list[SweepRunOutcome]) -> str:
    """'3 finished, 1 diverged' for a list of outcomes."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "no runs"

