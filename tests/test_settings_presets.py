"""The presets and the one source of defaults: every preset resolves to the values it had
(tests/data/preset_values.json), the field defaults are the default preset's, a record that lacks a field keeps that
feature off, the seed preset is the tutorial's code and dcgan Radford's, and `mnist-gan train` trains the default
preset, whose clusters labels replace."""

from __future__ import annotations

import json

import pytest
from helpers import exact, preset_values

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import DEFAULT_PRESET, PRESETS, SECTIONS, RunConfig, preset
from mnist_gan.settings.config_file import config_from_file, read_config_file
from mnist_gan.settings.validation import config_from_record, validate

PRESET_VALUES = preset_values()  # each preset's values before the field defaults became recommended's


# A config.json as runs wrote it before packing, self-conditioning, top-k, mode seeking, augmentation, EMA and
# TTUR existed (and before the data and most train fields were recorded): every field it lacks must stay off.
OLD_RECORD = {"preset": "dcgan",
              "model": {"architecture": "dcgan", "z_dim": 100, "z_distribution": "normal", "width": 32,
                        "d_batchnorm": True, "spectral_norm": False, "conditional": False, "num_classes": 10},
              "train": {"loss": "non-saturating", "optimizer": "adam", "lr": 2e-4, "beta1": 0.5, "beta2": 0.999,
                        "batch_size": 64, "epochs": 100, "seed": 4}}


def test_every_preset_resolves_to_the_values_it_had():
    assert list(PRESETS) == list(PRESET_VALUES)
    for name, values in PRESET_VALUES.items():
        assert exact(preset(name).to_dict()) == exact({"preset": name, **values}), name


def test_the_field_defaults_are_the_default_presets_values():
    assert DEFAULT_PRESET == "recommended"
    assert PRESETS[DEFAULT_PRESET] == RunConfig() == RunConfig(preset=DEFAULT_PRESET)
    for section, cls in SECTIONS.items():
        assert exact(RunConfig().to_dict()[section]) == exact(PRESET_VALUES[DEFAULT_PRESET][section])
        assert cls() == getattr(preset(DEFAULT_PRESET), section)


def assert_record_kept(config: RunConfig, record: dict) -> None:
    """Each field the record holds has its value; each it lacks has the seed preset's (the feature off)."""
    for section in SECTIONS:
        for name, value in config.to_dict()[section].items():
            given = record.get(section, {})
            assert value == (given[name] if name in given else PRESET_VALUES["seed"][section][name]), f"{section}.{name}"


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
    assert exact(RunConfig.from_dict({}).to_dict()) == exact({"preset": "custom", **PRESET_VALUES["seed"]})
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


def test_dcgan_preset_follows_radford():
    config = preset("dcgan")
    assert (config.model.architecture, config.model.z_distribution) == ("dcgan", "normal")
    assert (config.train.optimizer, config.train.lr, config.train.beta1, config.train.beta2) == ("adam", 2e-4, 0.5, 0.999)
    assert config.train.loss == "non-saturating" and not config.train.joint_d_batch
    assert config.train.ema_decay == 0 and not config.model.spectral_norm


def test_seed_is_the_tutorials_code_and_keras_dcgan_is_three_flags_away():
    from mnist_gan.cli.parser import build_parser
    from mnist_gan.settings.config import preset
    from mnist_gan.settings.flags import config_from_args

    seed = preset("seed").train
    assert (seed.lr, seed.momentum, seed.nesterov, seed.epochs, seed.batch_size) == (0.001, 0.9, True, 30, 32)
    assert preset("seed-relu").train.batch_size == 32, "the tutorial's failure was reported at batch 32"
    args = build_parser().parse_args(["train", "--preset", "seed", "--lr", "0.0005", "--epochs", "100",
                                      "--batch-size", "128"])
    keras_dcgan = config_from_args(args)[0]
    assert (keras_dcgan.preset, keras_dcgan.train.lr, keras_dcgan.train.epochs, keras_dcgan.train.batch_size) == \
        ("seed", 0.0005, 100, 128)
    for name, batch_size in (("dcgan", 64), ("recommended", 128)):  # the better presets keep their own values
        assert (preset(name).train.epochs, preset(name).train.batch_size) == (100, batch_size), name


def test_train_defaults_to_recommended_and_labels_replace_its_clusters():
    from mnist_gan.cli.parser import build_parser
    from mnist_gan.settings.flags import config_from_args

    def configured(*flags):
        return config_from_args(build_parser().parse_args(["train", *flags]))[0]

    default = configured()
    assert default.preset == "recommended", "a bare `mnist-gan train` trains the best digits per minute"
    assert (default.model.self_condition, default.model.conditional) == (100, False)
    labelled = configured("--conditional")
    assert (labelled.model.conditional, labelled.model.self_condition, labelled.train.recluster_every) == (True, 0, 0)
    assert configured("--self-condition", "0").model.self_condition == 0, "the unconditional model, one flag away"
    assert configured("--preset", "seed").model.self_condition == 0
    with pytest.raises(MnistGanError, match="exclude each other"):
        validate(configured("--conditional", "--self-condition", "10"))
