"""Mistakes a user can make end as one short line and exit status 2, never a traceback: out-of-range integers,
absurd model sizes, a batch of one with BatchNorm, a hand-edited config.json, non-finite settings, huge quoted
values, unwritable caches and outputs; and `evaluate --json` prints strict JSON.

Every test runs the real entry point, `mnist_gan.cli.parser.main`, on 64 real digits.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    TINY_DCGAN,
    cli_env,
    deep,
    forbid_classifier_training,
    one_error_line,
    tree_snapshot,
    untrained_classifier,
)

from mnist_gan.cli import commands as commands_module
from mnist_gan.cli import parser as cli_module
from mnist_gan.diagnosis.detectors import divergence_hint
from mnist_gan.errors import MAX_MESSAGE_CHARS, MnistGanError, quote, shorten
from mnist_gan.evaluation import classifier as C
from mnist_gan.io.files import check_writable
from mnist_gan.settings.config import RunConfig, preset
from mnist_gan.settings.config_file import MAX_CONFIG_BYTES
from mnist_gan.settings.fieldtypes import MAX_TEXT_CHARS
from mnist_gan.settings.validation import (
    MAX_BATCH_SIZE,
    MAX_NUM_CLASSES,
    MAX_PENALTY_WEIGHT,
    MAX_SEED,
    MAX_WIDTH,
    MAX_Z_DIM,
    validate,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, digits64) -> Path:
    """A finished one-iteration run to sample from."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert cli_module.main(["train", "--data", str(digits64), "--out", str(out), *TINY_DCGAN, "--iterations", "1"]) == 0
    return out


def run(cli_fixture, argv) -> tuple[int, str, str]:
    return cli_fixture([str(arg) for arg in argv])


def train_argv(data: Path, out: Path, *extra) -> list:
    return ["train", "--data", data, "--out", out, *TINY_DCGAN, "--iterations", "1", *extra]


# ------------------------------------------------------------------------------------------ integers

@pytest.mark.parametrize("extra, flag", [
    (["--seed", str(2**64)], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(MAX_SEED + 1)], "--seed"),
    (["--log-every", str(2**70)], "--log-every"),
    (["--iterations", str(2**63)], "--iterations"),
    (["--limit", str(-(2**80))], "--limit"),
    (["--seed", "9" * 5000], "--seed"),  # longer than Python converts: argparse's own refusal, shortened
])
def test_out_of_range_training_integers(cli, tmp_path, digits64, extra, flag):
    status, _, err = run(cli, train_argv(digits64, tmp_path / "run", *extra))
    assert status == 2
    assert flag in one_error_line(err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["generate", "interpolate", "evaluate"])
@pytest.mark.parametrize("value", [str(2**64), "-1", str(MAX_SEED + 1), "1e3"])
def test_out_of_range_seeds_of_sampling_commands(cli, tmp_path, command, value):
    status, _, err = run(cli, [command, tmp_path / "no-such-run", "--seed", value])
    assert status == 2
    line = one_error_line(err)
    assert "--seed" in line and ("0..4294967295" in line or "expected an integer" in line)


@pytest.mark.parametrize("argv, flag", [
    (["generate", "RUN", "-n", str(2**64)], "--n"),
    (["generate", "RUN", "--digit", str(-(2**64))], "--digit"),
    (["generate", "RUN", "--nrow", str(2**100)], "--nrow"),
    (["interpolate", "RUN", "--steps", str(2**64)], "--steps"),
    (["interpolate", "RUN", "--from-digit", str(2**64)], "--from-digit"),
    (["interpolate", "RUN", "--scale", str(2**64)], "--scale"),
    (["evaluate", "RUN", "-n", str(cli_module.MAX_EVALUATE_SAMPLES + 1)], "--n"),
    (["evaluate", "RUN", "-n", "0"], "--n"),
])
def test_other_integer_flags_are_bounded_before_torch_sees_them(cli, tmp_path, argv, flag):
    status, _, err = run(cli, [tmp_path if a == "RUN" else a for a in argv])
    assert status == 2 and flag in one_error_line(err)


