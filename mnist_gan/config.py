"""Typed configuration: one dataclass per concern, and the named presets.

Every field has a default and a help string; the CLI builds its flags from these fields and a run writes them
all to `config.json`, so a new setting is one field here. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mnist_gan.errors import MnistGanError


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


@dataclass
class DataConfig:
    """Which images, and in what order."""

    data: str = _opt("mnist", "mnist, fashion-mnist, or a path: IDX directory, .npz, or image folder")
    cache_dir: str | None = _opt(None, "download cache (default: $MNIST_GAN_CACHE, then ~/.cache/mnist-gan)")
    shuffle: bool = _opt(False, "reshuffle the training images every epoch (the tutorial did not)")
    limit: int | None = _opt(None, "use only the first N training images")


@dataclass
class TrainConfig:
    """How G and D are optimised, and what the run records."""

    loss: str = _opt("non-saturating", "GAN objective (see mnist_gan.losses.LOSSES)")
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
    def from_dict(cls, raw: dict) -> RunConfig:
        """Rebuild from `to_dict()` output; unknown keys are an error, missing ones take defaults."""
        try:
            return cls(
                preset=raw.get("preset", "custom"),
                model=_section(ModelConfig, raw.get("model", {})),
                data=_section(DataConfig, raw.get("data", {})),
                train=_section(TrainConfig, raw.get("train", {})),
            )
        except (TypeError, AttributeError) as error:
            raise MnistGanError(f"invalid configuration: {error}") from None


def _section(cls: type, values: dict) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise MnistGanError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    return cls(**values)


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
# fewer, larger operations.
RECOMMENDED = RunConfig(
    preset="recommended",
    model=ModelConfig(architecture="dcgan", z_distribution="normal", width=32, d_batchnorm=False,
                      spectral_norm=True),
    data=DataConfig(shuffle=True),
    train=TrainConfig(loss="lsgan", optimizer="adam", lr=4e-4, lr_d=8e-4, beta1=0.0, beta2=0.99, batch_size=32,
                      epochs=100, fake_in_eval_mode=False, joint_d_batch=True, ema_decay=0.999),
)

PRESETS: dict[str, RunConfig] = {"seed": SEED, "seed-relu": SEED_RELU, "dcgan": DCGAN, "recommended": RECOMMENDED}


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


def validate(config: RunConfig) -> None:
    """Raise MnistGanError for values no run can use."""
    checks = [
        (config.train.batch_size > 0, f"--batch-size must be positive, got {config.train.batch_size}"),
        (0 < config.train.lr < float("inf"), f"--lr must be positive and finite, got {config.train.lr}"),
        (0 <= config.train.momentum < 1, f"--momentum must be in [0, 1), got {config.train.momentum}"),
        (config.train.optimizer != "sgd" or not config.train.nesterov or config.train.momentum > 0,
         "--nesterov needs a --momentum above 0 (or pass --no-nesterov)"),
        (0 <= config.train.beta1 < 1 and 0 <= config.train.beta2 < 1,
         f"--beta1 and --beta2 must be in [0, 1), got {config.train.beta1} and {config.train.beta2}"),
        (config.train.epochs > 0, f"--epochs must be positive, got {config.train.epochs}"),
        (config.train.iterations is None or config.train.iterations > 0,
         f"--iterations must be positive, got {config.train.iterations}"),
        (config.train.log_every > 0, f"--log-every must be positive, got {config.train.log_every}"),
        (config.train.sample_every >= 0, f"--sample-every must be >= 0, got {config.train.sample_every}"),
        (config.train.checkpoint_every >= 0, f"--checkpoint-every must be >= 0, got {config.train.checkpoint_every}"),
        (config.train.eval_every >= 0, f"--eval-every must be >= 0, got {config.train.eval_every}"),
        (config.train.keep >= 1, f"--keep must be at least 1, got {config.train.keep}"),
        (config.model.z_dim > 0, f"--z-dim must be positive, got {config.model.z_dim}"),
        (config.train.max_minutes is None or config.train.max_minutes > 0,
         f"--max-minutes must be positive, got {config.train.max_minutes}"),
        (config.data.limit is None or config.data.limit > 0, f"--limit must be positive, got {config.data.limit}"),
        (config.model.width > 0, f"--width must be positive, got {config.model.width}"),
        (config.model.num_classes > 1, f"--num-classes must be at least 2, got {config.model.num_classes}"),
        (config.train.lr_d is None or config.train.lr_d > 0, f"--lr-d must be positive, got {config.train.lr_d}"),
        (config.train.lr_g is None or config.train.lr_g > 0, f"--lr-g must be positive, got {config.train.lr_g}"),
        (config.train.n_critic >= 1, f"--n-critic must be at least 1, got {config.train.n_critic}"),
        (config.train.gp_weight >= 0, f"--gp-weight must be >= 0, got {config.train.gp_weight}"),
        (config.train.r1_gamma >= 0, f"--r1-gamma must be >= 0, got {config.train.r1_gamma}"),
        (0 <= config.train.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {config.train.label_smoothing}"),
        (0 <= config.train.ema_decay < 1, f"--ema-decay must be in [0, 1), got {config.train.ema_decay}"),
        (0 <= config.train.augment_shift < 14,
         f"--augment-shift must be in 0..13 pixels, got {config.train.augment_shift}"),
        (not config.model.conditional or config.model.architecture == "dcgan",
         f"--conditional needs --architecture dcgan (the {config.model.architecture!r} networks take no labels)"),
    ]
    for ok, message in checks:
        if not ok:
            raise MnistGanError(message)
    for section in (config.model, config.data, config.train):
        for f in dataclasses.fields(section):
            choices = f.metadata.get("choices")
            value = getattr(section, f.name)
            if choices and value not in choices:
                raise MnistGanError(f"--{f.name.replace('_', '-')} must be one of {', '.join(choices)}; got {value!r}")
