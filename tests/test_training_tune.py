"""`mnist-gan tune`: the search space file (strict reading, bad ranges refused), the study (ask-and-tell K trials
at a time, pruning at evaluations, resuming after an interruption or a kill, one process per SQLite file, an
unreachable storage in one line), a real tiny study of real runs, and two worker processes sharing one study in
a real PostgreSQL server (Debian's postgresql; under CI=true a missing server fails the test instead of
skipping it, as the browser tests do).

Most study tests put a stand-in for the sweep engine (mnist_gan.training.sweep.train_runs_together) whose figure
is a known function of each trial's settings, so the pruner's and the sampler's decisions can be checked without
training; the real study and the PostgreSQL workers train real runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import REPO, cli_env, one_error_line, untrained_classifier
from serve_browser import under_ci

optuna = pytest.importorskip("optuna", reason="mnist-gan tune needs the [tune] extra")

from mnist_gan.errors import MnistGanError  # noqa: E402
from mnist_gan.settings.tune import read_space, space_from_dict  # noqa: E402
from mnist_gan.training import sweep  # noqa: E402
from mnist_gan.training.sweep import SweepRunOutcome  # noqa: E402
from mnist_gan.training.tune import run_study  # noqa: E402
from mnist_gan.training.tune_storage import sqlite_lock  # noqa: E402

SPACE = """
name = "tiny"
preset = "dcgan"
trials = 5
batch = 2
seed = 3
sampler = "random"

[fixed]
width = 8
batch_size = 16
"train.device" = "cpu"

[objective]
iterations = 6
eval_every = 2

[pruning]
startup_trials = 2
warmup_evaluations = 0

[params.lr]
type = "float"
low = 1e-4
high = 1e-2
log = true