def test_the_largest_seed_trains_shuffled_and_samples(cli, tmp_path, digits64, tiny_run):
    """The bound is usable: seed * 1_000_003 + epoch (the shuffle) and numpy's RandomState both accept it."""
    out = tmp_path / "run"
    status, _, err = run(cli, train_argv(digits64, out, "--seed", MAX_SEED, "--shuffle"))
    assert status == 0, err
    assert RunConfig.from_dict(json.loads((out / "config.json").read_text())).train.seed == MAX_SEED
    status, _, err = run(cli, ["generate", tiny_run, "-n", 4, "--seed", MAX_SEED, "--out", tmp_path / "g.png"])
    assert status == 0, err


# ------------------------------------------------------------------------------------------ model sizes

@pytest.mark.parametrize("extra, flag", [
    (["--z-dim", "3000000000"], "--z-dim"),
    (["--z-dim", str(MAX_Z_DIM + 1)], "--z-dim"),
    (["--preset", "dcgan", "--width", "3000000000"], "--width"),
    (["--preset", "dcgan", "--width", str(MAX_WIDTH + 1)], "--width"),
    (["--preset", "dcgan", "--conditional", "--num-classes", "3000000000"], "--num-classes"),
    (["--num-classes", str(MAX_NUM_CLASSES + 1)], "--num-classes"),
    (["--batch-size", str(MAX_BATCH_SIZE + 1)], "--batch-size"),
])
def test_absurd_model_sizes_are_refused_before_anything_is_built(cli, tmp_path, digits64, monkeypatch, extra, flag):
    import mnist_gan.gan.step as step_module
    import mnist_gan.training.loop as train_module

    def never(*args, **kwargs):
        raise AssertionError("a model was built for a configuration validate should refuse")

    monkeypatch.setattr(step_module, "build_generator", never)
    monkeypatch.setattr(train_module, "load_dataset", never)
    status, _, err = run(cli, [*train_argv(digits64, tmp_path / "run"), *extra])
    assert status == 2
    line = one_error_line(err)
    assert flag in line and "at most" in line


@pytest.mark.parametrize("section, name, largest", [
    ("model", "z_dim", MAX_Z_DIM), ("model", "width", MAX_WIDTH), ("model", "num_classes", MAX_NUM_CLASSES),
    ("train", "batch_size", MAX_BATCH_SIZE), ("train", "gp_weight", MAX_PENALTY_WEIGHT),
    ("train", "r1_gamma", MAX_PENALTY_WEIGHT),
])
def test_each_bound_is_the_largest_value_accepted(section, name, largest):
    config = preset("dcgan")
    setattr(getattr(config, section), name, largest)
    validate(config)
    setattr(getattr(config, section), name, largest + 1)
    with pytest.raises(MnistGanError, match=f"--{name.replace('_', '-')} must"):
        validate(config)


def test_a_checkpoint_claiming_a_huge_model_is_refused_by_generate(cli, tmp_path, tiny_run):
    state = torch.load(tiny_run / "last.ckpt", weights_only=True)
    state["config"]["model"]["z_dim"] = 10**9
    torch.save(state, tmp_path / "huge.ckpt")
    status, _, err = run(cli, ["generate", tmp_path / "huge.ckpt", "--out", tmp_path / "g.png"])
    assert status == 2 and "--z-dim must be at most" in one_error_line(err)


# ------------------------------------------------------------------------------------------ batch of one

@pytest.mark.parametrize("name", ["seed", "dcgan", "recommended"])
def test_a_batch_of_one_with_batchnorm_is_refused_up_front(cli, tmp_path, digits64, name):
    status, _, err = run(cli, [*train_argv(digits64, tmp_path / "run"), "--preset", name, "--batch-size", 1])
    assert status == 2
    line = one_error_line(err)
    assert "--batch-size must be at least 2" in line and "BatchNorm" in line
    assert not (tmp_path / "run").exists()


def test_a_batch_of_one_through_the_python_api(tmp_path, digits64):
    from mnist_gan import train

    config = preset("seed")
    config.data.data, config.train.batch_size, config.train.iterations = str(digits64), 1, 1
    with pytest.raises(MnistGanError, match="--batch-size must be at least 2"):
        train(config, tmp_path / "run", progress=False)


