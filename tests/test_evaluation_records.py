"""`mnist-gan evaluate RUN` records its figures in the run (evaluations.jsonl), where `diagnose` reads them, across
a resume and never through a link; a generator file alone records nothing. Every line a run writes, and
`diagnose --json`, is strict JSON: a NaN figure or setting is null, which the readers take as no number."""

from __future__ import annotations

import json
import math
import os

import pytest
from helpers import TINY_DCGAN, StubEvaluator, copy_run, tree_snapshot, untrained_classifier

from mnist_gan.cli.parser import main
from mnist_gan.run.history import EVALUATE, read_run


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A classifier cache whose feature classifier is an untrained stand-in: evaluate runs for real, in a second."""
    from mnist_gan.evaluation import classifier

    monkeypatch.setattr(classifier, "train_classifier", untrained_classifier)
    return tmp_path / "cache"


def refuse(constant):
    raise AssertionError(f"{constant} is not JSON")


def strict(text: str):
    """Parse `text` as strict JSON: NaN, Infinity and -Infinity are refused."""
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, digits64):
    """4 iterations of a tiny dcgan on 64 digits: checkpoints at 2 and 4."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", str(digits64), "--out", str(run), *TINY_DCGAN, "--iterations", "4",
                 "--checkpoint-every", "2"]) == 0
    return run


def _evaluate(capsys, source, cache, *extra) -> dict:
    assert main(["evaluate", str(source), "-n", "100", "--seed", "1", "--json", "--cache-dir", str(cache),
                 "--device", "cpu", *extra]) == 0
    return strict(capsys.readouterr().out)


def _diagnose(capsys, run) -> tuple[dict, str]:
    main(["diagnose", str(run), "--json", "--no-plots"])
    report = strict(capsys.readouterr().out)
    main(["diagnose", str(run), "--no-plots"])
    return report, capsys.readouterr().out