[params.train.ema_decay]
type = "categorical"
choices = [0.99, 0.999]
"""


def write_space(tmp_path: Path, text: str = SPACE, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def space(**changes):
    raw = {"preset": "dcgan", "trials": 5, "batch": 2, "seed": 3, "sampler": "random",
           "fixed": {"width": 8, "batch_size": 16, "device": "cpu"},
           "objective": {"iterations": 6, "eval_every": 2},
           "pruning": {"startup_trials": 2, "warmup_evaluations": 0},
           "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                      "ema_decay": {"type": "categorical", "choices": [0.99, 0.999]}}}
    raw.update(changes)
    return space_from_dict(raw, "tiny")


class FakeEngine:
    """Stands in for sweep.train_runs_together: no training; a run's figure at each evaluation is
    score(config, iteration). It makes each run directory, as a run would, and records the batches."""

    def __init__(self, score, interrupt_at_batch: int | None = None):
        self.score, self.interrupt_at_batch, self.batches = score, interrupt_at_batch, []

    def __call__(self, configs, run_dirs, *, overwrite=False, on_evaluation=None):
        self.batches.append([Path(d).name for d in run_dirs])
        if self.interrupt_at_batch == len(self.batches):
            raise KeyboardInterrupt
        outcomes = []
        for index, (config, run_dir) in enumerate(zip(configs, run_dirs, strict=True)):
            Path(run_dir).mkdir(parents=True)  # a trial's directory is always a new one
            status, evaluations = "finished", []
            for iteration in range(config.train.eval_every, config.train.iterations + 1, config.train.eval_every):
                figures = {"fid": self.score(config, iteration), "recall": 0.5}
                evaluations.append({"iteration": iteration, **figures})
                if not math.isfinite(figures["fid"]):
                    status = "diverged"
                    break
                if on_evaluation is not None and on_evaluation(index, iteration, figures):
                    status = "stopped"
                    break
            outcomes.append(SweepRunOutcome(Path(run_dir), status, iteration, evaluations))
        return outcomes


def by_lr(config, iteration):  # lower learning rates score better, and every run improves as it trains
    return 1000 * config.train.lr + 10 / iteration


def engine(monkeypatch, score=by_lr, **kwargs) -> FakeEngine:
    fake = FakeEngine(score, **kwargs)
    monkeypatch.setattr(sweep, "train_runs_together", fake)
    return fake


# ------------------------------------------------------------------------------------------ the space file

def test_a_space_file_is_read_with_the_settings_it_names(tmp_path):
    read = read_space(write_space(tmp_path))
    assert (read.name, read.preset, read.trials, read.batch, read.seed) == ("tiny", "dcgan", 5, 2, 3)
    assert [(p.name, p.kind) for p in read.params] == [("train.lr", "float"), ("train.ema_decay", "categorical")]
    assert (read.params[0].low, read.params[0].high, read.params[0].log) == (1e-4, 1e-2, True)
    assert read.params[1].choices == (0.99, 0.999)
    assert read.fixed == {"model.width": 8, "train.batch_size": 16, "train.device": "cpu"}
    assert (read.objective.figure, read.objective.direction) == ("fid", "minimize")  # fid's own direction
    config = read.config_for({"train.lr": 0.003, "train.ema_decay": 0.99})
    assert (config.preset, config.model.width, config.train.lr, config.train.ema_decay) == ("dcgan", 8, 0.003, 0.99)
    assert (config.train.iterations, config.train.eval_every, config.train.batch_size) == (6, 2, 16)
    as_json = tmp_path / "space.json"  # the same space as JSON, and the flag's spelling lr-d
    as_json.write_text(json.dumps({"params": {"lr-d": {"type": "float", "low": 1e-4, "high": 1e-3}},
                                   "objective": {"figure": "recall"}}))
    read = read_space(as_json)
    assert (read.name, read.params[0].name, read.objective.direction) == ("space", "train.lr_d", "maximize")


@pytest.mark.parametrize("params, objective, message", [
    ({"lr": {"type": "float", "low": 1e-3, "high": 1e-3}}, {}, "params.lr: the range 0.001..0.001 is empty"),
    ({"lr": {"type": "float", "low": 1e-2, "high": 1e-4}}, {}, "params.lr: low 0.01 is above high 0.0001"),
    ({"width": {"type": "int", "low": 16, "high": 16}}, {}, "params.width: the range 16..16 is empty"),
    ({"loss": {"type": "categorical", "choices": []}}, {}, "params.loss.choices must be a list of 2"),
    ({"lr": {"type": "float", "low": 0.0, "high": 1e-2, "log": True}}, {}, "a log scale needs low above 0"),
    ({"lr": {"type": "float", "low": -1.0, "high": 1e-2}}, {}, "--lr must be positive"),
    ({"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "step": 1}}, {}, "unknown key 'step' in params.lr"),
    ({"lrx": {"type": "float", "low": 1e-4, "high": 1e-2}}, {}, "unknown setting 'lrx'"),
    ({"width": {"type": "float", "low": 8.0, "high": 16.0}}, {}, "model.width is an integer"),
    ({"iterations": {"type": "int", "low": 1, "high": 9}}, {}, "[objective]'s iterations"),
    ({"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}, {"figure": "density"}, "say whether density"),
    ({"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}, {"figure": "fidd"}, "objective.figure must be one of"),
    ({"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}, {"iterations": 4, "eval_every": 5},
     "objective.eval_every must be in 1..4"),
    ({}, {}, "name at least one setting"),
])
def test_bad_spaces_are_refused_naming_the_key(params, objective, message):
    with pytest.raises(MnistGanError) as refused:
        space_from_dict({"params": params, "objective": objective})
    assert message in str(refused.value)


def test_unknown_keys_are_refused_naming_them(tmp_path):
    for text, key in (('trails = 3\n[params.lr]\ntype = "float"\nlow = 0.1\nhigh = 0.2\n', "'trails'"),
                      ('[params.lr]\ntype = "float"\nlow = 0.1\nhigh = 0.2\n[objective]\nbudget = 3\n', "'budget'")):
        with pytest.raises(MnistGanError, match=f"unknown key {key}"):
            read_space(write_space(tmp_path, text))


def test_a_bad_space_is_one_line_and_exit_2(tmp_path, cli):
    path = write_space(tmp_path, SPACE.replace("high = 1e-2", "high = 1e-5"))
    status, out, err = cli(["tune", path, "--out", tmp_path / "study"])
    assert status == 2 and out == ""
    assert "invalid search space (params.lr: low 0.0001 is above high 1e-05)" in one_error_line(err)
    assert not (tmp_path / "study").exists()  # refused before anything is made


# ------------------------------------------------------------------------------------------ the study

def test_a_study_asks_k_at_a_time_and_keeps_the_best(tmp_path, monkeypatch):
    fake = engine(monkeypatch)
    unpruned = space(pruning={"enabled": False})
    result = run_study(unpruned, tmp_path / "study")
    assert fake.batches == [["trial-0000", "trial-0001"], ["trial-0002", "trial-0003"], ["trial-0004"]]
    assert [t.state.name for t in result.trials] == ["COMPLETE"] * 5
    for trial in result.trials:  # each told its figure at the last evaluation, every evaluation reported
        assert trial.value == pytest.approx(1000 * trial.params["train.lr"] + 10 / 6)
        assert sorted(trial.intermediate_values) == [2, 4, 6]
        assert trial.user_attrs["run_dir"] == str((tmp_path / "study" / f"trial-{trial.number:04d}").absolute())
    assert result.best.number == min(result.trials, key=lambda t: t.params["train.lr"]).number
    assert (tmp_path / "study" / "study.db").is_file()
    more = run_study(unpruned, tmp_path / "study", trials=7)  # the same study, two more trials
    assert fake.batches[3:] == [["trial-0005", "trial-0006"]] and len(more.trials) == 7


def test_bad_trials_are_pruned_at_an_evaluation(tmp_path, monkeypatch):
    def by_average(config, iteration):
        return 10.0 if config.train.ema_decay == 0.99 else 100.0

    engine(monkeypatch, by_average)
    result = run_study(space(trials=8), tmp_path / "study")
    states = {t.number: (t.state.name, t.params["train.ema_decay"]) for t in result.trials}
    pruned = [t for t in result.trials if t.state.name == "PRUNED"]
    assert pruned, states
    for trial in pruned:  # worse than the median of the complete ones at the first evaluation: stopped there
        assert trial.params["train.ema_decay"] == 0.999 and list(trial.intermediate_values) == [2]
        assert trial.user_attrs["iterations"] == 2 and trial.user_attrs["status"] == "stopped"
    assert all(state == "COMPLETE" for state, decay in states.values() if decay == 0.99)
    without = run_study(space(trials=4, name="unpruned", pruning={"enabled": False}), tmp_path / "unpruned")
    assert all(t.state.name == "COMPLETE" for t in without.trials)


def test_diverged_and_refused_trials_fail(tmp_path, monkeypatch):
    engine(monkeypatch, lambda config, iteration: math.nan if config.train.lr > 1e-3 else 5.0)
    chosen = space(trials=6, params={"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    result = run_study(chosen, tmp_path / "study")
    assert len(result.trials) == 6  # a failed trial counts: a study whose every trial fails still ends
    for trial in result.trials:
        expected = "FAIL" if trial.params["train.lr"] > 1e-3 else "COMPLETE"
        assert trial.state.name == expected, (trial.params, trial.state)
    assert {t.user_attrs.get("status") for t in result.trials} == {"diverged", "finished"}


def test_trials_that_cannot_share_a_stack_train_in_groups(tmp_path, monkeypatch):
    """The loss changes the code path, and so does R1 on or off: the engine stacks only trials of one loss and
    one R1 switch (learning rates and R1's weight may differ)."""
    fake = engine(monkeypatch)
    chosen = space(trials=8, batch=4, pruning={"enabled": False},
                   params={"lr": {"type": "float", "low": 1e-4, "high": 1e-2},
                           "loss": {"type": "categorical", "choices": ["lsgan", "non-saturating"]},
                           "r1_gamma": {"type": "categorical", "choices": [0.0, 1.0, 4.0]}})
    result = run_study(chosen, tmp_path / "study")
    kind = {f"trial-{t.number:04d}": (t.params["train.loss"], t.params["train.r1_gamma"] > 0) for t in result.trials}
    assert sum(len(batch) for batch in fake.batches) == 8 and len(fake.batches) > 2
    assert all(len({kind[name] for name in batch}) == 1 for batch in fake.batches), (fake.batches, kind)
    assert [t.state.name for t in result.trials] == ["COMPLETE"] * 8
    compiled = space(trials=2, name="compiled", fixed={"width": 8, "batch_size": 16, "device": "cpu",
                                                       "compile": True})
    refused = run_study(compiled, tmp_path / "compiled")  # what the stacked step does not carry out: failed, why
    assert [t.state.name for t in refused.trials] == ["FAIL", "FAIL"]
    assert "a sweep does not support compile=True" in refused.trials[0].user_attrs["error"]


def test_an_interrupted_study_resumes_with_the_interrupted_trials_asked_again(tmp_path, monkeypatch):
    engine(monkeypatch, interrupt_at_batch=2)
    with pytest.raises(KeyboardInterrupt):
        run_study(space(), tmp_path / "study")
    fake = engine(monkeypatch)
    result = run_study(space(), tmp_path / "study")
    states = [t.state.name for t in result.trials]
    assert states[:4] == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"] and states.count("COMPLETE") == 5
    retried = [t for t in result.trials if t.system_attrs.get("failed_trial") is not None]
    assert [t.system_attrs["failed_trial"] for t in retried] == [2, 3]
    for trial in retried:  # the same parameters, asked again first
        assert trial.params == result.trials[trial.system_attrs["failed_trial"]].params
    assert fake.batches[0] == ["trial-0004", "trial-0005"]
    assert len({t.number for t in result.trials}) == len(result.trials) == 7


def test_trials_a_killed_process_left_running_are_failed_and_asked_again(tmp_path, monkeypatch):
    """A kill leaves RUNNING trials in the study file; the next process holds the file alone, so they are dead."""
    engine(monkeypatch)
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    study = optuna.create_study(study_name="tiny", storage=f"sqlite:///{study_dir / 'study.db'}")
    left = [study.ask() for _ in range(2)]
    for trial in left:
        trial.suggest_float("train.lr", 1e-4, 1e-2, log=True)
        trial.suggest_categorical("train.ema_decay", [0.99, 0.999])
    result = run_study(space(trials=2), study_dir)
    assert [t.state.name for t in result.trials] == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert [t.params for t in result.trials[2:]] == [t.params for t in left]


def test_a_second_process_on_one_sqlite_study_is_refused_and_the_study_kept(tmp_path, monkeypatch, cli):
    engine(monkeypatch)
    path = write_space(tmp_path)
    assert cli(["tune", path, "--out", tmp_path / "study", "--trials", 2])[0] == 0
    before = (tmp_path / "study" / "study.db").read_bytes()
    with sqlite_lock(tmp_path / "study" / "study.db"):  # as another `mnist-gan tune` on it holds it
        status, out, err = cli(["tune", path, "--out", tmp_path / "study", "--trials", 4])
    assert status == 2 and out == ""
    assert "another mnist-gan tune process is running this study" in one_error_line(err)
    assert (tmp_path / "study" / "study.db").read_bytes() == before
    status, out, _ = cli(["tune", path, "--out", tmp_path / "study", "--trials", 4, "--json"])
    assert status == 0 and [t["number"] for t in json.loads(out)["trials"]] == [0, 1, 2, 3]


def test_another_space_under_the_same_study_name_is_refused(tmp_path, monkeypatch):
    engine(monkeypatch)
    run_study(space(trials=1), tmp_path / "study")
    with pytest.raises(MnistGanError, match="searches another space"):
        run_study(space(trials=1, fixed={"width": 16}), tmp_path / "study")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("storage, phrase", [
    ("postgresql://tune:secret@127.0.0.1:{port}/tune", "cannot reach storage postgresql://tune:***@127.0.0.1"),
    ("sqlite:///{tmp}/missing/dir/study.db", "missing/dir is not a directory"),
])
def test_an_unreachable_storage_is_one_line_and_exit_2(tmp_path, monkeypatch, cli, storage, phrase):
    if storage.startswith("postgresql"):
        pytest.importorskip("psycopg", reason="PostgreSQL storage needs psycopg (the [tune] extra)")
    engine(monkeypatch)
    url = storage.format(port=free_port(), tmp=tmp_path)
    started = time.monotonic()
    status, out, err = cli(["tune", write_space(tmp_path), "--out", tmp_path / "study", "--storage", url])
    assert status == 2 and out == "" and time.monotonic() - started < 30
    line = one_error_line(err)
    assert phrase in line and "secret" not in line


# ------------------------------------------------------------------------------------------ real runs

def test_a_real_tiny_study_trains_scores_and_plots(tmp_path, monkeypatch, cli):
    """Two real trials of a tiny DCGAN trained together, scored by the real evaluator (200 samples) in the
    features of an untrained classifier (the figures' code path is the same; training one would take a minute)."""
    from PIL import Image

    from mnist_gan.evaluation import classifier, evaluator

    cache = tmp_path / "cache"
    monkeypatch.setattr(classifier, "train_classifier", untrained_classifier)
    monkeypatch.setattr(evaluator, "TRAINING_EVAL_SAMPLES", 200)
    text = SPACE.replace("trials = 5", "trials = 2").replace("iterations = 6", "iterations = 4") \
        .replace('"train.device" = "cpu"', f'"train.device" = "cpu"\ndata = "mnist"\ncache_dir = "{cache}"\n'
                                           'sample_every = 0\nlog_every = 2')
    status, out, err = cli(["tune", write_space(tmp_path, text), "--out", tmp_path / "study"])
    assert status == 0, err
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:  # the score is the run's own last evaluation, logged in its metrics.jsonl
        run_dir = Path(trial.user_attrs["run_dir"])
        evaluations = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                       if json.loads(line).get("kind") == "eval"]
        assert [e["iteration"] for e in evaluations] == [2, 4]
        assert trial.value == evaluations[-1]["fid"] > 0
        assert trial.intermediate_values == {2: evaluations[0]["fid"], 4: evaluations[1]["fid"]}
        assert json.loads((run_dir / "config.json").read_text())["train"]["lr"] == trial.params["train.lr"]
    best = min(study.trials, key=lambda t: t.value)
    assert f"best: trial {best.number}, fid {best.value:.4g}" in out
    assert out.splitlines()[1].split() == ["trial", "state", "fid", "iterations", "train.lr", "train.ema_decay"]
    assert Image.open(tmp_path / "study" / "history.png").size == (700, 400)
    assert Image.open(tmp_path / "study" / "importance.png").width == 700


