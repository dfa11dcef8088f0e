"""The tutorial's GAN written again from scratch: plain tensors, no nn.Module, no torch.optim.

    python examples/seed_from_scratch.py --iterations 200 --out seed_from_scratch.png

Every weight is an explicit tensor with Keras' initialisation, the forward passes are written with
torch.nn.functional (or plainer), binary cross-entropy is written out, and so is the Nesterov-SGD update: no
nn.Module, no torch.optim; of PyTorch's training machinery only autograd is used, and of mnist_gan only the data
loading and the PNG writing. This is the same algorithm as `mnist-gan train --preset seed`:
tests/test_examples_seed_from_scratch.py starts both from the same weights, data order and noise and checks that they end
with the same weights.

Read it top to bottom: initialisation, G, D, the loss, the optimizer, one training iteration, the loop.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

Weights = dict[str, torch.Tensor]  # name -> tensor; trainable ones have requires_grad=True
Noise = Callable[[int], torch.Tensor]  # n -> z (n, Z_DIM)

Z_DIM = 100  # length of the noise vector z, as in the tutorial
LR = 0.001  # the tutorial's SGD(lr=0.001, momentum=0.9, nesterov=True), for both networks
MOMENTUM = 0.9
BATCH_SIZE = 32  # the tutorial trained with small batches; its reported runs used 32 and 36
BN_MOMENTUM = 0.01  # Keras' BatchNormalization(momentum=0.99) keeps 99% of the old average: 1% of the new batch
BN_EPS = 1e-3  # Keras' BatchNormalization epsilon
GRID_SIZE = 64  # an 8x8 grid of samples


# --------------------------------------------------------------------------------------------- initialisation

def glorot_uniform(shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Keras' default kernel initialiser: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).

    Weights are stored as PyTorch lays them out: a dense layer (out, in), a convolution (out, in, k, k), whose
    fans are in * k * k and out * k * k. (Keras stores the transposes; the fans, and so the limits, are the same.)
    """
    receptive_field = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * receptive_field, shape[0] * receptive_field
    limit = math.sqrt(6 / (fan_in + fan_out))
    return ((torch.rand(shape, generator=generator) * 2 - 1) * limit).requires_grad_(True)


def zeros(*shape: int, trainable: bool = True) -> torch.Tensor:
    return torch.zeros(shape).requires_grad_(trainable)


def ones(*shape: int, trainable: bool = True) -> torch.Tensor:
    return torch.ones(shape).requires_grad_(trainable)


def init_generator(generator: torch.Generator | None = None) -> Weights:
    """G's weights: Dense 1024, Dense 6272 + BatchNorm, Conv 5x5 64, Conv 5x5 1 (biases zero, BatchNorm's scale
    one and shift zero, its running mean zero and running variance one)."""
    return {
        "dense1.weight": glorot_uniform((1024, Z_DIM), generator), "dense1.bias": zeros(1024),
        "dense2.weight": glorot_uniform((128 * 7 * 7, 1024), generator), "dense2.bias": zeros(128 * 7 * 7),
        "bn.gamma": ones(128 * 7 * 7), "bn.beta": zeros(128 * 7 * 7),
        "bn.running_mean": zeros(128 * 7 * 7, trainable=False), "bn.running_var": ones(128 * 7 * 7, trainable=False),
        "conv1.weight": glorot_uniform((64, 128, 5, 5), generator), "conv1.bias": zeros(64),
        "conv2.weight": glorot_uniform((1, 64, 5, 5), generator), "conv2.bias": zeros(1),
    }


def init_discriminator(generator: torch.Generator | None = None) -> Weights:
    """D's weights: Conv 5x5 64, Conv 5x5 128, Dense 1024, Dense 1 (biases zero)."""
    return {
        "conv1.weight": glorot_uniform((64, 1, 5, 5), generator), "conv1.bias": zeros(64),
        "conv2.weight": glorot_uniform((128, 64, 5, 5), generator), "conv2.bias": zeros(128),
        "dense1.weight": glorot_uniform((1024, 128 * 5 * 5), generator), "dense1.bias": zeros(1024),
        "dense2.weight": glorot_uniform((1, 1024), generator), "dense2.bias": zeros(1),
    }


def trainable(weights: Weights) -> list[str]:
    """The names of the weights the optimizer updates (BatchNorm's running statistics are not among them)."""
    return [name for name, tensor in weights.items() if tensor.requires_grad]


def gradients(loss: torch.Tensor, weights: Weights) -> dict[str, torch.Tensor]:
    """d loss / d w for every trainable w of one network (autograd: the one thing borrowed from PyTorch)."""
    names = trainable(weights)
    return dict(zip(names, torch.autograd.grad(loss, [weights[name] for name in names]), strict=True))


