"""What the CLI says of the defaults: `mnist-gan train [--preset NAME] --help` shows the values that command line
runs, the preset named on the command line picks the help, and `mnist-gan presets` lists how each preset differs
from the default, with the flags that turn the default into it."""

from __future__ import annotations

import json
import re
import shlex
from types import SimpleNamespace

import pytest
from helpers import exact, invoke_cli, preset_values

from mnist_gan.cli.parser import named_preset
from mnist_gan.settings.config import DEFAULT_PRESET, SECTIONS, RunConfig, preset
from mnist_gan.settings.fieldtypes import field_kinds

PRESET_VALUES = preset_values()  # each preset's values before the field defaults became recommended's


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
        status, _, err = invoke_cli(["train", *argv])
        assert status == 0, err
        return trained.pop()

    return run


def help_defaults(argv: list[str]) -> dict[str, str]:
    """{flag: the text of its "(default: X)"} from the help `mnist-gan ARGV` prints."""
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


@pytest.mark.parametrize("preset_args,lr", [([], "0.0016"), (["--preset", "seed"], "0.001"),
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
    status, out, _ = invoke_cli(["presets", "--json"])
    assert status == 0
    listing = json.loads(out)
    assert listing["default"] == DEFAULT_PRESET
    assert list(listing["presets"]) == [DEFAULT_PRESET, "seed", "seed-relu", "dcgan"]
    default = PRESET_VALUES[DEFAULT_PRESET]
    for name, changes in listing["presets"].items():
        assert changes == {f"{section}.{key}": value for section in SECTIONS
                           for key, value in PRESET_VALUES[name][section].items() if value != default[section][key]}
    assert listing["presets"][DEFAULT_PRESET] == {}
    seed = listing["presets"]["seed"]
    assert (seed["train.lr"], seed["train.optimizer"], seed["model.architecture"]) == (0.001, "sgd", "seed")
    assert "train.lr_d" not in seed, "D's rate is G's in both"
    assert listing["presets"]["dcgan"]["train.batch_size"] == 64 and "model.architecture" not in \
        listing["presets"]["dcgan"]


def test_presets_lists_the_flags_that_turn_the_default_into_each_preset(runs):
    status, out, _ = invoke_cli(["presets"])
    assert status == 0
    default, *others = out.strip().split("\n\n")
    assert default.startswith(f"{DEFAULT_PRESET}: the default")
    assert [block.split(":")[0] for block in others] == ["seed", "seed-relu", "dcgan"]
    for block in others:
        head, *lines = block.splitlines()
        name = head.split(":")[0]
        flags = [word for line in lines for word in shlex.split(line.split(f"({DEFAULT_PRESET}:")[0])]
        assert "--lr" in flags and flags[flags.index("--lr") + 1] == str(PRESET_VALUES[name]["train"]["lr"])
        config = runs(["--preset", DEFAULT_PRESET, *flags])
        assert exact({**config.to_dict(), "preset": name}) == exact(preset(name).to_dict()), name
