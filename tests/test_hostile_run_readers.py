"""The readers of a run's files (serve's live view, diagnose's history, resume's metrics truncation) under hostile
files (issue 27): FIFOs where a run's files belong never hang a reader; damaged metrics and config lines (huge
numbers, deep nesting, wide arrays, missing fields) never crash serve, diagnose or a resume, and never cost more
than a bounded multiple of the file; the live view's memory stays bounded on a long run; a run whose losses are all
non-finite is reported."""

from __future__ import annotations

import json
import logging
import os
import tracemalloc
from pathlib import Path

import pytest
from helpers import copy_run, one_error_line, time_limit

from mnist_gan.errors import MnistGanError
from mnist_gan.run.directory import RunDir
from mnist_gan.run.history import CLASS_HISTOGRAM, Series, read_run
from mnist_gan.run.records import read_records
from mnist_gan.run.watch import MAX_RECORDS_KEPT, MAX_TRAIN_KEPT, RunWatcher

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
TRAIN = {"kind": "train", "epoch": 1, "d_loss": 0.7, "g_loss": 0.8, "d_x": 0.5, "d_g_z": 0.4,
         "images_per_s": 100.0, "time": 1.0}


def train_line(iteration: int, **extra) -> str:
    return json.dumps({**TRAIN, "iteration": iteration, "time": float(iteration), **extra})


def make_run(path: Path, lines: list[str], config: dict | str | None = None) -> RunDir:
    run = RunDir(path)
    (path / "samples").mkdir(parents=True)
    (path / "checkpoints").mkdir()
    text = config if isinstance(config, str) else json.dumps(config or {"preset": "x", "train": {"iterations": 40}})
    run.config_file.write_text(text)
    run.metrics.write_text("".join(line + "\n" for line in lines))
    return run


def api(source: Path):
    from mnist_gan.serve.webapi import Api

    return Api(source)


# A line of each hostile kind, and the line number (1-based) where it sits in HOSTILE.
HOSTILE = [
    train_line(5),
    '{"kind": "train", "iteration": 6, "d_loss": 1' + "0" * 5000 + "}",  # a number of thousands of digits
    train_line(7, d_loss=10**30),  # an integer beyond 64 bits where a loss belongs
    '{"kind": "train", "iteration": 99999999999999999999999, "d_loss": 1.0}',  # an iteration beyond 64 bits
    train_line(9).replace('"d_loss": 0.7', '"d_loss": 1e400'),  # beyond float range: infinity
    train_line(10)[:-1] + ', "deep": ' + "[" * 900 + "]" * 900 + "}",  # nested deep, under the parser's limit
    train_line(11)[:-1] + ', "' + CLASS_HISTOGRAM + '": [' + ",".join(["0"] * 20_000) + "]}",  # very wide
    train_line(12, warnings=[[["nested"]], 10**25]),
    json.dumps({"kind": "train", "iteration": 13, "epoch": 1, "g_loss": 1.0, "time": 13.0}),  # no d_loss, d_x...
    json.dumps({"kind": "eval", "iteration": 13, "fid": "forty", CLASS_HISTOGRAM: ["a", "b"], "kid": 1e308 * 10}),
    train_line(14, d_loss="0.5", g_loss=None, d_x=True),
    train_line(15),
]
SKIPPED_LINES = (2,)  # the only line that cannot be parsed at all: its number is too long to read


# ------------------------------------------------------------------------------------ 1. FIFOs
@needs_fifo
def test_a_fifo_named_like_a_sample_grid_is_never_waited_on(tmp_path):
    run = make_run(tmp_path / "run", [train_line(5)])
    os.mkfifo(run.grid(10))
    client = api(run.path)
    with time_limit(10):
        for _ in range(3):  # the page polls: no poll may hang a worker
            reply = client.handle("run_grid", [])
            assert reply.status == 404, reply.body
        assert client.handle("run_grid", [("iteration", "10")]).status == 404
        assert json.loads(client.handle("run", []).body)["grids"] == [10]


