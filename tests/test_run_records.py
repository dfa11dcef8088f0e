"""Reading a run's records goes one way (mnist_gan.run.records): the diagnosis' reader, the live view's follower
and a resume's truncation parse a metrics line alike, classify it by one rule, and infer a run's length by one rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mnist_gan.errors import MnistGanError
from mnist_gan.run.directory import RunDir
from mnist_gan.run.history import read_run
from mnist_gan.run.records import (
    EVAL,
    MAX_LINE_BYTES,
    TRAIN,
    EpochLength,
    parse_line,
    planned_iterations,
    read_limited,
    read_records,
    record_kind,
)
from mnist_gan.run.watch import RunWatcher
from mnist_gan.settings.config_file import MAX_CONFIG_BYTES

TRAIN_LINE = {"kind": "train", "iteration": 10, "epoch": 1, "d_loss": 0.7, "g_loss": 0.8, "d_x": 0.5,
              "d_g_z": 0.4, "images_per_s": 100.0, "time": 1.0}
EVAL_LINE = {"kind": "eval", "iteration": 10, "epoch": 1, "fid": 50.0, "time": 2.0}


def write_run(path: Path, lines: list, config: dict | None = None) -> RunDir:
    run = RunDir(path)
    path.mkdir()
    run.config_file.write_text(json.dumps(config or {"preset": "x", "train": {"iterations": 40, "loss": "hinge"}}))
    run.metrics.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return run


def test_one_kind_rule_and_an_unknown_line_is_never_a_training_record():
    assert record_kind(TRAIN_LINE) == TRAIN and record_kind(EVAL_LINE) == EVAL
    assert record_kind({"iteration": 10, "d_loss": 0.5}) == TRAIN  # written before lines carried a kind
    assert record_kind({"iteration": 10, "fid": 3.0}) == EVAL
    assert record_kind({"iteration": 10, "note": "someone else's"}) is None
    assert record_kind({"kind": "checkpoint", "iteration": 10, "d_loss": 0.5}) is None
    import mnist_gan.run.history as history
    import mnist_gan.run.watch as watch
    import mnist_gan.training.recorder as recorder

    assert history.record_kind is watch.record_kind is recorder.record_kind is record_kind


def test_a_line_parses_one_way():
    assert parse_line(json.dumps(TRAIN_LINE).encode()) == TRAIN_LINE
    for line in (b"", b"  ", b'{"iteration": 20', b"[1, 2]", b'"text"', b"[" * 100_000, b'{"a": "\xff"}',
                 b'{"a": "' + b"x" * MAX_LINE_BYTES + b'"}'):
        assert parse_line(line) is None, line[:40]


def test_the_three_readers_agree_on_a_damaged_file(tmp_path):
    lines = [TRAIN_LINE, {"iteration": 15, "note": "foreign"}, "[" * 50_000, EVAL_LINE, {**TRAIN_LINE, "iteration": 20}]
    run = write_run(tmp_path / "run", lines)
    with open(run.metrics, "a") as metrics:
        metrics.write('{"kind": "train", "iteration": 30, "d_l')  # the half line a killed writer leaves
    config, records, evaluations = read_run(run.path)  # the diagnosis
    assert [r["iteration"] for r in records] == [10, 20] and evaluations == [EVAL_LINE]
    assert config["train"]["loss"] == "hinge"
    watcher = RunWatcher(run.path)  # the live view
    reply = watcher.metrics.since(0, None)
    assert [(r["kind"], r["iteration"]) for r in reply["records"]] == [(TRAIN, 10), (EVAL, 10), (TRAIN, 20)]
    assert reply["skipped"] == 2  # the foreign line and the nested one; the half line waits for its end
    assert [r["iteration"] for r in read_records(run.metrics)] == [10, 15, 10, 20]
    assert run.truncate_metrics(10) == [TRAIN_LINE, EVAL_LINE]
    assert read_records(run.metrics) == [TRAIN_LINE, EVAL_LINE]


def test_one_rule_for_a_runs_planned_length():
    lines = [{"iteration": i, "epoch": (i - 1) // 7 + 1} for i in range(5, 40, 5)]  # 7 iterations an epoch
    assert planned_iterations({"iterations": 123}, EpochLength(), False) == (123, True)
    assert planned_iterations({"epochs": 10, "iterations": None}, EpochLength.of(lines), True) == (70, True)
    assert planned_iterations({"epochs": 10}, EpochLength.of(lines[:1]), True) == (50, False)  # a lower bound
    assert planned_iterations({"epochs": 10}, EpochLength(), False) == (None, False)
    assert planned_iterations({"iterations": 0, "epochs": "x"}, EpochLength.of(lines), True) == (None, False)


def test_the_watcher_reads_its_plan_by_that_rule(tmp_path):
    lines = [{**TRAIN_LINE, "iteration": i, "epoch": (i - 1) // 7 + 1} for i in range(5, 40, 5)]
    run = write_run(tmp_path / "run", lines, {"train": {"epochs": 10, "iterations": None, "batch_size": 4}})
    status = RunWatcher(run.path).status()
    assert (status["total"], status["total_exact"], status["iteration"]) == (70, True, 35)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_under_a_run_files_name_is_refused_not_waited_on(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    os.mkfifo(run.config_file)
    os.mkfifo(run.metrics)
    assert read_limited(run.config_file, MAX_CONFIG_BYTES) is None and run.config_dict() == {}
    with pytest.raises(MnistGanError, match="not a regular file"):
        read_records(run.metrics)
    assert RunWatcher(run.path).status()["iteration"] == 0


def test_config_is_read_within_its_bound(tmp_path):
    run = RunDir(tmp_path)
    assert run.config_dict() == {}
    run.config_file.write_text(json.dumps({"train": {"loss": "x" * MAX_CONFIG_BYTES}}))
    assert run.config_dict() == {}
    run.config_file.write_text("[1]")
    assert run.config_dict() == {}
    run.config_file.write_text('{"train": {"loss": "hinge"}}')
    assert run.config_dict() == {"train": {"loss": "hinge"}}


def test_files_are_found_by_the_run_directory(tmp_path):
    run = RunDir(tmp_path)
    for folder in (run.checkpoints, run.samples):
        folder.mkdir()
    for iteration in (5, 100_000_000, 20):
        run.grid(iteration).touch()
        run.checkpoint(iteration).touch()
    (run.samples / "iter_notanumber.png").touch()
    assert sorted(run.grids()) == sorted(run.checkpoints_by_iteration()) == [5, 20, 100_000_000]
    assert run.grids()[20] == run.grid(20) and run.checkpoints_by_iteration()[5] == run.checkpoint(5)
    assert RunDir.containing(run.checkpoint(5)).path == tmp_path
    assert RunDir.containing(tmp_path).path == tmp_path
    assert RunDir.containing(run.generator).path == tmp_path


def test_record_kind_reads_lines_written_before_the_field():
    assert record_kind({"iteration": 10, "d_loss": 0.5}) == TRAIN
    assert record_kind({"iteration": 10, "fid": 3.0}) == EVAL
    assert record_kind({"kind": EVAL, "iteration": 10}) == EVAL
