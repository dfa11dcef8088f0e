"""One source of defaults: the field defaults are the default preset's values, every preset keeps the values it
had, a record that lacks a field keeps that feature off, `mnist-gan train [--preset NAME] --help` shows what that
command line runs, and `mnist-gan presets` lists how each preset differs from the default."""

from __future__ import annotations

import json
import re
import shlex
from types import SimpleNamespace

import pytest

from mnist_gan.cli.parser import named_preset
from mnist_gan.settings.config import DEFAULT_PRESET, PRESETS, SECTIONS, RunConfig, preset
from mnist_gan.settings.config_file import config_from_file, read_config_file
from mnist_gan.settings.fieldtypes import field_kinds
from mnist_gan.settings.validation import config_from_record

TODAY = {  # each preset's to_dict() before the field defaults became recommended's (commit 3a287a6)
    "seed": {
        "model": {"architecture": "seed", "z_dim": 100, "z_distribution": "uniform", "g_activation": "tanh",
                  "width": 16, "d_batchnorm": True, "spectral_norm": False, "conditional": False,
                  "num_classes": 10, "channels": 1, "self_condition": 0, "pack": 1},
        "data": {"data": "mnist", "cache_dir": None, "shuffle": False, "limit": None},
        "train": {"loss": "non-saturating", "optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "nesterov": True,
                  "beta1": 0.5, "beta2": 0.999, "batch_size": 32, "epochs": 30, "iterations": None,
                  "max_minutes": None, "seed": 0, "fake_in_eval_mode": True, "joint_d_batch": True,
                  "log_every": 10, "sample_every": 100, "checkpoint_every": 1000, "keep": 3, "eval_every": 0,
                  "tensorboard": False, "device": "auto", "precision": "auto", "compile": False, "lr_d": None,
                  "lr_g": None, "n_critic": 1, "gp_weight": 10.0, "r1_gamma": 0.0, "label_smoothing": 0.0,
                  "ema_decay": 0.0, "recluster_every": 0, "top_k": False, "top_k_min": 0.5, "diversity": 0.0,
                  "augment_shift": 0},
    },
    "seed-relu": {
        "model": {"architecture": "seed", "z_dim": 100, "z_distribution": "uniform", "g_activation": "relu",
                  "width": 16, "d_batchnorm": True, "spectral_norm": False, "conditional": False,
                  "num_classes": 10, "channels": 1, "self_condition": 0, "pack": 1},
        "data": {"data": "mnist", "cache_dir": None, "shuffle": False, "limit": None},
        "train": {"loss": "non-saturating", "optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "nesterov": True,
                  "beta1": 0.5, "beta2": 0.999, "batch_size": 32, "epochs": 30, "iterations": None,
                  "max_minutes": None, "seed": 0, "fake_in_eval_mode": True, "joint_d_batch": True,
                  "log_every": 10, "sample_every": 100, "checkpoint_every": 1000, "keep": 3, "eval_every": 0,
                  "tensorboard": False, "device": "auto", "precision": "auto", "compile": False, "lr_d": None,
                  "lr_g": None, "n_critic": 1, "gp_weight": 10.0, "r1_gamma": 0.0, "label_smoothing": 0.0,
                  "ema_decay": 0.0, "recluster_every": 0, "top_k": False, "top_k_min": 0.5, "diversity": 0.0,
                  "augment_shift": 0},
    },
    "dcgan": {
        "model": {"architecture": "dcgan", "z_dim": 100, "z_distribution": "normal", "g_activation": "tanh",
                  "width": 32, "d_batchnorm": True, "spectral_norm": False, "conditional": False,
                  "num_classes": 10, "channels": 1, "self_condition": 0, "pack": 1},
        "data": {"data": "mnist", "cache_dir": None, "shuffle": True, "limit": None},
        "train": {"loss": "non-saturating", "optimizer": "adam", "lr": 0.0002, "momentum": 0.9, "nesterov": True,
                  "beta1": 0.5, "beta2": 0.999, "batch_size": 64, "epochs": 100, "iterations": None,
                  "max_minutes": None, "seed": 0, "fake_in_eval_mode": False, "joint_d_batch": False,
                  "log_every": 10, "sample_every": 100, "checkpoint_every": 1000, "keep": 3, "eval_every": 0,
                  "tensorboard": False, "device": "auto", "precision": "auto", "compile": False, "lr_d": None,
                  "lr_g": None, "n_critic": 1, "gp_weight": 10.0, "r1_gamma": 0.0, "label_smoothing": 0.0,
                  "ema_decay": 0.0, "recluster_every": 0, "top_k": False, "top_k_min": 0.5, "diversity": 0.0,
                  "augment_shift": 0},
    },
    "recommended": {
        "model": {"architecture": "dcgan", "z_dim": 100, "z_distribution": "normal", "g_activation": "tanh",
                  "width": 32, "d_batchnorm": False, "spectral_norm": True, "conditional": False,
                  "num_classes": 10, "channels": 1, "self_condition": 100, "pack": 2},
        "data": {"data": "mnist", "cache_dir": None, "shuffle": True, "limit": None},
        "train": {"loss": "lsgan", "optimizer": "adam", "lr": 0.0004, "momentum": 0.9, "nesterov": True,
                  "beta1": 0.0, "beta2": 0.99, "batch_size": 32, "epochs": 100, "iterations": None,
                  "max_minutes": None, "seed": 0, "fake_in_eval_mode": False, "joint_d_batch": True,
                  "log_every": 10, "sample_every": 100, "checkpoint_every": 1000, "keep": 3, "eval_every": 0,
                  "tensorboard": False, "device": "auto", "precision": "auto", "compile": False, "lr_d": 0.0008,
                  "lr_g": None, "n_critic": 1, "gp_weight": 10.0, "r1_gamma": 0.0, "label_smoothing": 0.0,
                  "ema_decay": 0.999, "recluster_every": 0, "top_k": False, "top_k_min": 0.5, "diversity": 0.0,
                  "augment_shift": 0},
    },
}

