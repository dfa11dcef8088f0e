"""`mnist-gan train --config FILE`: a run's own config.json reruns it (flags override), partial JSON and TOML files
start from their preset, and a wrong or hostile file is refused with one line naming the problem (exit 2)."""

from __future__ import annotations

import json
import os

import pytest
from helpers import invoke_cli

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import RunConfig
from mnist_gan.settings.config_file import MAX_CONFIG_BYTES, config_from_file

TINY_RUN = ["--preset", "dcgan", "--width", 8, "--batch-size", 8, "--limit", 64, "--iterations", 4,
            "--log-every", 1, "--sample-every", 0, "--checkpoint-every", 0, "--seed", 3, "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, small_npz):
    run_dir = tmp_path_factory.mktemp("config") / "original"
    status, _, err = invoke_cli(["train", "--data", small_npz, "--out", run_dir, *TINY_RUN])
    assert status == 0, err
    return run_dir


def read_json(path):
    return json.loads(path.read_text())


def losses(run_dir):
    return [(r["d_loss"], r["g_loss"]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def test_rerun_with_another_seed_changes_only_the_seed(tiny_run, tmp_path, cli):
    status, _, err = cli(["train", "--config", tiny_run / "config.json", "--seed", 2, "--out", tmp_path / "rerun",
                          "--no-progress"])
    assert status == 0, err
    original, rerun = read_json(tiny_run / "config.json"), read_json(tmp_path / "rerun" / "config.json")
    assert rerun["train"].pop("seed") == 2 and original["train"].pop("seed") == 3
    assert rerun == original, "every other field, the preset's name included, comes from the file"
    assert losses(tmp_path / "rerun") != losses(tiny_run), "another seed, other numbers"


def test_rerun_from_config_json_repeats_the_run_exactly(tiny_run, tmp_path, cli):
    status, _, err = cli(["train", "--config", tiny_run / "config.json", "--out", tmp_path / "again", "--no-progress"])
    assert status == 0, err
    assert read_json(tmp_path / "again" / "config.json") == read_json(tiny_run / "config.json")
    assert losses(tmp_path / "again") == losses(tiny_run), "config.json holds everything that defines the run"


def test_a_partial_toml_file_starts_from_its_preset_and_flags_win(tmp_path):
    path = tmp_path / "short.toml"
    path.write_text('preset = "recommended"\n[model]\nconditional = true\n[train]\niterations = 500\nlr = 1\n'
                    'seed = 9\n[data]\nlimit = 1000\n')
    config = config_from_file(path, overrides={"train.seed": 2, "train.batch_size": 16})
    assert config.preset == "recommended"
    assert (config.model.conditional, config.data.limit, config.train.iterations) == (True, 1000, 500)
    assert config.model.self_condition == 0, "labels replace the preset's clusters, as --conditional does"
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float), "an integer is fine for a float field"
    assert (config.train.seed, config.train.batch_size) == (2, 16), "flags override the file"
    assert (config.train.loss, config.train.ema_decay, config.model.spectral_norm) == ("lsgan", 0.999, True), \
        "fields the file leaves out keep the preset's values"


def test_the_preset_flag_replaces_the_files_preset(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": "recommended", "train": {"iterations": 7}}))
    config = config_from_file(path, "dcgan")
    assert config.preset == "dcgan" and config.train.loss == "non-saturating" and config.train.iterations == 7
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps({"preset": "custom", "model": {"z_dim": 12}, "data": {"cache_dir": None}}))
    config = config_from_file(custom)
    assert (config.preset, config.model.z_dim, config.train.optimizer) == ("custom", 12, "sgd")
    assert RunConfig.from_dict(config.to_dict()) == config


HUGE = "9" * 5000  # more digits than Python converts from text by default
BAD_FILES = [
    ("typo.json", '{"train": {"batch_sise": 8}}', "unknown train field: 'batch_sise'"),
    ("section.json", '{"training": {"seed": 1}}', "unknown run configuration field: 'training'"),
    ("flat.toml", "seed = 2\n", "unknown run configuration field: 'seed' (it belongs in the train section)"),
    ("string.json", '{"train": {"batch_size": "8"}}', "train.batch_size must be an integer, got '8'"),
    ("float.json", '{"train": {"batch_size": 8.5}}', "train.batch_size must be an integer, got 8.5"),
    ("bool.json", '{"train": {"seed": true}}', "train.seed must be an integer, got true"),
    ("flag.toml", "[model]\nconditional = 1\n", "model.conditional must be true or false, got 1"),
    ("null.json", '{"train": {"lr": null}}', "train.lr must be a number, got null"),
    ("nan.json", '{"train": {"lr": NaN}}', "--lr must be positive and finite, got nan"),
    ("nan.toml", "[train]\nlr = nan\n", "--lr must be positive and finite, got nan"),
    ("big.json", '{"train": {"seed": 99999999999999999999}}', "--seed must fit in 64 bits"),
    ("huge.json", '{"train": {"seed": ' + HUGE + "}}", "not valid JSON (Exceeds the limit"),
    ("list.json", '{"train": {"seed": [1, 2]}}', "train.seed must be an integer, got a list of 2 items"),
    ("table.toml", "[train.seed]\nvalue = 1\n", "train.seed must be an integer, got a dict of 1 key"),
    ("notable.json", '{"train": 5}', "train must be a JSON object (a TOML table) of settings, got 5"),
    ("array.json", "[1, 2]", "must be a JSON object (a TOML table), got a list of 2 items"),
    ("choice.json", '{"train": {"optimizer": "adamw"}}', "--optimizer must be one of sgd, adam; got 'adamw'"),
    ("preset.json", '{"preset": "recomended"}', "preset must be one of seed, seed-relu, dcgan, recommended, custom"),
    ("twice.json", '{"train": {"seed": 1, "seed": 2}}', "field 'seed' is given twice"),
    ("broken.json", '{"train": {"seed": 1,}}', "not valid JSON"),
    ("broken.toml", "[train\nseed = 1\n", "not valid TOML"),
    ("large.json", "[" * 100_000 + "]" * 100_000, "larger than 64 KiB"),
    ("nested.json", "[" * 30_000 + "]" * 30_000, "not valid JSON (nested too deeply)"),
    ("config.yaml", "train:\n  seed: 1\n", "a config file must end in .json or .toml"),
    ("longname.json", json.dumps({"train": {"x" * 50_000: 1}}), "unknown train field: 'xxxxx"),
    ("longvalue.json", json.dumps({"train": {"seed": "x" * 50_000}}), "train.seed must be an integer, got 'xxxx"),
]


@pytest.mark.parametrize("name,text,message", BAD_FILES, ids=[name for name, _, _ in BAD_FILES])
def test_a_wrong_file_is_refused_with_one_line(name, text, message, tmp_path, cli):
    path = tmp_path / name
    path.write_text(text)
    status, out, err = cli(["train", "--config", path, "--out", tmp_path / "run", "--no-progress"])
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err[:300]
    assert len(err) < 400, "a hostile file's contents are never echoed at length"
    assert not (tmp_path / "run").exists(), "nothing is trained"


def test_not_utf8_not_a_regular_file_and_missing(tmp_path, cli):
    (tmp_path / "latin1.json").write_bytes(b'{"data": {"data": "caf\xe9"}}')
    (tmp_path / "folder.json").mkdir()
    cases = [(tmp_path / "latin1.json", "not UTF-8 text"), (tmp_path / "folder.json", "not a regular file"),
             (tmp_path / "missing.json", "cannot open the config file (No such file or directory)")]
    if hasattr(os, "mkfifo"):  # a FIFO would block a plain open() until a writer came
        os.mkfifo(tmp_path / "fifo.json")
        cases.append((tmp_path / "fifo.json", "not a regular file"))
    for path, message in cases:
        status, _, err = cli(["train", "--config", path, "--out", tmp_path / "run"])
        assert status == 2 and message in err and err.count("\n") == 1, err


def test_the_size_cap_is_exact(tmp_path):
    body = json.dumps({"train": {"seed": 1}})
    path = tmp_path / "padded.json"
    path.write_text(body + " " * (MAX_CONFIG_BYTES - len(body)))
    assert config_from_file(path).train.seed == 1, "a file of exactly the cap is read"
    path.write_text(body + " " * (MAX_CONFIG_BYTES - len(body) + 1))
    with pytest.raises(MnistGanError, match="larger than 64 KiB"):
        config_from_file(path)


def test_config_and_resume_together_are_refused(tiny_run, cli):
    status, _, err = cli(["train", "--config", tiny_run / "config.json", "--resume", tiny_run])
    assert status == 2 and "--config starts a new run" in err and err.count("\n") == 1