# --------------------------------------------------------------------------------------------- G and D

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def dense(x: torch.Tensor, weights: Weights, name: str) -> torch.Tensor:
    return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]


def batch_norm(x: torch.Tensor, weights: Weights, training: bool) -> torch.Tensor:
    """Normalise each feature of x (B, F). Training: with the batch's mean and variance, and fold them into the
    running averages; inference (Keras' G.predict): with the running averages."""
    if training:
        mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)  # (F,) each
        with torch.no_grad():  # the running variance is unbiased (PyTorch's rule, which the package follows)
            weights["bn.running_mean"].lerp_(mean, BN_MOMENTUM)
            weights["bn.running_var"].lerp_(x.var(dim=0, unbiased=True), BN_MOMENTUM)
    else:
        mean, var = weights["bn.running_mean"], weights["bn.running_var"]
    return (x - mean) / torch.sqrt(var + BN_EPS) * weights["bn.gamma"] + weights["bn.beta"]


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Keras' UpSampling2D(size=(2, 2)): repeat every pixel twice along each axis."""
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def generator_forward(G: Weights, z: torch.Tensor, training: bool, activation: str = "tanh") -> torch.Tensor:
    """z (B, 100) -> images (B, 1, 28, 28): in [-1, 1] with tanh, [0, inf) with relu (the tutorial's failure)."""
    act = ACTIVATIONS[activation]
    x = act(dense(z, G, "dense1"))  # (B, 1024)
    x = act(batch_norm(dense(x, G, "dense2"), G, training))  # (B, 6272)
    x = x.view(-1, 128, 7, 7)  # (B, 128, 7, 7); Keras reshapes channels-last, a fixed permutation of dense2
    x = act(F.conv2d(upsample2(x), G["conv1.weight"], G["conv1.bias"], padding=2))  # (B, 64, 14, 14)
    return act(F.conv2d(upsample2(x), G["conv2.weight"], G["conv2.bias"], padding=2))  # (B, 1, 28, 28)


def discriminator_forward(D: Weights, images: torch.Tensor) -> torch.Tensor:
    """images (B, 1, 28, 28) -> logits (B,); D's probability that an image is real is sigmoid(logit)."""
    x = torch.tanh(F.conv2d(images, D["conv1.weight"], D["conv1.bias"], padding=2))  # (B, 64, 28, 28)
    x = F.max_pool2d(x, 2)  # (B, 64, 14, 14)
    x = torch.tanh(F.conv2d(x, D["conv2.weight"], D["conv2.bias"]))  # 'valid': (B, 128, 10, 10)
    x = F.max_pool2d(x, 2)  # (B, 128, 5, 5)
    x = torch.tanh(dense(x.flatten(1), D, "dense1"))  # (B, 1024)
    return dense(x, D, "dense2").squeeze(1)  # (B,)


# --------------------------------------------------------------------------------------------- loss, optimizer

def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of -[t log p + (1 - t) log(1 - p)] with p = sigmoid(logit).

    Computed from the logit: log p = -log(1 + e^-l) and log(1 - p) = -log(1 + e^l) (softplus), which never takes
    the log of 0. Keras computes it from p, clipped to [1e-7, 1 - 1e-7], which caps a saturated loss near 16.1.
    """
    log_p, log_not_p = -F.softplus(-logits), -F.softplus(logits)
    return -(targets * log_p + (1 - targets) * log_not_p).mean()


def nesterov_sgd_(weights: Weights, grads: dict[str, torch.Tensor], velocity: Weights, lr: float,
                  momentum: float) -> None:
    """Keras' SGD(nesterov=True), in place: v <- m v - lr g, then w <- w + m v - lr g.

    The step looks ahead along the velocity it has just updated. (PyTorch keeps b = m b + g, with v = -lr b: with
    a constant lr the two produce the same weights.)
    """
    with torch.no_grad():
        for name, grad in grads.items():
            v = velocity.setdefault(name, torch.zeros_like(grad))
            v.mul_(momentum).sub_(lr * grad)
            weights[name].add_(momentum * v - lr * grad)


# --------------------------------------------------------------------------------------------- training

def train_step(G: Weights, D: Weights, velocity_G: Weights, velocity_D: Weights, real: torch.Tensor,
               noise: Noise, lr: float = LR, momentum: float = MOMENTUM, activation: str = "tanh") -> dict:
    """One iteration of the tutorial: one D step on real+fake, then one G step; returns the losses and D's
    mean probabilities for the real and the fake half."""
    batch_size = len(real)
    real_target, fake_target = torch.ones(batch_size), torch.zeros(batch_size)

    # (1) Update D: real images labelled 1, G's fakes labelled 0. Keras makes the fakes with G.predict, i.e.
    # G in inference mode (BatchNorm uses its running averages) and no gradient.
    with torch.no_grad():
        fake = generator_forward(G, noise(batch_size), training=False, activation=activation)  # (B, 1, 28, 28)
    logits = discriminator_forward(D, torch.cat([real, fake]))  # (2B,)
    loss_d = binary_cross_entropy(logits, torch.cat([real_target, fake_target]))
    nesterov_sgd_(D, gradients(loss_d, D), velocity_D, lr, momentum)

    # (2) Update G: new fakes labelled 1 (G wants D to call them real), through D, whose weights stay as they are.
    fake_logits = discriminator_forward(D, generator_forward(G, noise(batch_size), training=True,
                                                             activation=activation))  # (B,)
    loss_g = binary_cross_entropy(fake_logits, real_target)
    nesterov_sgd_(G, gradients(loss_g, G), velocity_G, lr, momentum)

    probabilities = torch.sigmoid(logits.detach())
    return {"d_loss": loss_d.item(), "g_loss": loss_g.item(), "d_x": probabilities[:batch_size].mean().item(),
            "d_g_z": probabilities[batch_size:].mean().item()}


def real_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches (B, 1, 28, 28) in [-1, 1] of uint8 images (N, 28, 28), epoch after epoch. Like the tutorial: in
    order, no shuffling, the last partial batch of each epoch dropped."""
    while True:  # epoch after epoch
        for start in range(0, len(images) - batch_size + 1, batch_size):
            yield images[start:start + batch_size].unsqueeze(1).float().sub_(127.5).div_(127.5)


