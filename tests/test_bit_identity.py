"""The move of the flat package into layered subpackages changed no number.

The same short fixed-seed runs (tests/bit_identity.py) are trained by the code as it was before the move (taken
from git) and by the code as it is, on this machine, in one test: every checkpoint tensor, setting, metrics value,
sample grid and exported weight must be bit-identical. Where git history is not at hand, the digests recorded on
the machine named in tests/data/layout_move_digests.json are the reference, used only on a machine like it
(float results' last bits depend on the CPU's kernels). A run changed on purpose since then is named, with
where that change is checked, in CHANGED_SINCE_THE_MOVE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import REPO

BEFORE_MOVE = "ebb85a62ba4a7148a75aa6c0744cdfeb4f353a38"  # main before mnist_gan/ became subpackages
RECORDED = REPO / "tests" / "data" / "layout_move_digests.json"
# Runs whose numbers were changed on purpose after the move, and where that change is checked instead
CHANGED_SINCE_THE_MOVE = {
    "seed": "G's upsample+convolve pairs are computed on the small image (UpsampledConv2d): the same function, "
            "other rounding; tests/test_gan_fast_layers.py bounds the difference",
}


def digests(package_root: Path, data: Path, work: Path) -> dict:
    """Run the harness with the package found under package_root; return its JSON."""
    env = dict(os.environ, PYTHONPATH=str(package_root), OMP_NUM_THREADS="1", MNIST_GAN_OFFLINE="1")
    done = subprocess.run([sys.executable, str(REPO / "tests" / "bit_identity.py"), str(data), str(work)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert Path(result["package"]) == package_root / "mnist_gan", "the harness imported another copy of the package"
    return result


def package_before_move(into: Path) -> Path | None:
    """mnist_gan/ as it was at BEFORE_MOVE, extracted under `into`; None without git or that commit."""
    if shutil.which("git") is None:
        return None
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", BEFORE_MOVE, "mnist_gan"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        return None
    into.mkdir(parents=True, exist_ok=True)
    (into / "archive.tar").write_bytes(archive.stdout)
    with tarfile.open(into / "archive.tar") as tar:
        tar.extractall(into, filter="data")
    return into


# A setting added since the move, recorded at one of these values, is off: it cannot have changed a number (the
# harness' flags never turn one on)
OFF = {"False", "0", "0.0", "None"}
SETTINGS = ("config.json/", "ckpt/config/")


def added_and_off(key: str, old: dict, new: dict) -> bool:
    return key not in old and key.startswith(SETTINGS) and new.get(key) in OFF


def differences(before: dict, after: dict) -> list[str]:
    out = []
    for case in sorted(set(before) | set(after)):
        old, new = before.get(case, {}), after.get(case, {})
        old_tensors, new_tensors = old.get("tensors", {}), new.get("tensors", {})
        for key in sorted(set(old_tensors) | set(new_tensors)):
            if old_tensors.get(key) != new_tensors.get(key) and not added_and_off(key, old_tensors, new_tensors):
                out.append(f"{case}: {key}")
        if old.get("metrics") != new.get("metrics"):
            out.append(f"{case}: metrics.jsonl")
    return out


def test_fixed_seed_runs_are_bit_identical_to_the_code_before_the_move(tmp_path, small_npz):
    after = digests(REPO, small_npz, tmp_path / "after")
    old_tree = package_before_move(tmp_path / "before")
    if old_tree is not None:
        before = digests(old_tree, small_npz, tmp_path / "before-runs")
        assert before["machine"] == after["machine"]
    else:
        before = json.loads(RECORDED.read_text())
        if before["machine"] != after["machine"]:
            pytest.skip(f"no git history and the recorded digests come from another machine ({before['machine']})")
    assert len(after["runs"]) == 4 and all(len(run["tensors"]) > 80 for run in after["runs"].values())
    unchanged = [case for case in after["runs"] if case not in CHANGED_SINCE_THE_MOVE]
    assert len(unchanged) == 3
    assert differences({case: before["runs"][case] for case in unchanged},
                       {case: after["runs"][case] for case in unchanged}) == []


def test_the_recorded_digests_are_the_code_before_the_move_on_this_kind_of_machine(tmp_path, small_npz):
    """The stored reference is what the code before the move computes (where this machine is like the recorder's)."""
    recorded = json.loads(RECORDED.read_text())
    old_tree = package_before_move(tmp_path / "before")
    if old_tree is None:
        pytest.skip("no git history here: the first test compares against the recording instead")
    before = digests(old_tree, small_npz, tmp_path / "runs")
    if recorded["machine"] != before["machine"]:
        pytest.skip(f"the digests were recorded on another machine ({recorded['machine']})")
    assert differences(recorded["runs"], before["runs"]) == []


def test_a_setting_added_since_the_move_counts_only_when_it_is_on():
    before = {"run": {"tensors": {"ckpt/G/w": "aa", "config.json/train/lr": "0.1"}, "metrics": [{"d_loss": 1.0}]}}
    off = {"run": {"tensors": {**before["run"]["tensors"], "config.json/train/new_term": "False",
                               "ckpt/config/train/new_term": "0.0"}, "metrics": [{"d_loss": 1.0}]}}
    assert differences(before, off) == []
    on = {"run": {"tensors": {**off["run"]["tensors"], "config.json/train/new_term": "True"},
                  "metrics": [{"d_loss": 1.0}]}}
    assert differences(before, on) == ["run: config.json/train/new_term"]
    changed = {"run": {"tensors": {**off["run"]["tensors"], "ckpt/G/w": "ab"}, "metrics": [{"d_loss": 2.0}]}}
    assert differences(before, changed) == ["run: ckpt/G/w", "run: metrics.jsonl"]
    assert differences(off, before) == ["run: ckpt/config/train/new_term", "run: config.json/train/new_term"]
