"""Typed configuration: one dataclass per concern, and the named presets.

Every field has a default and a help string; the CLI builds its flags from these fields and a run writes them
all to `config.json`, so a new setting is one field here. The field defaults are the default preset's values
(recommended), so `RunConfig()` is what a bare `mnist-gan train` runs and `--help` shows. Each other preset
spells out where it differs. A field that turns a feature on by default also gives SEED its off value: that is
what a record written before the field existed means (RunConfig.from_dict). Untrusted values are type-checked by
mnist_gan.settings.fieldtypes, range-checked by mnist_gan.settings.validation (which also reads a record into a
checked RunConfig) and read from files by mnist_gan.settings.config_file. This module does not import torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.fieldtypes import checked_sections

# What `mnist-gan train` trains when no --preset (or --config file) names one: the best digits per minute. The
# field defaults below are its values. The tutorial's model stays one flag away, --preset seed.
DEFAULT_PRESET = "recommended"


def _opt(default: Any, help: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class ModelConfig:
    """What G and D are."""

    architecture: str = _opt("dcgan", "network family: the tutorial's, or strided-convolution DCGAN", ("seed", "dcgan"))
    z_dim: int = _opt(100, "length of the noise vector z")
    z_distribution: str = _opt("normal", "noise prior: uniform U(-1, 1) or normal N(0, I)", ("uniform", "normal"))
    g_activation: str = _opt("tanh", "every activation of the seed generator, its output's included", ("tanh", "relu"))
    width: int = _opt(32, "dcgan: D's first and G's last hidden channel count (the other layers have twice as many)")
    d_batchnorm: bool = _opt(False, "dcgan: BatchNorm in D's hidden layer, as Radford et al. (G always has it)")
    spectral_norm: bool = _opt(True, "spectral normalisation of every D layer's weights")
    conditional: bool = _opt(False, "class-conditional G and D (dcgan): label embedding in G, projection in D")
    num_classes: int = _opt(10, "number of classes of a conditional model")
    channels: int = _opt(1, "image channels: 1 (MNIST), 3 (--data stacked-mnist: a digit in each colour channel)",
                         (1, 3))
    self_condition: int = _opt(100, "self-conditioned GAN (Liu et al. 2020): G and D conditioned on this many "
                                    "k-means clusters of the images, found without labels; G draws each in "
                                    "proportion to its size (dcgan; 0: off)")
    pack: int = _opt(2, "PacGAN: D judges this many images at once, stacked along its input channels "
                        "(Lin et al. 2018; 1: off)")


@dataclass
class DataConfig:
    """Which images, and in what order."""

    data: str = _opt("mnist", "mnist, fashion-mnist, kmnist, emnist-letters, stacked-mnist (3 channels), or a path: "
                              "IDX directory, .npz, or image folder")
    cache_dir: str | None = _opt(None, "download cache (none: $MNIST_GAN_CACHE, then ~/.cache/mnist-gan)")
    shuffle: bool = _opt(True, "reshuffle the training images every epoch (the tutorial did not)")
    limit: int | None = _opt(None, "use only the first N training images")


@dataclass
class TrainConfig:
    """How G and D are optimised, and what the run records."""

    loss: str = _opt("lsgan", "GAN objective (see mnist_gan.gan.losses.LOSSES)")
    optimizer: str = _opt("adam", "optimizer for both networks", ("sgd", "adam"))
    lr: float = _opt(1.6e-3, "learning rate of G and D")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(True, "SGD Nesterov momentum")
    beta1: float = _opt(0.0, "Adam beta1")
    beta2: float = _opt(0.99, "Adam beta2")
    batch_size: int = _opt(128, "real images per iteration (D also sees as many fakes)")
    epochs: int = _opt(100, "passes over the training images (ignored when --iterations is set)")
    iterations: int | None = _opt(None, "stop after this many iterations (one D step and one G step each)")
    max_minutes: float | None = _opt(None, "also stop after this many minutes of training (for equal-time comparisons)")
    seed: int = _opt(0, "random seed: same seed and flags give the same numbers on the CPU")
    fake_in_eval_mode: bool = _opt(False, "make D's fakes with G in inference mode, as Keras' G.predict does")
    joint_d_batch: bool = _opt(True, "one D pass over concatenated real+fake (the tutorial) instead of two")
    reuse_fakes: bool = _opt(False, "G learns from the fakes D was just updated on (one G forward pass an "
                                    "iteration, as PyTorch's DCGAN example) instead of from fresh ones")
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
                                  "(on a CPU only for steps large enough to gain from it)",
                          ("auto", "fp32", "bf16"))
    compile: bool = _opt(False, "torch.compile G and D (slow to start; falls back to eager where unavailable)")
    lr_d: float | None = _opt(None, "D's learning rate (none: --lr's); TTUR uses a larger one than G's")
    lr_g: float | None = _opt(None, "G's learning rate (none: --lr's)")
    n_critic: int = _opt(1, "D steps per G step (each on the same real batch, fresh fakes); WGAN-GP uses 5")
    gp_weight: float = _opt(10.0, "weight of the gradient penalty of losses that have one (wgan-gp)")
    r1_gamma: float = _opt(0.0, "R1 penalty gamma/2 * E|grad D(real)|^2 on D (0: off)")
    label_smoothing: float = _opt(0.0, "one-sided label smoothing: D's target for real images is 1 - this")
    ema_decay: float = _opt(0.999, "exponential moving average of G's weights, used for samples and export (0: off)")
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

    preset: str = DEFAULT_PRESET  # the field defaults are its values
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: object) -> RunConfig:
        """Rebuild from `to_dict()` output (untrusted: a hand-edited config.json or a checkpoint's record).

        Every value must have its field's type and every name must be known (mnist_gan.settings.fieldtypes). A
        record that lacks a field predates it: the feature stays off. Such a record (an old config.json,
        checkpoint or export, or a `preset: custom` file) was written when the field defaults were the seed
        preset's, so a missing field takes SEED's value, not the field's default; a missing preset is "custom".
        A refusal is a MnistGanError of one short line naming the field.
        """
        preset_name, sections = checked_sections(raw, SECTIONS)
        before = SEED.to_dict()  # a record that lacks a field predates it: the feature stays off
        return cls(preset="custom" if preset_name is None else preset_name,
                   **{name: SECTIONS[name](**{**before[name], **values}) for name, values in sections.items()})


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}

# The tutorial's model and procedure (Keras DCGAN on MNIST), reproduced as closely as PyTorch allows; every
# feature the tutorial lacks is off, so these are also the values of any field a record lacks (from_dict). The
# tutorial's own code trains with SGD(lr=0.001, momentum=0.9, nesterov=True) for 30 epochs at a small batch (its
# reported runs used 32 and 36). keras-dcgan, which it grew from, used lr 0.0005, 100 epochs and batch 128:
# `--lr 0.0005 --epochs 100 --batch-size 128`. What differs from the defaults (recommended) is spelled out.
SEED = RunConfig(
    preset="seed",
    model=ModelConfig(architecture="seed", z_distribution="uniform", width=16, d_batchnorm=True,
                      spectral_norm=False, self_condition=0, pack=1),
    data=DataConfig(shuffle=False),
    train=TrainConfig(loss="non-saturating", optimizer="sgd", lr=0.001, lr_d=None, beta1=0.5, beta2=0.999,
                      batch_size=32, epochs=30, fake_in_eval_mode=True, ema_decay=0.0),
)

# The tutorial's reported failure: a ReLU generator (output included) collapses to flat gray.
SEED_RELU = RunConfig(preset="seed-relu", model=dataclasses.replace(SEED.model, g_activation="relu"),
                      data=dataclasses.replace(SEED.data), train=dataclasses.replace(SEED.train))

# Radford et al. (2016) for 28x28: strided (transposed) convolutions, BatchNorm, LeakyReLU in D, z ~ N(0, I),
# Adam 2e-4 (0.5, 0.999), non-saturating BCE on logits, separate real and fake D passes. Width 32: the lowest
# FID after 5 minutes on a 2-core CPU among 16, 32 and 64 (benchmarks/dcgan_widths.py --minutes 5).
# Spelled out in full where the paper fixes a value, and without recommended's additions.
DCGAN = RunConfig(
    preset="dcgan",
    model=ModelConfig(architecture="dcgan", z_distribution="normal", width=32, d_batchnorm=True,
                      spectral_norm=False, self_condition=0, pack=1),
    data=DataConfig(shuffle=True),
    train=TrainConfig(loss="non-saturating", optimizer="adam", lr=2e-4, lr_d=None, beta1=0.5, beta2=0.999,
                      batch_size=64, epochs=100, fake_in_eval_mode=False, joint_d_batch=False, ema_decay=0.0),
)

# The best digits per minute found on a 2-core CPU (benchmarks/compare_presets.py and the README's account of
# the search): dcgan's networks at width 32, spectral normalisation instead of BatchNorm in D, the LSGAN loss,
# Adam without first-moment momentum (beta1 0, beta2 0.99, as is usual with spectral normalisation) at 1.6e-3 for
# both networks, batch 128 (in bf16 where the CPU has it), and an EMA of G's weights for sampling. At equal time
# batch 128 beat the former batch 32 (fp32, G 4e-4, D 8e-4), and G and D at 1.6e-3 beat that batch's former TTUR
# rates (G 8e-4, D 1.6e-3) from the first minute on (benchmarks/time_to_digits.py; docs/performance.md). Without BatchNorm in D, one D pass over real+fake computes exactly what two separate passes do, in
# fewer, larger operations. Self-conditioned (Liu et al. 2020) on 100 k-means clusters of the pixels, found
# without labels before training and kept, and D judging packs of 2 images (PacGAN, Lin et al. 2018): at equal
# time this beats the labelled conditional model's FID, where the same networks unconditioned score ~5x worse;
# 100 clusters beat 10, 20 and 50, re-clustering on D's features (the paper's choice) made it worse at this
# budget, and packing raised recall (docs/benchmarks.md). `--self-condition 0 --pack 1` is the unconditional
# model; `--conditional` trains on labels instead of clusters. It is the default preset: the field defaults.
RECOMMENDED = RunConfig()

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
