"""`mnist-gan tune`: a hyper-parameter search with Optuna's ask-and-tell over a TuneSpace
(mnist_gan.settings.tune). Trials are asked for K at a time and trained together by the sweep engine
(mnist_gan.training.sweep.train_runs_together), each an ordinary run directory STUDY_DIR/trial-NNNN; every
evaluation is reported to Optuna, whose pruner may stop a trial there; a finished trial is told its figure at the
last evaluation, a pruned one PRUNED, a diverged one FAIL. The engine stacks runs that differ only in per-run
settings (learning rates, betas, seeds: mnist_gan.settings.sweep.PER_RUN), so the asked trials are trained in
groups that share every other setting: a search over the loss trains each loss's trials apart.

Storage (mnist_gan.training.tune_storage): STUDY_DIR/study.db (SQLite) by default, held by one process at a
time; a stopped or killed study resumes from it, the trials it left unfinished marked FAIL and their parameters
asked again. Any database Optuna supports may be named instead (PostgreSQL for several machines on one study);
there a worker's trials carry a heartbeat, and a trial whose heartbeat stops (its worker killed) is failed and
asked again by the next worker to look, after a grace period, as Optuna recommends.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from mnist_gan.errors import MnistGanError
from mnist_gan.io.files import check_writable
from mnist_gan.settings.sweep import ON_OFF, PER_RUN
from mnist_gan.settings.tune import Parameter, TuneSpace
from mnist_gan.settings.validation import validate
from mnist_gan.training.tune_storage import (
    as_stored,
    fail_and_retry,
    heartbeats,
    open_storage,
    quiet_optuna,
    retry_abandoned,
    shown_url,
    sqlite_lock,
    sqlite_path,
)

logger = logging.getLogger(__name__)

STUDY_FILE = "study.db"  # the default storage, inside the study directory
HEARTBEAT_SECONDS = 60  # a shared storage's heartbeat; a trial silent for twice this is a dead worker's
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # recorded with each trial: who trained it


@dataclass
class StudyResult:
    name: str
    storage: str
    trials: list  # optuna FrozenTrials, by number
    best: object | None  # the best complete FrozenTrial
    study: object  # the optuna Study, for the plots


def run_study(space: TuneSpace, study_dir: str | Path, storage: str | None = None, *, trials: int | None = None,
              batch: int | None = None, heartbeat_seconds: int = HEARTBEAT_SECONDS) -> StudyResult:
    """Run `space`'s study until it holds `trials` (default: the space's) complete, pruned or running trials,
    asking `batch` (K) at a time; return every trial and the best. Run directories go to `study_dir`."""
    optuna = require_optuna()
    study_dir = Path(study_dir)
    check_writable(study_dir, "choose another study directory")
    url = storage or f"sqlite:///{(study_dir / STUDY_FILE).absolute()}"
    trials, batch = trials or space.trials, batch or space.batch
    with contextlib.ExitStack() as stack:
        stack.enter_context(quiet_optuna(optuna))
        exclusive = sqlite_path(url) is not None  # a SQLite file: this process alone (see sqlite_lock)
        study_dir.mkdir(parents=True, exist_ok=True)
        if exclusive:
            stack.enter_context(sqlite_lock(sqlite_path(url)))
        study = open_study(optuna, space, url, heartbeat=None if exclusive else heartbeat_seconds)
        if exclusive:  # we hold the file: whatever is RUNNING there was left by a stopped process
            retry_abandoned(optuna, study)
        while True:
            if not exclusive:
                optuna.storages.fail_stale_trials(study)  # trials of killed workers, after the grace period
            asked = _ask(optuna, study, space, trials, batch)
            if not asked:
                break
            _run_batch(optuna, study, space, asked, study_dir)
        everything = study.get_trials(deepcopy=False)
        complete = [t for t in everything if t.state == optuna.trial.TrialState.COMPLETE]
        return StudyResult(space.name, shown_url(url), everything, study.best_trial if complete else None, study)


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise MnistGanError("mnist-gan tune needs Optuna: pip install 'mnist-gan[tune]'") from None
    return optuna


def open_study(optuna, space: TuneSpace, url: str, heartbeat: int | None):
    """The study named space.name in `url` (created if new), checked to search the same space."""
    storage = open_storage(optuna, url, heartbeat)
    # Steps are iterations; Optuna's pruner may act at a step >= n_warmup_steps, so a trial's first
    # warmup_evaluations evaluations never prune it.
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=space.pruning.startup_trials,
        n_warmup_steps=space.pruning.warmup_evaluations * space.objective.eval_every + 1) \
        if space.pruning.enabled else optuna.pruners.NopPruner()
    try:
        study = optuna.create_study(study_name=space.name, storage=storage, load_if_exists=True,
                                    direction=space.objective.direction, pruner=pruner)
    except Exception as error:  # noqa: BLE001 - a database's errors: say them in one line
        raise MnistGanError(f"cannot open study {space.name!r} in {shown_url(url)}: {error}") from None
    identity = study.user_attrs.get("space")
    if identity is None:
        study.set_user_attr("space", space.identity())
    elif identity != as_stored(space.identity()):
        raise MnistGanError(f"study {space.name!r} in {shown_url(url)} searches another space (other params, "
                            f"objective, preset or fixed settings); give this one another name")
    # The sampler's seed: the space's, moved on by the trials already there (a resumed study draws new points);
    # workers sharing a storage also differ by process, or two starting together would draw the same points.
    seed = space.seed + len(study.trials) + (0 if heartbeat is None else os.getpid())
    kind = optuna.samplers.TPESampler if space.sampler == "tpe" else optuna.samplers.RandomSampler
    study.sampler = kind(seed=seed % 2**32)
    return study


def _ask(optuna, study, space: TuneSpace, trials: int, batch: int) -> list:
    """Up to `batch` new trials with their parameters, while the study holds fewer than `trials` (complete,
    pruned, running or failed; a failed trial asked again counts once, and comes back with its parameters)."""
    everything = study.get_trials(deepcopy=False)
    retried = {number for t in everything for number in t.system_attrs.get("retry_history", [])}
    held = sum(1 for t in everything if t.state != optuna.trial.TrialState.WAITING and t.number not in retried)
    asked = []
    for _ in range(max(0, min(batch, trials - held))):
        trial = study.ask()
        for parameter in space.params:
            _suggest(trial, parameter)
        asked.append(trial)
    return asked


def _suggest(trial, parameter: Parameter) -> object:
    if parameter.kind == "categorical":
        return trial.suggest_categorical(parameter.name, list(parameter.choices))
    if parameter.kind == "int":
        return trial.suggest_int(parameter.name, parameter.low, parameter.high, log=parameter.log)
    return trial.suggest_float(parameter.name, parameter.low, parameter.high, log=parameter.log)


def _run_batch(optuna, study, space: TuneSpace, asked: list, study_dir: Path) -> None:
    """The asked trials, group by group, with every one's heartbeat kept meanwhile (a shared storage); a stop
    or an error fails each trial still unfinished, and its parameters are asked again when the study resumes."""
    try:
        with heartbeats(study, asked):
            for group in _stackable_groups(space, asked):
                _run_group(optuna, study, space, group, study_dir)
    except BaseException:
        for trial in asked:
            if study._storage.get_trial(trial._trial_id).state == optuna.trial.TrialState.RUNNING:
                fail_and_retry(optuna, study, trial)
        raise


def _stackable_groups(space: TuneSpace, asked: list) -> list[list]:
    """The asked trials in groups the sweep engine can train as one stack: equal in every searched setting
    that is not per-run, and each switchable term (ON_OFF: the EMA, R1, ...) on in all or off in all."""
    groups: dict[tuple, list] = {}
    for trial in asked:
        shared = tuple(repr(trial.params[p.name]) for p in space.params if p.name not in PER_RUN)
        train = space.config_for(trial.params).train
        switched = tuple(bool(getattr(train, key.split(".")[1])) for key in ON_OFF)
        groups.setdefault((shared, switched), []).append(trial)
    return list(groups.values())


def _run_group(optuna, study, space: TuneSpace, asked: list, study_dir: Path) -> None:
    """Train the trials of one group together, reporting each evaluation, and tell Optuna how each ended."""
    from mnist_gan.training.sweep import train_runs_together

    states, figure = optuna.trial.TrialState, space.objective.figure
    ready, configs, run_dirs = [], [], []
    for trial in asked:
        config = space.config_for(trial.params)
        run_dir = study_dir / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.absolute()))
        trial.set_user_attr("worker", WORKER)
        try:
            validate(config, training=True)
        except MnistGanError as error:  # a pair of settings no run accepts: this trial fails, not the batch
            logger.warning(f"trial {trial.number}: {error}")
            trial.set_user_attr("error", str(error))
            study.tell(trial, state=states.FAIL)
            continue
        ready.append(trial)
        configs.append(config)
        run_dirs.append(run_dir)
    if not ready or not _stackable(optuna, study, ready, configs):
        return
    logger.info(f"trials {', '.join(str(t.number) for t in ready)}: training together")

    def on_evaluation(index: int, iteration: int, figures: dict[str, float]) -> bool:
        value = figures.get(figure)
        if value is None or not math.isfinite(value):
            return False
        ready[index].report(float(value), iteration)
        return ready[index].should_prune()

    outcomes = train_runs_together(configs, run_dirs, on_evaluation=on_evaluation)
    for trial, outcome in zip(ready, outcomes, strict=True):
        _tell(optuna, study, trial, outcome, figure)
    if any(outcome.status == "interrupted" for outcome in outcomes):  # a signal: the study stops here
        raise KeyboardInterrupt(f"(the study resumes with: mnist-gan tune ... --out {study_dir})")


def _stackable(optuna, study, trials: list, configs: list) -> bool:
    """Whether the sweep engine can train these runs; if not (a setting it does not stack, such as --compile),
    the trials fail with its reason, and are not asked again."""
    from mnist_gan.gan.stacked import check_stackable

    try:
        check_stackable(configs)
    except MnistGanError as error:
        for trial in trials:
            logger.warning(f"trial {trial.number}: {error}")
            trial.set_user_attr("error", str(error))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return False
    return True


def _tell(optuna, study, trial, outcome, figure: str) -> None:
    states = optuna.trial.TrialState
    values = [e[figure] for e in outcome.evaluations if isinstance(e.get(figure), (int, float))]
    trial.set_user_attr("status", outcome.status)
    trial.set_user_attr("iterations", outcome.iterations)
    if outcome.status == "interrupted":  # stopped by a signal: asked again when the study resumes
        fail_and_retry(optuna, study, trial)
    elif outcome.status == "stopped":
        study.tell(trial, state=states.PRUNED)
        logger.info(f"trial {trial.number}: pruned at iteration {outcome.iterations}")
    elif outcome.status == "finished" and values and math.isfinite(values[-1]):
        study.tell(trial, float(values[-1]))
        logger.info(f"trial {trial.number}: {figure} {values[-1]:.4g} after {outcome.iterations} iterations")
    else:
        study.tell(trial, state=states.FAIL)
        logger.warning(f"trial {trial.number}: {outcome.status}" + ("" if values else f", no {figure} to score"))