def test_a_batch_of_two_still_trains_the_seed_model(cli, tmp_path, digits64):
    status, _, err = run(cli, [*train_argv(digits64, tmp_path / "run"), "--batch-size", 2])
    assert status == 0, err


# ------------------------------------------------------------------------------------------ config.json

HAND_EDITS = {  # name: (config.json text, words the message must hold)
    "string for an int": ('{"train": {"batch_size": "16"}}', "train.batch_size must be an integer"),
    "bool for an int": ('{"model": {"z_dim": true}}', "model.z_dim must be an integer"),
    "float for an int": ('{"data": {"limit": 64.0}}', "data.limit must be an integer or null"),
    "int for a bool": ('{"data": {"shuffle": 1}}', "data.shuffle must be true or false"),
    "number for text": ('{"train": {"loss": 3}}', "train.loss must be text"),
    "null for a float": ('{"train": {"lr": null}}', "train.lr must be a number"),
    "list for a section": ('{"model": [1, 2]}', "model must be a JSON object"),
    "not an object": ("[]", "must be a JSON object"),
    "unknown field": ('{"train": {"learning_rate": 1}}', "unknown train field: 'learning_rate'"),
    "unknown section": ('{"optimizer": {}}', "unknown run configuration field: 'optimizer'"),
    "huge float": ('{"train": {"lr": 1e999}}', "--lr must be positive and finite"),
    "NaN": ('{"train": {"ema_decay": NaN}}', "--ema-decay must be in [0, 1)"),
    "huge int": ('{"train": {"seed": 123456789012345678901234567890}}', "--seed must"),
    "int too long to parse": ('{"train": {"seed": ' + "9" * 5000 + "}}", "not valid JSON"),
    "absurd size": ('{"model": {"width": 2000000000}}', "--width must be at most"),
    "deep nesting": ('{"train": ' + deep(30_000) + "}", "nested too deeply"),  # within MAX_CONFIG_BYTES
    "deep nesting in a field": ('{"train": {"lr": ' + deep(500) + "}}", "train.lr must be a number, got a list"),
    "long text": (json.dumps({"data": {"data": "x" * (MAX_TEXT_CHARS + 1)}}), "data.data must be at most"),
    "too large": (json.dumps({"data": {"data": "x" * MAX_CONFIG_BYTES}}), "larger than"),
    "not UTF-8": (b'{"preset": "\xff"}', "not valid JSON"),
}


@pytest.mark.parametrize("kind", HAND_EDITS)
def test_hand_edited_config_json_is_refused_naming_the_field(cli, tmp_path, kind):
    """A run stopped before its first checkpoint resumes from config.json, which a user may have edited."""
    text, words = HAND_EDITS[kind]
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    path = run_dir / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = tree_snapshot(run_dir)
    started = time.perf_counter()
    status, _, err = run(cli, ["train", "--resume", run_dir, "--no-progress"])
    assert status == 2
    line = one_error_line(err)
    assert words in line and str(path) in line, line
    assert time.perf_counter() - started < 5
    assert tree_snapshot(run_dir) == before


def test_a_fifo_as_config_json_does_not_block(cli, tmp_path):
    from mnist_gan.settings.config_file import read_config_file

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    os.mkfifo(run_dir / "config.json")
    with pytest.raises(MnistGanError, match="not a regular file"):
        read_config_file(run_dir / "config.json")
    status, _, err = run(cli, ["train", "--resume", run_dir, "--no-progress"])  # no writer: must not wait for one
    assert status == 2
    one_error_line(err)


def test_shared_structures_in_a_checkpoint_config_are_not_expanded(cli, tmp_path, tiny_run):
    """A "billion laughs" value: 40 levels of a list holding itself twice is 2**40 items if walked or printed."""
    bomb: list = [0]
    for _ in range(40):
        bomb = [bomb, bomb]
    started = time.perf_counter()
    with pytest.raises(MnistGanError, match=r"^model.width must be an integer, got a list of 2 items$"):
        RunConfig.from_dict({"model": {"width": bomb}})
    many = {f"k{i}": bomb for i in range(1000)}
    with pytest.raises(MnistGanError, match=r"^unknown model fields: 'k0', 'k1', 'k2' and 997 more$"):
        RunConfig.from_dict({"model": many})
    state = torch.load(tiny_run / "last.ckpt", weights_only=True)
    state["config"]["model"]["width"] = bomb
    torch.save(state, tmp_path / "bomb.ckpt")
    status, _, err = run(cli, ["generate", tmp_path / "bomb.ckpt", "--out", tmp_path / "g.png"])
    assert status == 2
    one_error_line(err)
    assert time.perf_counter() - started < 10


