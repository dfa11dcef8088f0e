"""The DETECTORS table: one entry per problem the diagnosis knows, whose advice names real flags, and never what the
run being advised already uses (issue 25: a `recommended` run was told to try `--preset recommended`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import mnist_gan.training.recorder as recorder_module
from mnist_gan.cli.parser import build_parser
from mnist_gan.diagnosis import signs
from mnist_gan.diagnosis.detectors import (
    DETECTORS,
    ONLY_SETTINGS,
    in_use,
    record_problems,
    sample_problems,
    untried,
)
from mnist_gan.diagnosis.report import build_report, format_report
from mnist_gan.run.directory import RunDir
from mnist_gan.sampling.grids import save_grid
from mnist_gan.settings.config import preset


def test_every_problem_a_sign_reports_has_one_entry():
    source = Path(signs.__file__).read_text(encoding="utf-8")
    reported = set(re.findall(r'Problem\(\s*"([a-z-]+)"', source))
    assert reported == set(DETECTORS)
    for code, entry in DETECTORS.items():
        assert entry.code == code and entry.title and entry.causes and entry.flags, code
        assert entry.reads in ("grids", "records", "evaluations") and callable(entry.find), code


def test_the_advice_names_only_flags_that_train_takes():
    parser = build_parser()
    for entry in DETECTORS.values():
        for advice in entry.flags:
            if ONLY_SETTINGS.fullmatch(advice):  # flags with their values: `mnist-gan train` takes them as written
                parser.parse_args(["train", *advice.split(" (")[0].split()])
            else:  # words: each flag they name exists
                for flag in re.findall(r"--[a-z0-9-]+", advice):
                    assert not parser.parse_known_args(["train", f"{flag}=1"])[1], (entry.code, advice)


@pytest.mark.parametrize("advice, config, used", [
    ("--loss lsgan", {"train": {"loss": "lsgan"}}, True),
    ("--loss hinge", {"train": {"loss": "lsgan"}}, False),
    ("--spectral-norm", {"model": {"spectral_norm": True}}, True),
    ("--spectral-norm", {"model": {"spectral_norm": False}}, False),
    ("--preset recommended", {"preset": "recommended"}, True),
    ("--preset recommended", {"preset": "seed"}, False),
    ("--lr 0.0002", {"train": {"lr": 0.0002}}, True),
    ("--lr 0.00002 (10x smaller)", {"train": {"lr": 0.00002}}, True),
    ("--lr-g 0.0001", {"train": {"lr_g": None}}, False),
    ("--optimizer adam --beta1 0.5", {"train": {"optimizer": "adam", "beta1": 0.5}}, True),
    ("--optimizer adam --beta1 0.5", {"train": {"optimizer": "adam", "beta1": 0.0}}, False),
    ("drop --limit", {"data": {"limit": None}}, True),  # nothing to drop
    ("drop --limit", {"data": {"limit": 32}}, False),
    ("drop --limit", {}, False),  # an old config that does not say: keep the advice
    ("--conditional", {}, False),
    ("fewer --iterations", {"train": {"iterations": 10}}, False),  # words: never judged
])
def test_in_use_reads_the_runs_settings(advice, config, used):
    assert in_use(advice, config) is used


def test_a_recommended_run_is_never_advised_what_it_uses():
    recommended, seed_relu = preset("recommended"), preset("seed-relu")
    flat = torch.zeros(64, 1, 28, 28)
    [problem] = sample_problems(flat, recommended)
    assert problem.code == "flat-samples" and "--preset recommended" not in problem.message
    assert "--g-activation tanh" not in problem.message and "--lr 0.0002" in problem.message  # it uses 4e-4
    [problem] = sample_problems(flat, seed_relu)  # the seed-relu run is told both
    assert "--preset recommended" in problem.message and "--g-activation tanh" in problem.message
    for code in DETECTORS:
        for flag in untried(code, recommended):
            assert not in_use(flag, recommended.to_dict()), (code, flag)
    assert "--preset recommended" not in untried("no-progress", recommended)
    assert "--loss lsgan" not in untried("mode-collapse", recommended)


def test_the_warning_while_training_and_the_report_leave_out_what_the_run_uses(small_npz, tmp_path, cli,
                                                                               monkeypatch):
    def flat(images, config=None):  # the grids as a collapsed G would draw them
        return sample_problems(torch.zeros_like(images), config)

    monkeypatch.setattr(recorder_module, "sample_problems", flat)
    out = tmp_path / "recommended"
    status, _, err = cli(["train", "--preset", "recommended", "--width", 8, "--data", small_npz, "--limit", 160,
                          "--batch-size", 16, "--iterations", 2, "--log-every", 1, "--sample-every", 1,
                          "--checkpoint-every", 0, "--no-progress", "--out", out])
    assert status == 0, err
    warning = next(line for line in err.splitlines() if "samples are flat" in line)
    assert "--lr 0.0002" in warning and "--preset recommended" not in warning and "--g-activation" not in warning
    # The report reads the same advice from the same table, for the run's own settings.
    save_grid(torch.zeros(64, 1, 28, 28), RunDir(out).grid(2), nrow=8)
    report = build_report(out)
    finding = next(f for f in report.findings if f.code == "flat-samples")
    assert finding.flags and "--preset recommended" not in finding.flags and "--g-activation tanh" not in finding.flags
    assert "--preset recommended" not in format_report(report)


def test_without_a_config_the_advice_is_whole():
    winning = {"d_loss": 0.0005, "g_loss": 7.6, "d_x": 0.9995, "d_g_z": 0.0004}
    [problem] = record_problems([winning] * 3)
    assert problem.flags == DETECTORS["d-wins"].flags
    assert problem.message.startswith(problem.finding) and all(flag in problem.message for flag in problem.flags)
