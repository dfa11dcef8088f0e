"""The bounds every setting is held to, and `validate`, which checks a RunConfig against them before anything
is built, drawn or loaded: each value's type, range and choices, and the pairs of settings that exclude each
other; `config_from_record` reads untrusted plain data into a checked RunConfig. A refusal is a MnistGanError
of one line naming the flag. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import math

from mnist_gan.errors import MnistGanError, clip, quote
from mnist_gan.settings.config import RunConfig
from mnist_gan.settings.fieldtypes import field_kinds, type_problem

# Bounds on the settings, checked by `validate` before anything is built, drawn or loaded.
MAX_SEED = 2**32 - 1  # numpy's RandomState (evaluation) takes [0, 2**32); seed * 1_000_003 + epoch then fits 64 bits
MAX_COUNT = 2**63 - 1  # counts (iterations, epochs, intervals) end up in tensors, slices and checkpoints: signed 64-bit
MAX_Z_DIM = 4096  # 8x StyleGAN's 512-long z and 5x the 784 pixels G draws; G's first layer grows with it
MAX_WIDTH = 512  # 16x the dcgan preset's 32; at MAX_Z_DIM G's first layer alone is then ~210M weights (0.8 GB)
MAX_NUM_CLASSES = 1000  # ImageNet's 1,000; labelled 28x28 data sets have at most 62 classes (EMNIST ByClass)
MIN_BATCH_SIZE = 2  # every G here has BatchNorm, which needs 2+ images for batch statistics (the seed G fails on 1)
MAX_BATCH_SIZE = 65_536  # more than MNIST's 60,000 training images: no 28x28 data set fills a larger batch
MAX_PENALTY_WEIGHT = 1e6  # --gp-weight and --r1-gamma: published values are 0.1-100; far beyond only overflows
MAX_PACK = 8  # --pack: PacGAN used 2-4; beyond 8 a pack of a batch-32 run leaves D four verdicts per batch
MAX_SHIFT = 13  # --augment-shift: a shift of 14 pixels or more moves a 28x28 digit wholly out of its frame
MAX_N_CRITIC = 100  # --n-critic: WGAN used 5 (100 for its first G steps), WGAN-GP 5; past 100 G barely trains


def config_from_record(raw: object, where: str) -> RunConfig:
    """The RunConfig that untrusted plain data records (a run's config.json, a checkpoint's or an export's
    config): strictly typed (RunConfig.from_dict), then validated. A refusal is one MnistGanError line,
    "{where} ({what is wrong})"."""
    try:
        config = RunConfig.from_dict(raw)
        validate(config)
    except (MnistGanError, TypeError, ValueError) as error:
        raise MnistGanError(f"{where} ({clip(error)})") from None
    return config


def validate(config: RunConfig, *, training: bool = False) -> None:
    """Raise MnistGanError, naming the flag, for a value no run can use: wrong type, out of range, not finite.

    With training=True also refuse what only training cannot use (seeds numpy refuses, a batch of one image
    with BatchNorm); without it, a checkpoint of an unusual run can still be sampled.
    """
    for section in (config.model, config.data, config.train):
        for name, (kind, nullable) in field_kinds(type(section)).items():
            problem = type_problem(getattr(section, name), kind, nullable)
            if problem:
                raise MnistGanError(f"--{name.replace('_', '-')} {problem}")
    for ok, message in _range_checks(config) + _mode_checks(config) + (_training_checks(config) if training else []):
        if not ok:
            raise MnistGanError(message)
    for section in (config.model, config.data, config.train):
        for f in dataclasses.fields(section):
            choices = f.metadata.get("choices")
            value = getattr(section, f.name)
            if choices and value not in choices:
                raise MnistGanError(f"--{f.name.replace('_', '-')} must be one of {', '.join(map(str, choices))}; "
                                    f"got {quote(value)}")
    for section in (config.model, config.data, config.train):  # the bounds every count and number shares
        for name, (kind, _) in field_kinds(type(section)).items():
            value, flag = getattr(section, name), "--" + name.replace("_", "-")
            if kind is int and value is not None and not -MAX_COUNT - 1 <= value <= MAX_COUNT:
                raise MnistGanError(f"{flag} must fit in 64 bits, got {quote(value)}")
            if kind is float and value is not None and not math.isfinite(value):
                raise MnistGanError(f"{flag} must be a finite number, got {quote(value)}")


def _range_checks(config: RunConfig) -> list[tuple[bool, str]]:
    """(condition, message if it fails) for each setting's range; the types are already checked."""
    model, data, train = config.model, config.data, config.train
    return [
        (train.batch_size > 0, f"--batch-size must be positive, got {quote(train.batch_size)}"),
        (train.batch_size <= MAX_BATCH_SIZE, f"--batch-size must be at most {MAX_BATCH_SIZE:,} (more images than "
                                             f"a 28x28 data set holds), got {quote(train.batch_size)}"),
        (0 < train.lr < math.inf, f"--lr must be positive and finite, got {quote(train.lr)}"),
        (0 <= train.momentum < 1, f"--momentum must be in [0, 1), got {quote(train.momentum)}"),
        (train.optimizer != "sgd" or not train.nesterov or train.momentum > 0,
         "--nesterov needs a --momentum above 0 (or pass --no-nesterov)"),
        (0 <= train.beta1 < 1 and 0 <= train.beta2 < 1,
         f"--beta1 and --beta2 must be in [0, 1), got {quote(train.beta1)} and {quote(train.beta2)}"),
        (train.epochs > 0, f"--epochs must be positive, got {quote(train.epochs)}"),
        (train.iterations is None or train.iterations > 0,
         f"--iterations must be positive, got {quote(train.iterations)}"),
        (train.log_every > 0, f"--log-every must be positive, got {quote(train.log_every)}"),
        (train.sample_every >= 0, f"--sample-every must be >= 0, got {quote(train.sample_every)}"),
        (train.checkpoint_every >= 0, f"--checkpoint-every must be >= 0, got {quote(train.checkpoint_every)}"),
        (train.eval_every >= 0, f"--eval-every must be >= 0, got {quote(train.eval_every)}"),
        (train.keep >= 1, f"--keep must be at least 1, got {quote(train.keep)}"),
        (model.z_dim > 0, f"--z-dim must be positive, got {quote(model.z_dim)}"),
        (model.z_dim <= MAX_Z_DIM, f"--z-dim must be at most {MAX_Z_DIM:,} (G's first layer grows with it), "
                                   f"got {quote(model.z_dim)}"),
        (train.max_minutes is None or 0 < train.max_minutes < math.inf,
         f"--max-minutes must be positive and finite, got {quote(train.max_minutes)}"),
        (data.limit is None or data.limit > 0, f"--limit must be positive, got {quote(data.limit)}"),
        (model.width > 0, f"--width must be positive, got {quote(model.width)}"),
        (model.width <= MAX_WIDTH, f"--width must be at most {MAX_WIDTH:,} (the networks grow with its square), "
                                   f"got {quote(model.width)}"),
        (model.num_classes > 1, f"--num-classes must be at least 2, got {quote(model.num_classes)}"),
        (model.num_classes <= MAX_NUM_CLASSES, f"--num-classes must be at most {MAX_NUM_CLASSES:,} (labelled 28x28 "
                                               f"data sets have at most 62), got {quote(model.num_classes)}"),
        (train.lr_d is None or 0 < train.lr_d < math.inf,
         f"--lr-d must be positive and finite, got {quote(train.lr_d)}"),
        (train.lr_g is None or 0 < train.lr_g < math.inf,
         f"--lr-g must be positive and finite, got {quote(train.lr_g)}"),
        (1 <= train.n_critic <= MAX_N_CRITIC, f"--n-critic must be in 1..{MAX_N_CRITIC} D steps per G step "
                                              f"(WGAN-GP uses 5), got {quote(train.n_critic)}"),
        (0 <= train.gp_weight <= MAX_PENALTY_WEIGHT, f"--gp-weight must be in [0, {MAX_PENALTY_WEIGHT:g}] (published "
                                                     f"values are 0.1-100), got {quote(train.gp_weight)}"),
        (0 <= train.r1_gamma <= MAX_PENALTY_WEIGHT, f"--r1-gamma must be in [0, {MAX_PENALTY_WEIGHT:g}] (published "
                                                    f"values are 0.1-100), got {quote(train.r1_gamma)}"),
        (0 <= train.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {quote(train.label_smoothing)}"),
        (0 <= train.ema_decay < 1, f"--ema-decay must be in [0, 1), got {quote(train.ema_decay)}"),
        (0 <= train.augment_shift <= MAX_SHIFT,
         f"--augment-shift must be in 0..{MAX_SHIFT} pixels, got {quote(train.augment_shift)}"),
        (not model.conditional or model.architecture == "dcgan",
         f"--conditional needs --architecture dcgan (the {quote(model.architecture)} networks take no labels)"),
    ]


def _mode_checks(config: RunConfig) -> list[tuple[bool, str]]:
    """The ranges of the remedies for mode collapse (packing, top-k, self-conditioning) and of the channels."""
    model, train = config.model, config.train
    return [
        (1 <= model.pack <= MAX_PACK, f"--pack must be in 1..{MAX_PACK} images per D input, got {quote(model.pack)}"),
        (model.self_condition == 0 or 2 <= model.self_condition <= MAX_NUM_CLASSES,
         f"--self-condition must be 0 (off) or 2..{MAX_NUM_CLASSES:,} clusters, got {quote(model.self_condition)}"),
        (not (model.self_condition and model.conditional),
         "--self-condition and --conditional exclude each other: one conditions on clusters, the other on labels "
         "(for labels, set self_condition to 0)"),
        (not model.self_condition or model.architecture == "dcgan",
         f"--self-condition needs --architecture dcgan (the {quote(model.architecture)} networks take no labels)"),
        (model.channels == 1 or train.eval_every == 0 or config.data.data == "stacked-mnist",
         "--eval-every scores 3-channel images channel by channel, as stacks of known digits: --data stacked-mnist"),
        (train.recluster_every >= 0, f"--recluster-every must be >= 0, got {quote(train.recluster_every)}"),
        (not train.recluster_every or model.self_condition, "--recluster-every needs --self-condition K"),
        (train.diversity >= 0 and math.isfinite(train.diversity),
         f"--diversity must be zero or positive, got {quote(train.diversity)}"),
        (0 < train.top_k_min <= 1, f"--top-k-min must be in (0, 1], got {quote(train.top_k_min)}"),
        (not (train.reuse_fakes and train.diversity),
         "--reuse-fakes and --diversity exclude each other: --diversity draws G's fakes in pairs of its own"),
        (not (train.reuse_fakes and train.fake_in_eval_mode),
         "--reuse-fakes and --fake-in-eval-mode exclude each other: G cannot learn from fakes made in inference "
         "mode"),
    ]


def _training_checks(config: RunConfig) -> list[tuple[bool, str]]:
    """What training alone cannot use (a finished run's checkpoint may still be sampled)."""
    train = config.train
    return [
        (0 <= train.seed <= MAX_SEED, f"--seed must be in 0..{MAX_SEED} (the seeds numpy accepts), "
                                      f"got {quote(train.seed)}"),
        (train.batch_size >= MIN_BATCH_SIZE,
         f"--batch-size must be at least {MIN_BATCH_SIZE}: G's BatchNorm needs two or more images a batch for its "
         f"statistics, got {quote(train.batch_size)}"),
        (train.batch_size % max(1, config.model.pack) == 0, f"--batch-size {train.batch_size} must be a multiple of "
                                                    f"--pack {config.model.pack} (real and fake packs never mix)"),
        (not train.diversity or train.batch_size % (2 * max(1, config.model.pack)) == 0, f"--diversity pairs whole "
         f"packs: --batch-size {train.batch_size} must be a multiple of twice --pack {config.model.pack}"),
    ]