def test_an_untouched_config_json_still_resumes(cli, tmp_path, digits64):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = preset("seed")
    config.data.data, config.train.batch_size, config.train.iterations = str(digits64), 16, 1
    config.train.device, config.train.sample_every = "cpu", 0
    (run_dir / "config.json").write_text(json.dumps(config.to_dict()))
    status, _, err = run(cli, ["train", "--resume", run_dir, "--no-progress"])
    assert status == 0, err
    assert (run_dir / "checkpoints" / "iter_00000001.ckpt").exists()


# ------------------------------------------------------------------------------------------ float settings

@pytest.mark.parametrize("extra, flag", [
    (["--loss", "wgan-gp", "--gp-weight", "inf"], "--gp-weight"),
    (["--loss", "wgan-gp", "--gp-weight", "1e30"], "--gp-weight"),
    (["--gp-weight", "nan"], "--gp-weight"),
    (["--r1-gamma", "inf"], "--r1-gamma"),
    (["--lr", "inf"], "--lr"),
    (["--lr-d", "inf"], "--lr-d"),
    (["--lr-g", "nan"], "--lr-g"),
    (["--momentum", "inf"], "--momentum"),
    (["--optimizer", "adam", "--beta2", "nan"], "--beta2"),
    (["--ema-decay", "inf"], "--ema-decay"),
    (["--label-smoothing=-inf"], "--label-smoothing"),
    (["--max-minutes", "inf"], "--max-minutes"),
])
def test_non_finite_or_absurd_float_settings_are_refused_up_front(cli, tmp_path, digits64, extra, flag):
    status, _, err = run(cli, [*train_argv(digits64, tmp_path / "run"), *extra])
    assert status == 2
    line = one_error_line(err)
    assert flag in line and "training diverged" not in line
    assert not (tmp_path / "run").exists()


def _nan_loss(name: str, monkeypatch) -> None:
    """Make D's loss of `name` NaN from its first call on."""
    from mnist_gan.gan.losses import LOSSES

    original = LOSSES[name]
    monkeypatch.setitem(LOSSES, name, original._replace(d=lambda *a, **k: original.d(*a, **k) * float("nan")))


def test_divergence_names_the_penalty_weight_not_the_learning_rate(cli, tmp_path, digits64, monkeypatch):
    _nan_loss("wgan-gp", monkeypatch)
    status, _, err = run(cli, [*train_argv(digits64, tmp_path / "run"), "--preset", "seed", "--loss", "wgan-gp",
                             "--gp-weight", 5000])  # seed: its D has no BatchNorm
    assert status == 2
    line = one_error_line(err)
    assert "training diverged" in line and "try a lower --gp-weight (now 5000; usually at most 100)" in line
    assert "--lr" not in line


def test_divergence_hint_names_what_stands_out():
    config = preset("seed")
    assert divergence_hint(config) == "try a lower --lr (now 0.001)"
    config.train.lr_d, config.train.r1_gamma = 0.5, 1000.0
    assert divergence_hint(config) == ("try a lower --lr-d (now 0.5; usually at most 0.01) and a lower --r1-gamma "
                                       "(now 1000; usually at most 100)")
    config = preset("seed")
    config.train.gp_weight = 1e5  # not used by the seed preset's loss: not a suspect
    assert divergence_hint(config) == "try a lower --lr (now 0.001)"


# ------------------------------------------------------------------------------------------ bounded messages