def test_diagnose_shows_what_evaluate_recorded_across_a_resume(tmp_path, tiny_run, cache, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    before, _ = _diagnose(capsys, run)
    assert before["evaluations"] == 0
    result = _evaluate(capsys, run, cache)
    assert math.isfinite(result["fid"]) and result["fid"] > 0
    (line,) = [strict(text) for text in (run / "evaluations.jsonl").read_text().splitlines()]
    assert (line["kind"], line["source"], line["iteration"], line["checkpoint"]) == \
        ("eval", EVALUATE, 4, "iter_00000004.ckpt")
    assert line["fid"] == result["fid"] and line["eval_n"] == 100 and line["class_histogram"] == \
        result["class_histogram"]
    event = f"mnist-gan evaluate: FID {result['fid']:.1f} (100 samples)"
    report, text = _diagnose(capsys, run)
    assert report["evaluations"] == 1
    assert {"iteration": 4, "event": event} in report["timeline"]
    assert "4 log lines, 1 evaluations)" in text and f"iteration       4  {event}" in text

    # A resume cuts metrics.jsonl back to its checkpoint; the evaluation of iteration 4, whose generator the resume
    # reproduces bit for bit, stays as it was. A second evaluation is appended, of the newest checkpoint.
    recorded = (run / "evaluations.jsonl").read_bytes()
    assert main(["train", "--resume", str(run), "--iterations", "6", "--no-progress"]) == 0
    capsys.readouterr()
    assert (run / "evaluations.jsonl").read_bytes() == recorded
    again = _evaluate(capsys, run, cache)
    _, _, evaluations = read_run(run)
    assert [(e["iteration"], e["fid"]) for e in evaluations] == [(4, result["fid"]), (6, again["fid"])]
    report, _ = _diagnose(capsys, run)
    assert report["evaluations"] == 2 and {"iteration": 4, "event": event} in report["timeline"]

    # --overwrite replaces the run, the file with it (it is a run's own file, not a stranger's).
    config = strict((run / "config.json").read_text())
    assert main(["train", "--data", config["data"]["data"], "--out", str(run), "--overwrite", *TINY_DCGAN,
                 "--iterations", "2"]) == 0
    assert not (run / "evaluations.jsonl").exists()


def test_evaluate_of_a_generator_file_writes_nothing(tmp_path, tiny_run, cache, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    before = tree_snapshot(run)
    for source in (run / "generator.safetensors", run / "checkpoints" / "iter_00000002.ckpt"):
        _evaluate(capsys, source, cache)
    assert tree_snapshot(run) == before


@pytest.mark.parametrize("planted", ["link", "directory"])
def test_evaluate_never_writes_through_a_link_or_into_a_folder(tmp_path, tiny_run, cache, capsys,
                                                               planted):
    run = copy_run(tiny_run, tmp_path / "run")
    target = tmp_path / "someone-elses.txt"
    target.write_text("keep me\n")
    if planted == "link":
        os.symlink(target, run / "evaluations.jsonl")
    else:
        (run / "evaluations.jsonl").mkdir()
    before = tree_snapshot(run)
    assert main(["evaluate", str(run), "-n", "100", "--json", "--cache-dir", str(cache), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert math.isfinite(strict(out)["fid"])  # the figures are printed all the same
    assert "this evaluation is not recorded in the run" in err and "not a regular file" in err
    assert target.read_text() == "keep me\n" and tree_snapshot(run) == before


def test_evaluate_of_a_read_only_run_says_it_is_not_recorded(tmp_path, tiny_run, cache, capsys, monkeypatch):
    import errno

    from mnist_gan.run import history

    run = copy_run(tiny_run, tmp_path / "run")
    real_open = os.open

    def read_only(path, flags, *args):  # a read-only file system (chmod cannot stop root)
        if str(path).endswith("evaluations.jsonl") and flags & os.O_WRONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(history.os, "open", read_only)
    before = tree_snapshot(run)
    assert main(["evaluate", str(run), "-n", "100", "--cache-dir", str(cache), "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "FID" in out and "this evaluation is not recorded in the run" in err and "Read-only file system" in err
    assert tree_snapshot(run) == before


class NanEvaluator(StubEvaluator):
    """The stub's figures, with a FID that is not a number and an infinite share in the class histogram."""

    def evaluate_generator(self, *args, **kwargs) -> dict:
        result = super().evaluate_generator(*args, **kwargs)
        result["fid"], result["class_histogram"][3] = float("nan"), float("inf")
        return result


def test_a_nan_figure_is_written_as_null_and_read_as_no_number(tmp_path, digits64, monkeypatch, capsys):
    from mnist_gan.evaluation.evaluator import Evaluator

    monkeypatch.setattr(Evaluator, "for_dataset", classmethod(lambda cls, *args, **kwargs: NanEvaluator()))
    run = tmp_path / "run"
    assert main(["train", "--data", str(digits64), "--out", str(run), *TINY_DCGAN, "--iterations", "4",
                 "--eval-every", "2"]) == 0
    capsys.readouterr()
    lines = [strict(text) for text in (run / "metrics.jsonl").read_text().splitlines()]
    evaluations = [line for line in lines if line["kind"] == "eval"]
    assert [e["iteration"] for e in evaluations] == [2, 4]
    assert all(e["fid"] is None and e["class_histogram"][3] is None and e["kid"] == 0.5 for e in evaluations)
    _, _, read = read_run(run)
    assert [e["fid"] for e in read] == [None, None]
    report, text = _diagnose(capsys, run)
    assert report["evaluations"] == 2 and "FID" not in json.dumps(report["timeline"])  # no number to show


def test_diagnose_json_writes_a_nan_setting_as_null(tmp_path, tiny_run, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    config["train"]["lr"], config["train"]["beta2"] = float("nan"), float("inf")
    (run / "config.json").write_text(json.dumps(config))  # Python's json writes NaN and Infinity
    report, _ = _diagnose(capsys, run)
    assert report["config"]["train"]["lr"] is None and report["config"]["train"]["beta2"] is None
    assert report["config"]["train"]["batch_size"] == 16
