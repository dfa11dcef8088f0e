"""Generators and discriminators. No training code lives here.

Every G is called as G(z, labels=None) and every D as D(images, labels=None); unconditional networks ignore labels.
A packed D (PacGAN, `pack` m > 1) returns one logit per m consecutive images (B/m,); `score_each` gives one per
image.

The `seed` pair reproduces the tutorial's Keras DCGAN. Where PyTorch differs from Keras:
- D ends in a logit; the sigmoid lives in the loss (`binary_cross_entropy_with_logits`), which is the same BCE but
  without Keras' clipping of probabilities to [1e-7, 1 - 1e-7] (so a saturated loss can exceed Keras' ~16.1 cap).
- Keras reshapes G's 6,272 features to (7, 7, 128) channels-last; here they become (128, 7, 7). The Dense layer
  before it is learned, so this is only a fixed permutation of its outputs: the same family of functions.
- Keras BatchNormalization(momentum=0.99, epsilon=1e-3) is BatchNorm1d(momentum=0.01, eps=1e-3): PyTorch's
  momentum weighs the new batch, Keras' the old average.
- Weights use Keras' Glorot-uniform initialisation and zero biases; PyTorch's default init would differ.
- UpSampling2D + Conv2D is computed as one convolution on the small image (UpsampledConv2d), and D pools before
  its tanh rather than after: the same functions, fewer operations.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import ModelConfig


def pack_images(images: torch.Tensor, pack: int) -> torch.Tensor:
    """PacGAN's input: m consecutive images (B, C, H, W) stacked along the channels, (B/m, m*C, H, W)."""
    if pack == 1:
        return images
    if len(images) % pack:
        raise MnistGanError(f"a packed discriminator judges {pack} images at once; got a batch of {len(images)}")
    return images.reshape(len(images) // pack, pack * images.shape[1], *images.shape[2:])


def score_each(D: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """D's logit (B,) for each image on its own: a packed D judges a pack of m copies of it."""
    pack = getattr(D, "pack", 1)
    if pack == 1:
        return D(images, labels)
    return D(images.repeat_interleave(pack, dim=0), None if labels is None else labels.repeat_interleave(pack))


def label_classes(config: ModelConfig) -> int:
    """How many classes G and D are conditioned on: the labels' (--conditional), the clusters' (--self-condition),
    or 0."""
    return config.num_classes if config.conditional else config.self_condition


def _activation(name: str) -> nn.Module:
    return {"tanh": nn.Tanh, "relu": nn.ReLU}[name]()


def keras_init_(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases on every Linear and Conv2d, as Keras initialises them."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _phase_taps(kernel_size: int) -> tuple[torch.Tensor, int]:
    """For a 'same' convolution of odd `kernel_size` applied after nearest 2x upsampling: the matrices (2, k', k)
    that sum its k taps into the k' taps that output phase r (0: even, 1: odd pixels) applies to the small image,
    and the small image's padding."""
    half = kernel_size // 2
    offsets = [[(phase + tap) // 2 for tap in range(-half, half + 1)] for phase in (0, 1)]  # small-image pixel
    low = min(min(row) for row in offsets)
    taps = torch.zeros(2, max(max(row) for row in offsets) - low + 1, kernel_size)
    for phase, row in enumerate(offsets):
        for tap, offset in enumerate(row):
            taps[phase, offset - low, tap] = 1.0
    return taps, -low


class UpsampledConv2d(nn.Conv2d):
    """Nearest 2x upsampling followed by this 'same' convolution (odd kernel, stride 1), computed on the small image.

    Each of the four output phases (even/odd row, even/odd column) sees the upsampled image's repeated pixels, so
    its k x k kernel acts on the small image as a smaller kernel whose taps are sums of the original's (5x5 -> 3x3):
    one convolution to 4x the channels, then a pixel shuffle, does 36/100 of the multiply-adds of upsampling first,
    on a quarter of the pixels. The parameters are an ordinary Conv2d's (same names and shapes), and the function
    and its gradients are the same up to floating-point rounding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int, bias: bool = True):
        if kernel_size % 2 == 0 or padding != kernel_size // 2:
            raise ValueError("UpsampledConv2d needs an odd kernel with 'same' padding")
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        taps, self.small_padding = _phase_taps(kernel_size)
        self.register_buffer("phase_taps", taps, persistent=False)  # (2, k', k), rebuilt, never saved
        self.on_small_image = True  # False: upsample, then convolve (as written; see upsample_first)

    @property
    def small_kernel_size(self) -> int:
        """The side of the kernel each phase applies to the small image (3 for a 5x5 kernel)."""
        return self.phase_taps.shape[1]

    def phase_weight(self) -> torch.Tensor:
        """The four phases' kernels as one convolution's weight (4 * out, in, k', k'), phase-major per channel."""
        weight = torch.einsum("yik,xjl,ockl->oyxcij", self.phase_taps, self.phase_taps, self.weight)
        return weight.reshape(4 * self.out_channels, self.in_channels, self.small_kernel_size, self.small_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in, H, W) -> (B, out, 2H, 2W)
        if not self.on_small_image:
            return super().forward(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
        bias = None if self.bias is None else self.bias.repeat_interleave(4)
        phases = nn.functional.conv2d(x, self.phase_weight(), bias, padding=self.small_padding)  # (B, 4 out, H, W)
        return nn.functional.pixel_shuffle(phases, 2)


def upsample_first(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Make every UpsampledConv2d in `module` upsample and then convolve, as the layers are written (enabled), or
    convolve on the small image (not enabled, the default of a new layer); for timing and checking the two."""
    for layer in module.modules():
        if isinstance(layer, UpsampledConv2d):
            layer.on_small_image = not enabled
    return module


class SeedGenerator(nn.Module):
    """The tutorial's G: z (B, 100) -> images (B, 1, 28, 28) in [-1, 1] (tanh) or [0, inf) (relu)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        act = config.g_activation
        self.project = nn.Sequential(
            nn.Linear(config.z_dim, 1024), _activation(act),
            nn.Linear(1024, 128 * 7 * 7),
            nn.BatchNorm1d(128 * 7 * 7, momentum=0.01, eps=1e-3), _activation(act),
        )
        # Keras' UpSampling2D + Conv2D pairs, each computed as one convolution on the small image
        # (UpsampledConv2d). The Identity slots stand where the upsampling layers stood, so the convolutions keep
        # their names (upsample.1, upsample.4) in checkpoints and exports.
        self.upsample = nn.Sequential(
            nn.Identity(),
            UpsampledConv2d(128, 64, 5, padding=2), _activation(act),  # (B, 64, 14, 14)
            nn.Identity(),
            UpsampledConv2d(64, config.channels, 5, padding=2), _activation(act),  # (B, C, 28, 28)
        )
        keras_init_(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.project(z)  # (B, 6272)
        x = x.view(-1, 128, 7, 7)  # (B, 128, 7, 7)
        return self.upsample(x)  # (B, 64, 14, 14) -> (B, C, 28, 28)


class SeedDiscriminator(nn.Module):
    """The tutorial's D: images (B, 1, 28, 28) -> logits (B,)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.pack = config.pack
        # Keras' conv-tanh-maxpool, with the pooling first: tanh is increasing, so max-then-tanh is the same
        # function (and gradient), with tanh on a quarter of the values.
        self.features = nn.Sequential(
            nn.Conv2d(config.channels * config.pack, 64, 5, padding=2),  # (B/m, 64, 28, 28)
            nn.MaxPool2d(2), nn.Tanh(),  # (B, 64, 14, 14)
            nn.Conv2d(64, 128, 5),  # 'valid': (B, 128, 10, 10)
            nn.MaxPool2d(2), nn.Tanh(),  # (B, 128, 5, 5)
        )
        self.classify = nn.Sequential(
            nn.Flatten(),  # (B, 3200)
            nn.Linear(128 * 5 * 5, 1024), nn.Tanh(),
            nn.Linear(1024, 1),  # (B, 1)
        )
        keras_init_(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify(self.features(pack_images(images, self.pack))).squeeze(1)  # (B/m,)


LABEL_DIM = 32  # length of a conditional G's label embedding, concatenated to z


def dcgan_init_(module: nn.Module) -> None:
    """Radford et al.: convolution weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02), zero biases."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        if isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
        if getattr(layer, "bias", None) is not None:
            nn.init.zeros_(layer.bias)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (B,) -> one-hot (B, C); soft labels (B, C), e.g. a mix of two digits, pass through."""
    if labels.is_floating_point():
        return labels
    return nn.functional.one_hot(labels, num_classes).float()


class DCGANGenerator(nn.Module):
    """Radford et al.'s G for 28x28: z (B, z_dim) [and labels] -> images (B, C, 28, 28) in [-1, 1]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        width, self.num_classes, self.z_distribution = config.width, label_classes(config), config.z_distribution
        self.embed = nn.Linear(self.num_classes, LABEL_DIM, bias=False) if self.num_classes else None
        inputs = config.z_dim + (LABEL_DIM if self.num_classes else 0)
        if config.self_condition:  # the clusters' shares of the training images, set by the run (mnist_gan.gan.clusters)
            self.register_buffer("cluster_weights", torch.full((config.self_condition,), 1 / config.self_condition))
        self.net = nn.Sequential(
            # Project and reshape: the same map as a 7x7 transposed convolution of a 1x1 input, written as the
            # matrix product it is, because oneDNN's transposed convolution of that shape is ~2x slower on a CPU.
            nn.Linear(inputs, 2 * width * 7 * 7, bias=False), nn.Unflatten(1, (2 * width, 7, 7)),  # (B, 2w, 7, 7)
            nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),  # (B, w, 14, 14)
            nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, config.channels, 4, 2, 1),  # (B, C, 28, 28)
            nn.Tanh(),
        )
        dcgan_init_(self)

    def cluster_ids(self, z: torch.Tensor) -> torch.Tensor:
        """A self-conditioned G's cluster (B,) for each z, drawn in proportion to `cluster_weights` by inverse CDF
        of z's first coordinate (uniform in [0, 1] under either prior), so G(z) is a function of z alone."""
        first = z[:, 0].float()
        u = (first + 1) / 2 if self.z_distribution == "uniform" else 0.5 * (1 + torch.erf(first / math.sqrt(2)))
        bounds = self.cluster_weights.float().cumsum(0)[:-1]  # (K - 1,)
        return (u[:, None] >= bounds[None, :]).sum(dim=1)  # (B,)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None and hasattr(self, "cluster_weights"):
            labels = self.cluster_ids(z)  # (B,)
        if self.embed is not None:
            if labels is None:
                raise MnistGanError("this generator is conditional: it needs a label (a digit) per image")
            z = torch.cat([z, self.embed(one_hot(labels, self.num_classes).to(z.dtype))], dim=1)  # (B, z+32)
        return self.net(z)  # (B, z) -> (B, C, 28, 28)


class DCGANDiscriminator(nn.Module):
    """Radford et al.'s D for 28x28: images (B, C, 28, 28) [and labels (B,)] -> logits (B/m,), m = pack.

    A conditional D adds the projection term <embed(y), features> of Miyato & Koyama (2018) to the logit; a packed
    one the sum of its m images' terms.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        width, self.pack = config.width, config.pack
        self.features = nn.Sequential(
            nn.Conv2d(config.channels * config.pack, width, 4, 2, 1), nn.LeakyReLU(0.2),  # (B/m, w, 14, 14)
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=not config.d_batchnorm),  # (B, 2w, 7, 7)
            nn.BatchNorm2d(2 * width) if config.d_batchnorm else nn.Identity(), nn.LeakyReLU(0.2),
            nn.Flatten(),  # (B, 2w * 49)
        )
        self.classify = nn.Linear(2 * width * 7 * 7, 1)
        classes, self.self_conditioned = label_classes(config), bool(config.self_condition)
        self.embed = nn.Embedding(classes, 2 * width * 7 * 7) if classes else None
        dcgan_init_(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(pack_images(images, self.pack))  # (B/m, 2w * 49)
        logits = self.classify(h).squeeze(1)  # (B/m,)
        if self.embed is not None and not (labels is None and self.self_conditioned):  # no cluster: a plain score
            if labels is None:
                raise MnistGanError("this discriminator is conditional: it needs the label of each image")
            embedded = self.embed(labels)  # (B, 2w * 49)
            if self.pack > 1:
                embedded = embedded.view(len(h), self.pack, -1).sum(dim=1)  # (B/m, 2w * 49)
            logits = logits + (embedded * h).sum(dim=1)
        return logits


ARCHITECTURES: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "seed": (SeedGenerator, SeedDiscriminator),
    "dcgan": (DCGANGenerator, DCGANDiscriminator),
}


def build_generator(config: ModelConfig) -> nn.Module:
    """Return a freshly initialised G for `config`."""
    return _architecture(config)[0](config)


def build_discriminator(config: ModelConfig) -> nn.Module:
    """Return a freshly initialised D for `config`, its layers spectrally normalised if asked."""
    D = _architecture(config)[1](config)
    if config.spectral_norm:
        apply_spectral_norm(D)
    return D


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Divide every Conv2d and Linear weight by its largest singular value (one power iteration per step)."""
    from torch.nn.utils.parametrizations import spectral_norm

    for layer in list(module.modules()):
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            spectral_norm(layer)
    return module


def _architecture(config: ModelConfig) -> tuple[type[nn.Module], type[nn.Module]]:
    if config.architecture not in ARCHITECTURES:
        raise MnistGanError(f"unknown architecture {config.architecture!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[config.architecture]


def sample_z(n: int, config: ModelConfig, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Draw n noise vectors (n, z_dim) from the configured prior: U(-1, 1) like the tutorial, or N(0, I)."""
    if config.z_distribution == "uniform":
        z = torch.rand(n, config.z_dim, generator=generator) * 2 - 1
    else:
        z = torch.randn(n, config.z_dim, generator=generator)
    if torch.device(device).type == "cuda":  # page-locked memory: the copy does not wait for the GPU to finish
        return z.pin_memory().to(device, non_blocking=True)
    return z.to(device)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """Return (all, trainable) like Keras counts them: all includes BatchNorm's moving mean and variance."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    moving = sum(b.numel() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var")))
    return trainable + frozen + moving, trainable