def test_a_huge_value_is_never_printed_whole(cli, tmp_path, digits64):
    huge = "x" * 20_000_000  # a 20 MB field
    status, _, err = run(cli, ["generate", tmp_path / huge, "--out", tmp_path / "g.png"])
    assert status == 2
    one_error_line(err)
    assert len(err) < MAX_MESSAGE_CHARS + 200
    status, _, err = run(cli, ["train", "--data", huge, "--out", tmp_path / "run", *TINY_DCGAN])
    assert status == 2 and "--data must be at most 4,096 characters" in one_error_line(err)
    assert len(err) < MAX_MESSAGE_CHARS + 200


def test_the_final_guard_in_main_bounds_any_message(cli, monkeypatch):
    def shout(args):
        raise MnistGanError("a" * 5_000_000 + "\nsecond line\n" + "the reason at the end")

    monkeypatch.setitem(cli_module.COMMANDS, "classifier", shout)
    status, _, err = run(cli, ["classifier"])
    assert status == 2
    line = one_error_line(err)
    assert len(err.splitlines()) == 1 and line.startswith("mnist-gan: error: aaa")
    assert line.endswith("the reason at the end") and "characters cut" in line


def test_quote_and_shorten_never_format_much():
    assert quote("abc") == "'abc'" and quote(12) == "12" and quote(None) == "None"
    assert quote("x" * 10_000_000).endswith("... (10,000,000 characters)") and len(quote("x" * 10**7)) < 120
    assert quote(10**5000) == "an integer of 16,610 bits"
    assert quote({"a": 1}) == "a dict of 1 key" and quote([[]] * 3) == "a list of 3 items"
    nested: list = []
    for _ in range(100_000):
        nested = [nested]  # repr() of this raises RecursionError
    assert quote(nested) == "a list of 1 item"
    text = shorten("start " + "m" * 100_000 + " end")
    assert len(text) <= MAX_MESSAGE_CHARS and text.startswith("start ") and text.endswith(" end")
    assert shorten("one\ntwo\n\nthree") == "one | two | three"


# ------------------------------------------------------------------------------------------ evaluate --json

@pytest.fixture
def quick_classifier(monkeypatch):
    """An untrained stand-in feature classifier: evaluate's pipeline runs for real, in a second."""
    monkeypatch.setattr(C, "train_classifier", untrained_classifier)


def test_evaluate_json_is_strict_when_a_figure_is_not_finite(cli, tmp_path, digits64, quick_classifier,
                                                             monkeypatch, mnist_5k):
    from mnist_gan.evaluation.evaluator import Evaluator

    real_evaluate = Evaluator.evaluate

    def with_nan(self, *args, **kwargs):
        result = real_evaluate(self, *args, **kwargs)
        result["fid"], result["class_histogram"][3] = float("nan"), float("inf")
        return result

    monkeypatch.setattr(Evaluator, "evaluate", with_nan)
    images = tmp_path / "images.npy"
    np.save(images, mnist_5k.images[:40].numpy())
    common = ["evaluate", images, "--data", digits64, "--cache-dir", tmp_path / "cache", "--device", "cpu"]
    status, out, err = run(cli, [*common, "--json"])
    assert status == 0, err

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    result = json.loads(out, parse_constant=refuse)  # NaN, Infinity: not JSON
    assert result["fid"] is None and result["class_histogram"][3] is None
    assert result["not_finite"] == ["fid", "class_histogram"]
    assert math.isfinite(result["kid"])
    status, out, err = run(cli, common)
    assert status == 0, err
    assert "not finite (nan/inf here, null with --json): fid, class_histogram" in out


def test_strict_json_guard():
    text, not_finite = commands_module.strict_json({"a": 1.0, "b": [1.0, float("-inf")], "c": "nan",
                                               "d": {"e": [float("nan")]}})
    assert json.loads(text) == {"a": 1.0, "b": [1.0, None], "c": "nan", "d": {"e": [None]}, "not_finite": ["b", "d"]}
    assert not_finite == ["b", "d"]
    assert commands_module.strict_json({"a": 1})[0] == '{"a": 1}'


# ------------------------------------------------------------------------------------------ warnings