# A config.json as runs wrote it before packing, self-conditioning, top-k, mode seeking, augmentation, EMA and
# TTUR existed (and before the data and most train fields were recorded): every field it lacks must stay off.
OLD_RECORD = {"preset": "dcgan",
              "model": {"architecture": "dcgan", "z_dim": 100, "z_distribution": "normal", "width": 32,
                        "d_batchnorm": True, "spectral_norm": False, "conditional": False, "num_classes": 10},
              "train": {"loss": "non-saturating", "optimizer": "adam", "lr": 2e-4, "beta1": 0.5, "beta2": 0.999,
                        "batch_size": 64, "epochs": 100, "seed": 4}}


def exact(values: dict) -> str:
    """A config's values as JSON text, so that 0 and 0.0, or 1 and True, differ."""
    return json.dumps(values)


def test_every_preset_resolves_to_the_values_it_had():
    assert list(PRESETS) == list(TODAY)
    for name, values in TODAY.items():
        assert exact(preset(name).to_dict()) == exact({"preset": name, **values}), name


def test_the_field_defaults_are_the_default_presets_values():
    assert DEFAULT_PRESET == "recommended"
    assert PRESETS[DEFAULT_PRESET] == RunConfig() == RunConfig(preset=DEFAULT_PRESET)
    for section, cls in SECTIONS.items():
        assert exact(RunConfig().to_dict()[section]) == exact(TODAY[DEFAULT_PRESET][section])
        assert cls() == getattr(preset(DEFAULT_PRESET), section)


def assert_record_kept(config: RunConfig, record: dict) -> None:
    """Each field the record holds has its value; each it lacks has the seed preset's (the feature off)."""
    for section in SECTIONS:
        for name, value in config.to_dict()[section].items():
            given = record.get(section, {})
            assert value == (given[name] if name in given else TODAY["seed"][section][name]), f"{section}.{name}"


def test_a_record_that_lacks_a_field_predates_it_so_the_feature_stays_off(tmp_path):
    config = RunConfig.from_dict(OLD_RECORD)
    assert_record_kept(config, OLD_RECORD)
    assert (config.preset, config.model.pack, config.model.self_condition, config.train.ema_decay,
            config.train.lr_d, config.train.top_k, config.train.augment_shift) == ("dcgan", 1, 0, 0.0, None, False, 0)
    assert config.data.shuffle is False, "the record kept no data fields: seed's, not dcgan's or recommended's"
    # a checkpoint's record, a run's config.json (what --resume reads) and an export's model metadata
    assert config_from_record(OLD_RECORD, "old.ckpt") == config
    (tmp_path / "config.json").write_text(json.dumps(OLD_RECORD))
    assert read_config_file(tmp_path / "config.json") == config
    exported = config_from_record({"model": {"z_dim": 100, "conditional": False}}, "old export").model
    assert (exported.architecture, exported.z_distribution, exported.pack, exported.self_condition) == \
        ("seed", "uniform", 1, 0)


def test_a_record_without_a_preset_is_custom_on_the_seed_presets_values(tmp_path):
    assert exact(RunConfig.from_dict({}).to_dict()) == exact({"preset": "custom", **TODAY["seed"]})
    record = {"model": {"z_dim": 12}, "train": {"lr": 0.01}}
    assert_record_kept(RunConfig.from_dict(record), record)
    for named in ({}, {"preset": "custom"}):  # --config: a file naming no preset, or custom, starts from seed's
        path = tmp_path / "c.json"
        path.write_text(json.dumps({**named, **record}))
        config = config_from_file(path)
        assert config.preset == "custom"
        assert_record_kept(config, record)
    config = config_from_file(path, "dcgan")  # --preset names the starting point
    assert config.preset == "dcgan" and (config.train.optimizer, config.model.z_dim) == ("adam", 12)


