"""What a sweep trains: seeds, per-run value lists, grid and zip, sweep files with strict keys (no torch)."""

from __future__ import annotations

import json

import pytest

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import preset
from mnist_gan.settings.sweep import SweepConfig, check_sweep, parse_seeds, parse_values, sweep_from_file


def test_seeds_take_ranges_and_lists():
    assert parse_seeds("0-7") == list(range(8))
    assert parse_seeds("0,3,5") == [0, 3, 5]
    assert parse_seeds("0-2, 9") == [0, 1, 2, 9]
    assert parse_seeds("4") == [4]


@pytest.mark.parametrize(("text", "phrase"), [("5-3", "the range 5-3 is empty"), ("a-b", "takes numbers"),
                                              ("0-99999", "more than")])
def test_bad_seeds_are_refused_in_one_line(text, phrase):
    with pytest.raises(MnistGanError, match=phrase):
        parse_seeds(text)


def test_values_take_the_fields_type():
    assert parse_values("train.lr", "1e-4,2e-4") == [1e-4, 2e-4]
    assert parse_values("train.lr_d", "none,8e-4") == [None, 8e-4]
    assert parse_values("data.shuffle", "true,false") == [True, False]
    with pytest.raises(MnistGanError, match="'fast' is not float"):
        parse_values("train.lr", "1e-4,fast")


def test_grid_and_zip_make_the_runs_in_order():
    base = preset("recommended")
    grid = check_sweep(SweepConfig(base, [0, 1], {"train.lr": [1e-4, 2e-4], "train.beta2": [0.9, 0.99]}))
    runs = grid.runs()
    assert len(runs) == 8
    assert [(c.train.lr, c.train.beta2, c.train.seed) for _, _, c in runs[:3]] == [
        (1e-4, 0.9, 0), (1e-4, 0.9, 1), (1e-4, 0.99, 0)]
    assert [name for name, _, _ in runs[:2]] == ["s00-seed0", "s00-seed1"]
    zipped = check_sweep(SweepConfig(base, [3], {"train.lr": [1e-4, 2e-4], "train.beta2": [0.9, 0.99]}, "zip"))
    assert [(c.train.lr, c.train.beta2, c.train.seed) for _, _, c in zipped.runs()] == [(1e-4, 0.9, 3),
                                                                                        (2e-4, 0.99, 3)]
    assert base.train.seed == 0 and base.train.lr == 1.6e-3  # the base is untouched


@pytest.mark.parametrize(("space", "mode", "phrase"), [
    ({"model.width": [8, 16]}, "grid", "cannot vary 'model.width': it changes shapes"),
    ({"train.loss": ["lsgan", "hinge"]}, "grid", "cannot vary 'train.loss'"),
    ({"train.lr": []}, "grid", "values of train.lr are empty"),
    ({"train.lr": [1e-4, 2e-4], "train.beta2": [0.9]}, "zip", "lengths differ"),
    ({}, "cross", "mode must be one of grid, zip"),
])
def test_sweeps_that_cannot_run_are_refused(space, mode, phrase):
    with pytest.raises(MnistGanError, match=phrase):
        check_sweep(SweepConfig(preset("recommended"), [0], space, mode))


def test_a_sweep_file_sets_base_seeds_and_space(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('preset = "dcgan"\nseeds = "0-2"\nmode = "zip"\n[base.train]\niterations = 50\n'
                    '[vary]\n"train.lr" = [1e-4, 2e-4]\n"train.beta1" = [0.0, 0.5]\n')
    sweep = sweep_from_file(path, {"train.batch_size": 16})
    assert sweep.seeds == [0, 1, 2] and sweep.mode == "zip"
    assert sweep.base.model.architecture == "dcgan" and sweep.base.train.iterations == 50
    assert sweep.base.train.batch_size == 16
    assert [(c.train.lr, c.train.beta1) for _, _, c in sweep.runs()][::3] == [(1e-4, 0.0), (2e-4, 0.5)]
    as_json = tmp_path / "sweep.json"
    as_json.write_text(json.dumps({"seeds": [4, 5], "vary": {"train.ema_decay": [0.99, 0.999]}}))
    assert [c.train.seed for _, _, c in sweep_from_file(as_json).runs()] == [4, 5, 4, 5]


@pytest.mark.parametrize(("text", "phrase"), [
    ('seeds = "0-1"\nlearning_rate = 1\n', "unknown sweep key 'learning_rate'"),
    ('[base.train]\nlearning_rate = 1\n', "unknown train field"),
    ('seeds = "3-1"\n', "the range 3-1 is empty"),
    ('[vary]\n"train.lr" = []\n', "empty"),
    ('[vary]\n"train.speed" = [1]\n', "unknown setting 'train.speed'"),
    ('[vary]\n"train.lr" = ["fast"]\n', "must be a number"),
    ('[vary]\n"model.width" = [8, 16]\n', "changes shapes or the code path"),
])
def test_bad_sweep_files_are_refused_naming_the_file(tmp_path, text, phrase):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(MnistGanError, match=phrase) as error:
        sweep_from_file(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