def test_warnings_are_one_line_each(cli, monkeypatch):
    def noisy(args):
        np.log(np.zeros(1))  # numpy: RuntimeWarning, printed by Python with file, line and source
        warnings.warn("first line\nsecond line\nthird line", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setitem(cli_module.COMMANDS, "classifier", noisy)
    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        status, _, err = run(cli, ["classifier"])
        assert warnings.showwarning is shown  # the caller's display is back
    assert status == 0
    assert err.splitlines() == ["mnist-gan: warning: divide by zero encountered in log",
                                "mnist-gan: warning: first line"]


def test_warnings_in_a_real_process_are_one_line(tmp_path):
    """In a real process (default warning filters), a warning raised inside a command is one line."""
    code = ("import sys, numpy as np; from mnist_gan.cli import parser as cli_module\n"
            "cli_module.COMMANDS['classifier'] = lambda args: int(np.log(np.zeros(1))[0] == 0)\n"
            "sys.exit(cli_module.main(['classifier']))")
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["mnist-gan: warning: divide by zero encountered in log"]


# ------------------------------------------------------------------------------------------ writability

@contextlib.contextmanager
def read_only(directory: Path):
    """No one may create files in `directory` meanwhile, root included (permissions, or immutable for root)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(0o755)
        return
    try:
        made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode == 0
    except OSError:
        made = False
    if not made:
        pytest.skip("running as root, and chattr cannot make a directory immutable here")
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


@pytest.fixture
def unwritable(tmp_path):
    directory = tmp_path / "locked"
    directory.mkdir()
    with read_only(directory):
        yield directory


@pytest.mark.parametrize("where", ["read-only directory", "below a file"])
def test_classifier_with_an_unwritable_cache_refuses_before_training(cli, tmp_path, digits64, monkeypatch,
                                                                     unwritable, where):
    forbid_classifier_training(monkeypatch)
    if where == "below a file":
        (tmp_path / "a_file").write_text("mine")
        cache = tmp_path / "a_file" / "cache"
    else:
        cache = unwritable
    started = time.perf_counter()
    status, _, err = run(cli, ["classifier", "--data", digits64, "--cache-dir", cache, "--device", "cpu"])
    assert status == 2
    line = one_error_line(err)
    assert ("cannot write" in line or "cannot be created" in line) and "--cache-dir" in line and str(cache) in line
    assert time.perf_counter() - started < 10
    assert list(unwritable.iterdir()) == []  # the probe left nothing


def test_a_read_only_cache_holding_the_classifier_is_still_used(cli, tmp_path, digits64, quick_classifier,
                                                                monkeypatch):
    cache = tmp_path / "cache"
    status, _, err = run(cli, ["classifier", "--data", digits64, "--cache-dir", cache, "--device", "cpu"])
    assert status == 0, err
    forbid_classifier_training(monkeypatch)
    with read_only(cache / "classifiers"), read_only(cache):
        status, out, err = run(cli, ["classifier", "--data", digits64, "--cache-dir", cache, "--device", "cpu",
                                     "--json"])
    assert status == 0, err
    assert json.loads(out)["path"].startswith(str(cache))


@pytest.mark.parametrize("command", ["generate", "interpolate", "train"])
def test_an_unwritable_output_is_refused_before_the_work(cli, tmp_path, digits64, tiny_run, monkeypatch, unwritable,
                                                         command):
    import mnist_gan.run.checkpoint as checkpoint_module
    import mnist_gan.training.loop as train_module

    def never(*args, **kwargs):
        raise AssertionError("started the work although the output cannot be written")

    monkeypatch.setattr(checkpoint_module, "load_generator", never)
    monkeypatch.setattr(train_module, "load_dataset", never)
    argv = {"generate": ["generate", tiny_run, "--out", unwritable / "g.png"],
            "interpolate": ["interpolate", tiny_run, "--out", unwritable / "walk.png"],
            "train": train_argv(digits64, unwritable / "run")}[command]
    status, _, err = run(cli, argv)
    assert status == 2
    line = one_error_line(err)
    assert "cannot write there" in line and "--out" in line
    assert list(unwritable.iterdir()) == []


def test_check_writable_creates_nothing(tmp_path):
    check_writable(tmp_path / "not" / "yet" / "there", "why")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("mine")
    with pytest.raises(MnistGanError, match=r"is not a directory\); why$"):
        check_writable(tmp_path / "file" / "below", "why")