@pytest.fixture
def runs(monkeypatch, tmp_path):
    """`runs(argv)`: the RunConfig that `mnist-gan train ARGV` hands to train(), which is stubbed out."""
    import mnist_gan.training.loop as loop

    trained = []

    def train(config, out=None, **kwargs):
        trained.append(config)
        return SimpleNamespace(run_dir=tmp_path, checkpoint=tmp_path / "last.ckpt", interrupted=False)

    monkeypatch.setattr(loop, "train", train)
    monkeypatch.chdir(tmp_path)

    def run(argv: list[str]) -> RunConfig:
        from conftest import invoke_cli

        status, _, err = invoke_cli(["train", *argv])
        assert status == 0, err
        return trained.pop()

    return run


def help_defaults(argv: list[str]) -> dict[str, str]:
    """{flag: the text of its "(default: X)"} from the help `mnist-gan ARGV` prints."""
    from conftest import invoke_cli

    status, out, _ = invoke_cli(argv)
    assert status == 0
    shown = {}
    for entry in re.split(r"\n(?=  -)", out):  # each option's entry starts on a line of its own
        text = " ".join(entry.split("\n\n")[0].split())  # a blank line ends the group
        found = re.search(r"\(default: ([^()]*)\)$", text)
        if found:
            shown[text.split()[0].rstrip(",")] = found.group(1)
    return shown


def shown_value(text: str, kind: type) -> object:
    if text == "none":
        return None
    return {"True": True, "False": False}[text] if kind is bool else kind(text)


@pytest.mark.parametrize("preset_args,lr", [([], "0.0004"), (["--preset", "seed"], "0.001"),
                                             (["--preset=dcgan"], "0.0002"), (["--pres", "seed-relu"], "0.001")])
def test_help_shows_the_values_the_command_runs(preset_args, lr, runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # no line breaks inside a value (argparse breaks at hyphens)
    shown = help_defaults(["train", "--help", *preset_args])  # --help first: the help still knows the preset
    ran = runs(preset_args).to_dict()
    for section, cls in SECTIONS.items():
        for name, (kind, _) in field_kinds(cls).items():
            flag = "--" + name.replace("_", "-")
            assert flag in shown, f"{flag} shows no default"
            assert shown_value(shown[flag], kind) == ran[section][name], f"{flag} shows {shown[flag]}"
    assert shown["--lr"] == lr


def test_the_preset_named_on_the_command_line_picks_the_help(monkeypatch):
    assert named_preset([]) == named_preset(["train", "--lr", "1"]) == DEFAULT_PRESET
    assert named_preset(["train", "--preset", "seed", "--preset=dcgan"]) == "dcgan", "the last one, as argparse"
    assert named_preset(["train", "--prese", "seed"]) == "seed"
    assert named_preset(["train", "--preset", "nope"]) == named_preset(["train", "--", "--preset", "seed"]) == \
        DEFAULT_PRESET
    assert named_preset(["train", "--pre", "seed"]) == DEFAULT_PRESET, "ambiguous (--precision): argparse refuses"


def test_presets_json_lists_where_each_preset_differs_from_the_default():
    from conftest import invoke_cli

    status, out, _ = invoke_cli(["presets", "--json"])
    assert status == 0
    listing = json.loads(out)
    assert listing["default"] == DEFAULT_PRESET
    assert list(listing["presets"]) == [DEFAULT_PRESET, "seed", "seed-relu", "dcgan"]
    default = TODAY[DEFAULT_PRESET]
    for name, changes in listing["presets"].items():
        assert changes == {f"{section}.{key}": value for section in SECTIONS
                           for key, value in TODAY[name][section].items() if value != default[section][key]}
    assert listing["presets"][DEFAULT_PRESET] == {}
    seed = listing["presets"]["seed"]
    assert (seed["train.lr"], seed["train.optimizer"], seed["model.architecture"], seed["train.lr_d"]) == \
        (0.001, "sgd", "seed", None)
    assert listing["presets"]["dcgan"]["train.batch_size"] == 64 and "model.architecture" not in \
        listing["presets"]["dcgan"]


def test_presets_lists_the_flags_that_turn_the_default_into_each_preset(runs):
    from conftest import invoke_cli

    status, out, _ = invoke_cli(["presets"])
    assert status == 0
    default, *others = out.strip().split("\n\n")
    assert default.startswith(f"{DEFAULT_PRESET}: the default")
    assert [block.split(":")[0] for block in others] == ["seed", "seed-relu", "dcgan"]
    for block in others:
        head, *lines = block.splitlines()
        name = head.split(":")[0]
        flags = [word for line in lines for word in shlex.split(line.split(f"({DEFAULT_PRESET}:")[0])]
        assert "--lr" in flags and flags[flags.index("--lr") + 1] == str(TODAY[name]["train"]["lr"])
        config = runs(["--preset", DEFAULT_PRESET, *flags])
        assert exact({**config.to_dict(), "preset": name}) == exact(preset(name).to_dict()), name