@needs_fifo
def test_diagnose_never_waits_on_a_fifo_named_like_a_sample_grid(tmp_path, cli):
    run = make_run(tmp_path / "run", [train_line(5), train_line(10)])
    os.mkfifo(run.grid(10))
    run.grid(5).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)  # and a damaged one
    with time_limit(30):
        status, out, err = cli(["diagnose", run.path, "--no-plots"])
    assert status == 0 and "Traceback" not in err and "verdict: healthy" in out


@needs_fifo
def test_a_fifo_as_config_json_lets_serve_start(tmp_path):
    run = make_run(tmp_path / "run", [train_line(5)])
    run.config_file.unlink()
    os.mkfifo(run.config_file)
    with time_limit(10):
        client = api(run.path)
        status = json.loads(client.handle("run", []).body)
    assert status["iteration"] == 5 and status["preset"] is None


@needs_fifo
def test_a_fifo_as_metrics_jsonl_ends_a_resume_in_one_line(trained_run, tmp_path, cli):
    run = RunDir(tmp_path / "run")
    copy_run(trained_run.dir, run.path)
    run.metrics.unlink()
    os.mkfifo(run.metrics)
    with time_limit(60):
        status, _, err = cli(["train", "--resume", run.path, "--iterations", 30, "--no-progress"])
    assert status == 2 and "metrics.jsonl" in one_error_line(err) and "regular file" in err
    with time_limit(10), pytest.raises(MnistGanError, match="not a regular file"):
        read_run(run.path)


def test_a_metrics_file_linked_to_a_device_or_too_large_is_refused(tmp_path, monkeypatch):
    import mnist_gan.run.records as records

    run = make_run(tmp_path / "run", [train_line(i) for i in range(1, 50)])
    monkeypatch.setattr(records, "MAX_METRICS_BYTES", 1000)
    with pytest.raises(MnistGanError, match="larger than"):
        read_records(run.metrics)
    with pytest.raises(MnistGanError, match="larger than"):
        run.truncate_metrics(10)
    assert len(run.metrics.read_text().splitlines()) == 49  # refused, never cut
    monkeypatch.undo()
    if os.path.exists("/dev/zero"):
        run.metrics.unlink()
        run.metrics.symlink_to("/dev/zero")
        with time_limit(10), pytest.raises(MnistGanError, match="not a regular file"):
            read_records(run.metrics)


# ------------------------------------------------------------------------------------ 2. damaged lines
def test_damaged_lines_are_skipped_or_their_fields_dropped_with_one_warning_each(tmp_path, caplog):
    run = make_run(tmp_path / "run", HOSTILE)
    with caplog.at_level(logging.WARNING, logger="mnist_gan"):
        config, records, evaluations = read_run(run.path)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == len(SKIPPED_LINES) and all(f"line {n}" in s for n, s in zip(SKIPPED_LINES, said, strict=True))
    assert [r["iteration"] for r in records] == [5, 7, 9, 10, 11, 12, 13, 14, 15]
    by = {r["iteration"]: r for r in records}
    assert "d_loss" not in by[7]  # 10**30 is no loss this package logs: the field is dropped, the line kept
    assert by[9]["d_loss"] == float("inf")
    assert "deep" not in by[10] and CLASS_HISTOGRAM not in by[11] and "warnings" not in by[12]
    assert by[14]["d_loss"] == "0.5" and by[14]["g_loss"] is None
    assert evaluations == [{"kind": "eval", "iteration": 13, "fid": "forty", CLASS_HISTOGRAM: ["a", "b"],
                            "kid": float("inf")}]
    series = Series.from_records(records)
    assert list(series.get("d_loss")[:3]) == [0.7, pytest.approx(float("nan"), nan_ok=True), float("inf")]