# ------------------------------------------------------------------------------------------ PostgreSQL

def missing_postgres() -> str | None:
    """Why no throwaway PostgreSQL server can be started here (one line), or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[tune]')"
    if not postgres_bin():
        return "no PostgreSQL server under /usr/lib/postgresql/*/bin (Debian's postgresql)"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root, and no runuser to start PostgreSQL as another user"
    return None


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3])
                   if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else None


def need_postgres(reason: str | None, ci: bool) -> None:
    if reason and ci:
        pytest.fail(f"CI=true, but the PostgreSQL test cannot run: {reason} (.ci/run installs postgresql)",
                    pytrace=False)
    if reason:
        pytest.skip(f"PostgreSQL test skipped: {reason}")


def test_a_missing_postgres_fails_under_ci_and_skips_elsewhere():
    with pytest.raises(pytest.fail.Exception, match="CI=true, but the PostgreSQL test cannot run: no server"):
        need_postgres("no server", ci=True)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL test skipped: no server"):
        need_postgres("no server", ci=False)
    need_postgres(None, ci=True)  # present: runs


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server (initdb, pg_ctl) on a free port, as an unprivileged user; its URL."""
    need_postgres(missing_postgres(), under_ci())
    binaries = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="mnist-gan-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()

    def run(*command):
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=60, cwd=root)

    try:
        run(binaries / "initdb", "-D", data, "-U", "tune", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(binaries / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-t", "30", "start",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
        yield f"postgresql://tune@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(Exception):
            run(binaries / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


# A worker process of `mnist-gan tune` whose evaluations come from helpers.StubEvaluator (fixed figures, no
# classifier): this test is about sharing a study, the real evaluator's scores are the tiny study's above.
WORKER = """
import sys
sys.path.insert(0, {tests!r})
import helpers
from mnist_gan.evaluation import evaluator
evaluator.Evaluator = helpers.StubEvaluator
from mnist_gan.cli.parser import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_workers_share_one_study_in_postgresql(tmp_path, postgres_url, small_npz):
    text = SPACE.replace("trials = 5", "trials = 4").replace("iterations = 6", "iterations = 2") \
        .replace("startup_trials = 2", "enabled = false") \
        .replace('"train.device" = "cpu"', f'"train.device" = "cpu"\ndata = "{small_npz}"\nlimit = 128\n'
                                           'sample_every = 0\nlog_every = 2')
    path = write_space(tmp_path, text)
    code = WORKER.format(tests=str(REPO / "tests"))
    workers = [subprocess.Popen([sys.executable, "-c", code, "-q", "tune", path, "--out", tmp_path / "study",
                                 "--storage", postgres_url, "--json"], env=cli_env(), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [worker.communicate(timeout=240) for worker in workers]
    for worker, (_, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err
    study = optuna.load_study(study_name="tiny", storage=postgres_url)
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # no trial twice
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4
    assert {t.user_attrs["worker"].split(":")[1] for t in trials} == {str(w.pid) for w in workers}
    for trial in trials:
        assert (Path(trial.user_attrs["run_dir"]) / "metrics.jsonl").is_file()
    printed = [json.loads(out) for out, _ in results]  # the worker that ended last saw every trial complete
    last = [p for p in printed if [t["state"] for t in p["trials"]] == ["complete"] * 4]
    assert last and last[0]["best"]["number"] == study.best_trial.number


def test_the_benchmark_runs_a_study_and_keeps_its_table(tmp_path, monkeypatch, capsys):
    from benchmarks import tune_recommended

    engine(monkeypatch)
    results = tmp_path / "results.txt"
    monkeypatch.setattr(sys, "argv", ["tune_recommended", "--space", str(write_space(tmp_path)), "--trials", "3",
                                      "--out", str(tmp_path / "study"), "--results", str(results)])
    tune_recommended.main()
    kept = results.read_text()
    assert kept.strip() == capsys.readouterr().out.strip()
    rows = [line for line in kept.splitlines() if re.match(r"\d+\*? +(complete|pruned|fail) ", line)]
    assert "study tiny" in kept and [row.split()[0].rstrip("*") for row in rows] == ["0", "1", "2"]
    assert "best: trial " in kept and (tmp_path / "study" / "history.png").is_file()
    assert read_space(REPO / "benchmarks" / "tune_recommended.toml").trials == 40  # the shipped space reads