def uniform_noise(seed: int) -> Noise:
    """The tutorial's prior, z ~ U(-1, 1)^100, from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return lambda n: torch.rand(n, Z_DIM, generator=generator) * 2 - 1


def train(G: Weights, D: Weights, batches: Iterator[torch.Tensor], noise: Noise, iterations: int, lr: float = LR,
          momentum: float = MOMENTUM, activation: str = "tanh", log_every: int = 0) -> list[dict]:
    """Train G and D in place for `iterations` iterations; return one record per iteration.

    The noise source is called twice per iteration: first for D's fakes, then for G's.
    """
    velocity_G, velocity_D = {}, {}  # the optimizers' state: zero until the first step
    history = []
    for iteration in range(1, iterations + 1):
        record = train_step(G, D, velocity_G, velocity_D, next(batches), noise, lr, momentum, activation)
        history.append({"iteration": iteration, **record})
        if log_every and iteration % log_every == 0:
            print(f"iteration {iteration}: d_loss {record['d_loss']:.4f}  g_loss {record['g_loss']:.4f}  "
                  f"D(x) {record['d_x']:.3f}  D(G(z)) {record['d_g_z']:.3f}", file=sys.stderr)
    return history


# --------------------------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200, help="training iterations (default: 200)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"default: {BATCH_SIZE}")
    parser.add_argument("--lr", type=float, default=LR, help=f"learning rate of G and D (default: {LR})")
    parser.add_argument("--relu", action="store_true", help="every activation of G ReLU: the tutorial's failure")
    parser.add_argument("--data", default="mnist", help="as `mnist-gan train --data` (default: mnist)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and noise (default: 0)")
    parser.add_argument("--log-every", type=int, default=20, help="iterations between printed losses")
    parser.add_argument("--out", default="seed_from_scratch.png", help="the grid of 64 samples to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)

    from mnist_gan.data.datasets import load_dataset
    from mnist_gan.errors import MnistGanError
    from mnist_gan.sampling.grids import save_grid
    from mnist_gan.settings.config import DataConfig

    try:
        if args.iterations < 1 or args.batch_size < 1 or not args.lr > 0:
            raise MnistGanError("--iterations, --batch-size and --lr must be positive")
        if Path(args.out).exists() and not args.overwrite:
            raise MnistGanError(f"{args.out}: exists; pass --overwrite to replace it")
        dataset = load_dataset(DataConfig(data=args.data))
        if len(dataset) < args.batch_size:
            raise MnistGanError(f"--batch-size {args.batch_size} is larger than the data set ({len(dataset)})")
        weights_rng = torch.Generator().manual_seed(args.seed)
        G, D = init_generator(weights_rng), init_discriminator(weights_rng)
        activation = "relu" if args.relu else "tanh"
        train(G, D, real_batches(dataset.images, args.batch_size), uniform_noise(args.seed), args.iterations,
              args.lr, activation=activation, log_every=args.log_every)
        with torch.no_grad():
            images = generator_forward(G, uniform_noise(args.seed + 1)(GRID_SIZE), training=False,
                                       activation=activation)  # (64, 1, 28, 28)
        save_grid(images.clamp(-1, 1), args.out, nrow=8, scale=2)
    except MnistGanError as error:
        print(f"seed_from_scratch: {error}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