def test_diagnose_and_its_plots_survive_a_damaged_run(tmp_path, cli):
    run = make_run(tmp_path / "run", HOSTILE)
    status, out, err = cli(["diagnose", run.path, "--out", tmp_path / "plots"])
    assert status in (0, 1) and "Traceback" not in err, err
    assert err.count("line 2 is damaged") == 1 and err.count("\n") == 1  # one warning, naming the line
    assert out.startswith(f"run: {run.path}") and "15 of 40 iterations, 9 log lines, 1 evaluations" in out
    assert (tmp_path / "plots" / "losses.png").stat().st_size > 1000


def test_losses_png_is_drawn_when_a_kept_line_lacks_a_field(tmp_path):
    from mnist_gan.diagnosis.loss_plot import plot_losses

    records = [json.loads(train_line(5)), {"kind": "train", "iteration": 10, "g_loss": 1.0},
               {"kind": "train", "iteration": 15, "d_loss": "x", "d_x": None, "g_loss": 10**30}]
    evaluations = [{"kind": "eval", "iteration": 10, "fid": 40.0}, {"kind": "eval", "iteration": 15}]
    path = plot_losses(records, tmp_path / "losses.png", evaluations)
    assert path.stat().st_size > 1000


def test_serve_answers_every_poll_of_a_damaged_run(tmp_path):
    run = make_run(tmp_path / "run", HOSTILE)
    client = api(run.path)
    for _ in range(2):  # a failing poll would re-read (and re-append) the same lines each time
        reply = client.handle("metrics", [])
        assert reply.status == 200, reply.body
        body = json.loads(reply.body)
        assert [r["iteration"] for r in body["records"]] == [5, 7, 9, 10, 11, 12, 13, 13, 14, 15]
        assert body["skipped"] == 2 and body["total"] == 10  # line 2, and line 4 (no usable iteration)
    by = {(r["kind"], r["iteration"]): r for r in body["records"]}
    assert by[("train", 7)]["d_loss"] is None and by[("train", 9)]["d_loss"] is None  # JSON carries no inf
    assert by[("eval", 13)]["fid"] is None and by[("train", 14)]["d_loss"] is None
    status = client.handle("run", [])
    assert status.status == 200 and json.loads(status.body)["iteration"] == 15


@pytest.mark.parametrize("config", [
    '{"preset": NaN, "train": {"max_minutes": NaN, "iterations": Infinity, "batch_size": 1e400, "loss": [1, 2]}}',
    '{"preset": "x", "train": {"max_minutes": Infinity, "epochs": 99999999999999999999999999, "log_every": NaN}}',
    '{"preset": "x", "train": {"iterations": 99999999999999999999999999999, "max_minutes": 1e308}}',
    '{"preset": {"a": 1}, "train": {"iterations": -5, "max_minutes": -1, "batch_size": true, "loss": "x"}}',
])
def test_serve_answers_a_config_json_with_nan_or_huge_numbers(tmp_path, config):
    run = make_run(tmp_path / "run", [train_line(5), train_line(10)], config)
    reply = api(run.path).handle("run", [])
    assert reply.status == 200, reply.body
    status = json.loads(reply.body)
    assert status["iteration"] == 10 and status["preset"] in (None, "x")
    assert status["max_minutes"] is None or 0 < status["max_minutes"] < 1e300


def test_serve_starts_on_a_checkpointed_run_whose_config_holds_any_json(trained_run, tmp_path):
    run = RunDir(tmp_path / "run")
    copy_run(trained_run.dir, run.path)
    run.config_file.write_text('{"preset": NaN, "train": {"loss": [1, 2], "iterations": Infinity}}')
    client = api(run.path)
    assert client.explorer is not None and client.explorer.score_note == "sigmoid of D's output"
    assert json.loads(client.handle("run", []).body)["preset"] is None
    assert client.handle("draw_samples", [("n", "4")]).status == 200


