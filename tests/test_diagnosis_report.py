"""`mnist-gan diagnose`: the report on measured runs (exit status, JSON, plots), on a run without probes and on a
running one, the planned length of a run, and on real tiny runs written by today's code."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import copy_run, measured

from mnist_gan.diagnosis.report import build_report, planned_iterations
from mnist_gan.io.files import exclusive_lock
from mnist_gan.run.history import (
    FIELDS,
    read_run,
)
from mnist_gan.sampling.grids import read_grid


def write_run(directory: Path, name: str) -> Path:
    """A run directory holding a measured run's config.json and metrics.jsonl."""
    config, records, evaluations = measured(name)
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    lines = sorted(records + evaluations, key=lambda r: (r["iteration"], "fid" in r))
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return directory


def test_report_on_measured_runs_exit_status_json_and_plots(tmp_path, cli):
    healthy, broken = write_run(tmp_path / "healthy", "recommended-0"), write_run(tmp_path / "broken", "one-digit")
    status, out, _ = cli(["diagnose", healthy, "--json"])
    report = json.loads(out)
    assert status == 0 and report["healthy"] and report["findings"] == []
    assert {"run_dir", "status", "iteration", "findings", "skipped", "timeline", "plots"} <= set(report)
    assert {Path(p).name for p in report["plots"]} == {"losses.png", "scores.png", "grad_norms.png", "classes.png",
                                                       "fid.png"}
    assert all(Path(p).stat().st_size > 1000 and Path(p).parent == healthy / "diagnosis" for p in report["plots"])
    status, out, _ = cli(["diagnose", broken, "--no-plots"])
    assert status == 1 and "[d-overfits]" in out and "try: --augment-shift 2" in out
    assert "timeline:" in out and not (broken / "diagnosis").exists()


def test_a_run_without_probes_says_which_detectors_could_not_run(tmp_path, cli):
    run = write_run(tmp_path / "old", "recommended-0")
    old = [{k: v for k, v in json.loads(line).items() if k not in FIELDS}
           for line in (run / "metrics.jsonl").read_text().splitlines()]
    old = [r for r in old if "fid" not in r]  # written before the probes, without --eval-every
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old) + '{"iteration": 20')  # cut off
    status, out, _ = cli(["diagnose", run, "--json", "--out", tmp_path / "plots"])
    report = json.loads(out)
    assert status == 0 and set(report["skipped"]) == {"vanishing-gradient", "d-overfits", "class-drift",
                                                      "memorisation", "no-progress", "flat-samples",
                                                      "mode-collapse"}
    assert "--eval-every" in report["skipped"]["memorisation"]
    assert {Path(p).name for p in report["plots"]} == {"losses.png", "scores.png"}
    (run / "diagnosis").write_text("not a folder")  # where the plots would go cannot be written
    status, out, err = cli(["diagnose", run])
    assert status == 0 and "verdict: healthy" in out and "no plots:" in err and "--no-plots" in err


def test_status_of_a_running_run_and_user_errors(tmp_path, cli):
    run = write_run(tmp_path / "live", "recommended-0")
    with exclusive_lock(run):  # what a training process holds
        assert build_report(run).status == "running"
    assert build_report(run).status == "stopped"  # 2,006 of the 3,000 iterations it was asked for
    status, _, err = cli(["diagnose", tmp_path / "nothing"])
    assert status == 2 and "not a run directory" in err
    (tmp_path / "empty").mkdir()
    assert cli(["diagnose", tmp_path / "empty"])[0] == 2


def test_planned_iterations_from_epochs():
    records = [{"iteration": i, "epoch": (i - 1) // 7 + 1} for i in range(5, 60, 5)]
    assert planned_iterations({"train": {"epochs": 10, "iterations": None}}, records) == 70
    assert planned_iterations({"train": {"iterations": 123}}, []) == 123


def test_diagnose_a_real_tiny_run_written_by_todays_code(trained_run, cli, tmp_path):
    run = tmp_path / "run"  # a copy: the shared run must stay as training left it for the other tests
    copy_run(trained_run.dir, run)
    status, out, _ = cli(["diagnose", run, "--json"])
    report = json.loads(out)
    assert status == (0 if report["healthy"] else 1)
    assert report["status"] == "finished" and report["iteration"] == 20 and report["records"] == 4
    assert "vanishing-gradient" not in report["skipped"]  # gradient norms: logged at every log step
    assert "class-drift" in report["skipped"]  # 20 iterations: shorter than the class probe's interval
    grid = read_grid(run / "samples" / "iter_00000020.png")
    assert grid.shape == (64, 1, 28, 28) and -1 <= grid.min() and grid.max() <= 1
    assert (run / "diagnosis" / "losses.png").exists()


def test_a_real_broken_run_seed_relu(small_npz, tmp_path, cli):
    out = tmp_path / "relu"
    status, _, err = cli(["train", "--preset", "seed-relu", "--data", small_npz, "--iterations", 30, "--log-every",
                          4, "--sample-every", 10, "--checkpoint-every", 0, "--no-progress", "--out", out])
    assert status == 0, err
    status, text, _ = cli(["diagnose", out])
    assert status == 1 and "[flat-samples]" in text and "--g-activation tanh" in text
    report = build_report(out)
    flat = next(f for f in report.findings if f.code == "flat-samples")
    assert flat.source == "grids" and flat.first_iteration <= 30 and flat.active_at_end
    # What the replay finds, the training loop said as it happened: on stderr and in the lines' warnings.
    _, records, evaluations = read_run(out)
    live = [code for r in records + evaluations for code in r.get("warnings", [])]
    assert {f.code for f in report.findings} <= set(live)
    assert all(f"warning at iteration {f.first_iteration}" in err for f in report.findings if f.source == "grids")
    assert all(r["grad_norm_g"] >= 0 and r["grad_norm_d"] > 0 for r in records)
