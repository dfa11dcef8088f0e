"""Typed configuration: one dataclass per concern, the bounds `validate` holds every setting to, and the named
presets.

Every field has a default and a help string; the CLI builds its flags from these fields and a run writes them
all to `config.json`, so a new setting is one field here. Untrusted values are type-checked by
mnist_gan.settings.fieldtypes and read from files by mnist_gan.settings.config_file. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mnist_gan.errors import MnistGanError, clip, quote
from mnist_gan.settings.fieldtypes import checked_sections, field_kinds, type_problem


def _opt(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class ModelConfig:
    """What G and D are."""

    architecture: str = _opt("seed", "network family: the tutorial's, or strided-convolution DCGAN", ("seed", "dcgan"))
    z_dim: int = _opt(100, "length of the noise vector z")
    z_distribution: str = _opt("uniform", "noise prior: uniform U(-1, 1) or normal N(0, I)", ("uniform", "normal"))
    g_activation: str = _opt("tanh", "every activation of the seed generator, its output's included", ("tanh", "relu"))
    width: int = _opt(16, "dcgan: D's first and G's last hidden channel count (the other layers have twice as many)")
    d_batchnorm: bool = _opt(True, "dcgan: BatchNorm in D's hidden layer, as Radford et al. (G always has it)")
    spectral_norm: bool = _opt(False, "spectral normalisation of every D layer's weights")
    conditional: bool = _opt(False, "class-conditional G and D (dcgan): label embedding in G, projection in D")
    num_classes: int = _opt(10, "number of classes of a conditional model")
    channels: int = _opt(1, "image channels: 1 (MNIST), 3 (--data stacked-mnist: a digit in each colour channel)",
                         (1, 3))
    self_condition: int = _opt(0, "self-conditioned GAN (Liu et al. 2020): G and D conditioned on this many k-means "
                                  "clusters of the images, found without labels; G draws each in proportion to its "
                                  "size (dcgan; 0: off)")
    pack: int = _opt(1, "PacGAN: D judges this many images at once, stacked along its input channels "
                        "(Lin et al. 2018; 1: off)")


@dataclass
class DataConfig:
    """Which images, and in what order."""

    data: str = _opt("mnist", "mnist, fashion-mnist, stacked-mnist (3 channels), or a path: IDX directory, .npz, "
                              "or image folder")
    cache_dir: str | None = _opt(None, "download cache (default: $MNIST_GAN_CACHE, then ~/.cache/mnist-gan)")
    shuffle: bool = _opt(False, "reshuffle the training images every epoch (the tutorial did not)")
    limit: int | None = _opt(None, "use only the first N training images")


@dataclass
class TrainConfig:
    """How G and D are optimised, and what the run records."""

    loss: str = _opt("non-saturating", "GAN objective (see mnist_gan.gan.losses.LOSSES)")
    optimizer: str = _opt("sgd", "optimizer for both networks", ("sgd", "adam"))
    lr: float = _opt(0.001, "learning rate of G and D")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(True, "SGD Nesterov momentum")
    beta1: float = _opt(0.5, "Adam beta1")
    beta2: float = _opt(0.999, "Adam beta2")
    batch_size: int = _opt(32, "real images per iteration (D also sees as many fakes)")
    epochs: int = _opt(30, "passes over the training images (ignored when --iterations is set)")
    iterations: int | None = _opt(None, "stop after this many iterations (one D step and one G step each)")
    max_minutes: float | None = _opt(None, "also stop after this many minutes of training (for equal-time comparisons)")
    seed: int = _opt(0, "random seed: same seed and flags give the same numbers on the CPU")
    fake_in_eval_mode: bool = _opt(True, "make D's fakes with G in inference mode, as Keras' G.predict does")
    joint_d_batch: bool = _opt(True, "one D pass over concatenated real+fake (the tutorial) instead of two")
    log_every: int = _opt(10, "iterations between metrics.jsonl lines and progress-bar updates")
    sample_every: int = _opt(100, "iterations between sample grids (0: only at the end)")
    checkpoint_every: int = _opt(1000, "iterations between checkpoints (0: only at the end)")
    keep: int = _opt(3, "checkpoints to keep in checkpoints/ (the newest is never deleted)")
    eval_every: int = _opt(0, "iterations between sample-quality evaluations (FID and more on 2,000 samples, "
                              "logged to metrics.jsonl; also at the end); 0: off")
    tensorboard: bool = _opt(False, "also write the run's figures, grids and config as TensorBoard events into "
                                    "RUN_DIR/tensorboard/ (needs the tensorboard package)")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    precision: str = _opt("auto", "bf16 autocast or fp32; auto: bf16 where the CPU/GPU multiplies bf16 natively "
                                  "(on a CPU only for models large enough to gain from it)",
                          ("auto", "fp32", "bf16"))
    compile: bool = _opt(False, "torch.compile G and D (slow to start; falls back to eager where unavailable)")
    lr_d: float | None = _opt(None, "D's learning rate (default: --lr); TTUR uses a larger one than G's")
    lr_g: float | None = _opt(None, "G's learning rate (default: --lr)")
    n_critic: int = _opt(1, "D steps per G step (each on the same real batch, fresh fakes); WGAN-GP uses 5")
    gp_weight: float = _opt(10.0, "weight of the gradient penalty of losses that have one (wgan-gp)")
    r1_gamma: float = _opt(0.0, "R1 penalty gamma/2 * E|grad D(real)|^2 on D (0: off)")
    label_smoothing: float = _opt(0.0, "one-sided label smoothing: D's target for real images is 1 - this")
    ema_decay: float = _opt(0.0, "exponential moving average of G's weights, used for samples and export (0: off)")
    recluster_every: int = _opt(0, "--self-condition: iterations between re-clusterings on D's features, the new "
                                   "clusters matched to the old ids (0: keep the first clustering, on pixels)")
    top_k: bool = _opt(False, "top-k G updates (Sinha et al. 2020): G learns only from the k fakes D rates most real; "
                              "k starts at the batch and shrinks by 0.99 an epoch, down to --top-k-min of it")
    top_k_min: float = _opt(0.5, "the fraction of the batch --top-k's k anneals down to (the paper's nu)")
    diversity: float = _opt(0.0, "mode-seeking regulariser (Mao et al. 2019): G's loss adds this weight over the "
                                 "ratio of image to noise distance in pairs of fakes that share a class (0: off)")
    augment_shift: int = _opt(0, "differentiable augmentation: D sees every real and fake image shifted by up to "
                                 "this many pixels, and G learns through the shift (DiffAugment translation; 0: off)")


@dataclass
class RunConfig:
    """Everything that defines a training run; written to `config.json`."""

    preset: str = "seed"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: object) -> RunConfig:
        """Rebuild from `to_dict()` output (untrusted: a hand-edited config.json or a checkpoint's record).

        Every value must have its field's type and every name must be known (mnist_gan.settings.fieldtypes); missing
        fields take the defaults. A refusal is a MnistGanError of one short line naming the field.
        """
        preset_name, sections = checked_sections(raw, SECTIONS)
        return cls(preset="custom" if preset_name is None else preset_name,
                   **{name: SECTIONS[name](**values) for name, values in sections.items()})


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}

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

# The tutorial's model and procedure (Keras DCGAN on MNIST), reproduced as closely as PyTorch allows; the field
# defaults above are its values. The tutorial's own code trains with SGD(lr=0.001, momentum=0.9, nesterov=True)
# for 30 epochs at a small batch (its reported runs used 32 and 36). keras-dcgan, which it grew from, used lr
# 0.0005, 100 epochs and batch 128: `--lr 0.0005 --epochs 100 --batch-size 128`.
SEED = RunConfig(preset="seed")

# The tutorial's reported failure: a ReLU generator (output included) collapses to flat gray.
SEED_RELU = RunConfig(preset="seed-relu", model=ModelConfig(g_activation="relu"))

# Radford et al. (2016) for 28x28: strided (transposed) convolutions, BatchNorm, LeakyReLU in D, z ~ N(0, I),
# Adam 2e-4 (0.5, 0.999), non-saturating BCE on logits, separate real and fake D passes. Width 32: the lowest
# FID after 5 minutes on a 2-core CPU among 16, 32 and 64 (benchmarks/dcgan_widths.py --minutes 5).
DCGAN = RunConfig(
    preset="dcgan",
    model=ModelConfig(architecture="dcgan", z_distribution="normal", width=32),
    data=DataConfig(shuffle=True),
    train=TrainConfig(optimizer="adam", lr=2e-4, beta1=0.5, beta2=0.999, batch_size=64, epochs=100,
                      fake_in_eval_mode=False, joint_d_batch=False),
)

# The best digits per minute found on a 2-core CPU (benchmarks/compare_presets.py and the README's account of
# the search): dcgan's networks at width 32, spectral normalisation instead of BatchNorm in D, the LSGAN loss,
# TTUR (D learns twice as fast as G), Adam without first-moment momentum (beta1 0, beta2 0.99, as is usual with
# spectral normalisation) at twice Radford's rates, batch 32 (more updates per second), and an EMA of G's weights
# for sampling. Without BatchNorm in D, one D pass over real+fake computes exactly what two separate passes do, in
# fewer, larger operations. Self-conditioned (Liu et al. 2020) on 100 k-means clusters of the pixels, found
# without labels before training and kept, and D judging packs of 2 images (PacGAN, Lin et al. 2018): at equal
# time this beats the labelled conditional model's FID, where the same networks unconditioned score ~5x worse;
# 100 clusters beat 10, 20 and 50, re-clustering on D's features (the paper's choice) made it worse at this
# budget, and packing raised recall (docs/benchmarks.md). `--self-condition 0 --pack 1` is the unconditional
# model; `--conditional` trains on labels instead of clusters.
RECOMMENDED = RunConfig(
    preset="recommended",
    model=ModelConfig(architecture="dcgan", z_distribution="normal", width=32, d_batchnorm=False,
                      spectral_norm=True, self_condition=100, pack=2),
    data=DataConfig(shuffle=True),
    train=TrainConfig(loss="lsgan", optimizer="adam", lr=4e-4, lr_d=8e-4, beta1=0.0, beta2=0.99, batch_size=32,
                      epochs=100, fake_in_eval_mode=False, joint_d_batch=True, ema_decay=0.999),
)

PRESETS: dict[str, RunConfig] = {"seed": SEED, "seed-relu": SEED_RELU, "dcgan": DCGAN, "recommended": RECOMMENDED}
# What `mnist-gan train` trains when no --preset (or --config file) names one: the best digits per minute. The
# tutorial's model stays one flag away, --preset seed.
DEFAULT_PRESET = "recommended"


def preset(name: str) -> RunConfig:
    """Return a fresh copy of the named preset; changing it leaves the preset as it was.

    >>> config = preset("seed")
    >>> config.train.lr, config.train.batch_size, config.train.epochs
    (0.001, 32, 30)
    >>> config.train.lr = 0.0005
    >>> preset("seed").train.lr
    0.001
    """
    if name not in PRESETS:
        raise MnistGanError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return RunConfig.from_dict(PRESETS[name].to_dict())


def apply_overrides(config: RunConfig, overrides: dict[str, object]) -> RunConfig:
    """Set {"section.field": value} overrides (the command line's flags) on `config`, in place, and return it.

    Labels replace a preset's clusters: `conditional` set to true without `self_condition` among the overrides
    turns the preset's self-conditioning (and its re-clustering) off, so `--preset recommended --conditional` is
    the labelled model; given both, validation refuses the pair.
    """
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(config, section), name, value)
    if overrides.get("model.conditional") and "model.self_condition" not in overrides:
        config.model.self_condition = 0
        if "train.recluster_every" not in overrides:
            config.train.recluster_every = 0
    return config


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
                raise MnistGanError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}; "
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
        (train.n_critic >= 1, f"--n-critic must be at least 1, got {quote(train.n_critic)}"),
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
        (model.channels == 1 or train.eval_every == 0,
         "--eval-every scores one-channel digits; score a 3-channel run with benchmarks/stacked_mnist.py"),
        (train.recluster_every >= 0, f"--recluster-every must be >= 0, got {quote(train.recluster_every)}"),
        (not train.recluster_every or model.self_condition, "--recluster-every needs --self-condition K"),
        (train.diversity >= 0 and math.isfinite(train.diversity),
         f"--diversity must be zero or positive, got {quote(train.diversity)}"),
        (0 < train.top_k_min <= 1, f"--top-k-min must be in (0, 1], got {quote(train.top_k_min)}"),
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