def test_a_resume_cuts_a_damaged_file_back_without_a_traceback(tmp_path):
    run = make_run(tmp_path / "run", HOSTILE)
    kept = run.truncate_metrics(12)
    assert [r["iteration"] for r in kept] == [5, 7, 9, 10, 11, 12]
    assert [r["iteration"] for r in read_records(run.metrics)] == [5, 7, 9, 10, 11, 12]


def hostile_file(path: Path, size: int = 2 << 20) -> Path:
    """`size` bytes of metrics that cost the most per byte: tiny train lines, one very wide histogram, and lines
    of empty containers."""
    wide = train_line(1)[:-1] + ', "' + CLASS_HISTOGRAM + '": [' + ",".join(["0"] * 30_000) + "]}"
    empties = '{"kind": "train", "iteration": 2, "d_loss": 1, "x": [' + ",".join(["{}"] * 20_000) + "]}"
    lines, total, i = [wide, empties], 0, 3
    while total < size:
        line = f'{{"iteration":{i},"d_loss":0}}'
        lines.append(line)
        total += len(line) + 1
        i += 1
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_2_mb_hostile_metrics_file_costs_a_bounded_multiple_of_its_size(tmp_path):
    run = make_run(tmp_path / "run", [])
    hostile_file(run.metrics)
    tracemalloc.start()
    try:
        _, records, _ = read_run(run.path)
        series = Series.from_records(records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(series) == len(records) > 50_000
    assert peak < 25 * run.metrics.stat().st_size, f"{peak / 2**20:.0f} MiB"  # 13x measured; 500x before


# ------------------------------------------------------------------------------------ 3. a bounded live view
def test_the_live_view_of_a_long_run_keeps_a_bounded_window(tmp_path):
    n = 3 * MAX_RECORDS_KEPT + 7
    lines = [train_line(i) for i in range(1, n + 1)]
    lines[100:100] = [json.dumps({"kind": "eval", "iteration": 100, "fid": 50.0, "time": 100.5})]
    run = make_run(tmp_path / "run", lines, {"train": {"iterations": n, "batch_size": 4}})
    watcher = RunWatcher(run.path)
    reply = watcher.metrics.since(0, None)
    follower = watcher.metrics
    assert len(follower.records) <= MAX_RECORDS_KEPT and len(follower.train) <= MAX_TRAIN_KEPT
    kept = [r["iteration"] for r in follower.records if r["kind"] == "train"]
    gaps = {b - a for a, b in zip(kept, kept[1:], strict=False)}
    assert kept[0] == 1 and len(gaps) == 1 and n - kept[-1] < gaps.pop()  # the whole run, thinned evenly
    assert [r["iteration"] for r in follower.records if r["kind"] == "eval"] == [100]
    assert reply["total"] == len(follower.records)
    status = watcher.status()
    assert status["iteration"] == n and status["state"] == "finished"
    assert status["latest"]["iteration"] == n  # the newest line is shown whether or not the plot keeps it
    generation, before = reply["generation"], len(follower.records)
    with open(run.metrics, "a") as handle:  # growth after thinning: a page that asks again gets the new lines
        handle.write("".join(train_line(i) + "\n" for i in range(n + 1, n + 41)))
    again = follower.since(before, generation)
    assert not again["reset"] and again["start"] == before and len(again["records"]) == 10  # one in 4 kept


# ------------------------------------------------------------------------------------ 4. non-finite losses
def test_diagnose_reports_a_run_whose_losses_are_all_non_finite(tmp_path):
    from mnist_gan.diagnosis.report import build_report, format_report

    lines = [train_line(i, d_loss=float("nan"), g_loss=float("inf") if i % 2 else float("nan"))
             for i in range(5, 55, 5)]
    run = make_run(tmp_path / "run", lines)
    report = build_report(run.path)
    codes = [f.code for f in report.findings]
    assert "non-finite-losses" in codes and not report.healthy
    finding = report.findings[codes.index("non-finite-losses")]
    assert finding.first_iteration == 5 and finding.active_at_end
    assert "non-finite" in format_report(report) and "--lr" in format_report(report)
