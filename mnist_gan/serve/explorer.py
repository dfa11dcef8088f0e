"""Steer a trained G: seeded sample grids, latent directions found as GANSpace finds them, walks between two
samples, and D's opinion of each image. What `mnist-gan serve` computes; no web code lives here.

Latent directions (Härkönen et al., "GANSpace", NeurIPS 2020): draw many z, record G's first activations,
take their principal components, and regress z on the components' coordinates; each regression row is a
direction in z-space that moves the early features along one principal axis. The top ones change pose, width
and stroke far more per unit of z than random directions do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mnist_gan.errors import MnistGanError
from mnist_gan.gan.models import sample_z, score_each
from mnist_gan.sampling.sample import latent_walk, nicest, sample_labels
from mnist_gan.settings.config import ModelConfig

NUM_DIRECTIONS = 6  # sliders on the page: the top components carry most of the variance; more only clutter
PCA_SAMPLES = 2048  # z draws for the PCA: ~20x the directions' z_dim, enough for stable top components
PCA_SEED = 0  # the directions depend only on G, so a shared URL shows the same picture elsewhere
PCA_OVERSAMPLE = 8  # extra columns of the randomized PCA's subspace: the top components come out accurate


@dataclass(frozen=True)
class View:
    """What the page shows: n samples drawn as `generate(G, model_config, n, seed, digit=digit)` draws them,
    each z moved by shifts[i] prior standard deviations along direction i."""

    seed: int = 0
    n: int = 16
    digit: int | None = None
    shifts: tuple[float, ...] = ()


@dataclass
class Samples:
    """Images (N, C, 28, 28) in [-1, 1] (C = 1, or 3 for a colour G), D's score of each (or None without D),
    and their labels (or None)."""

    images: torch.Tensor
    scores: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class Directions:
    """Unit z-directions (k, z_dim), the share of early-activation variance along each, and the layer read."""

    vectors: torch.Tensor
    explained: list[float]
    layer: str


class _Captured(Exception):  # raised by the hook: the rest of G's forward pass is not needed
    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation" and not list(module.children())


@torch.no_grad()
def early_activations(G: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, str]:
    """G's first nonlinearity's output (N, F) for inputs z (N, z_dim), and that layer's name; G's output when G
    has no activation module."""
    def capture(module, inputs, output):
        raise _Captured(output)

    names = {module: name for name, module in G.named_modules() if _is_activation(module)}
    fired: list[str] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: (fired.append(name), capture(m, i, o)))
             for module, name in names.items()]
    was_training = G.training
    G.eval()
    try:
        output, layer = G(z, labels), "output"
    except _Captured as captured:
        output, layer = captured.output, fired[0]
    finally:
        for hook in hooks:
            hook.remove()
        G.train(was_training)
    return output.float().flatten(1), layer


def latent_directions(G: nn.Module, model_config: ModelConfig, count: int = NUM_DIRECTIONS,
                      samples: int = PCA_SAMPLES, seed: int = PCA_SEED) -> Directions:
    """The top `count` GANSpace directions of G, strongest first (deterministic for a given G and seed)."""
    rng = torch.Generator().manual_seed(seed)
    z = sample_z(samples, model_config, rng)  # (N, z_dim)
    labels = sample_labels(samples, model_config)  # every class in turn, so no class dominates the components
    features, layer = early_activations(G, z, labels)  # (N, F)
    features = features - features.mean(0)
    k = max(0, min(count, model_config.z_dim, samples - 1, features.shape[1]))
    if k == 0:
        return Directions(torch.zeros(0, model_config.z_dim), [], layer)
    with torch.random.fork_rng():  # the randomized PCA draws from the global RNG; keep it seeded and untouched
        torch.manual_seed(seed)
        _, singular, basis = torch.pca_lowrank(features, q=min(k + PCA_OVERSAMPLE, *features.shape), center=False,
                                                  niter=4)
    coords = features @ basis[:, :k]  # (N, k): each sample's position along the principal axes
    vectors = torch.linalg.lstsq(coords, z - z.mean(0)).solution  # (k, z_dim): z that moves each coordinate
    vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    total = features.pow(2).sum().clamp_min(1e-12)
    explained = (singular[:k].pow(2) / total).tolist()
    return Directions(vectors, explained, layer)


def prior_std(model_config: ModelConfig) -> float:
    """Standard deviation of one coordinate of z's prior: 1 for N(0, I), 1/sqrt(3) for U(-1, 1)."""
    return 1.0 if model_config.z_distribution == "normal" else 1 / math.sqrt(3)


def score_reading(loss_name: str | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """How to read D's raw output as a score for the run's loss, with a short description: the training logs'
    reading in [0, 1] where it never ties (a sigmoid; also when the loss is unknown), else D's output itself, so the
    scores order the samples for every loss (LSGAN's D puts a young G's fakes all below 0, where its clipped
    reading would show 0.00 on every one)."""
    from mnist_gan.gan.losses import LOSSES

    loss = LOSSES.get(loss_name or "")
    if loss is None:
        return torch.sigmoid, "sigmoid of D's output"
    if not loss.absolute_score:
        return loss.score, f"{loss_name}: a critic's scores only compare with each other"
    if loss.score is not torch.sigmoid:  # a clipped reading (lsgan's, hinge's) ties every sample past D's targets
        return torch.clone, f"{loss_name}: D's output, unclipped: higher looks more real to D"
    return loss.score, f"{loss_name}: 1 where D puts real digits, 0 where it puts fakes"


class Explorer:
    """A loaded G (and D, if the source has one) with its latent directions, rendering views on the CPU."""

    def __init__(self, model_config: ModelConfig, G: nn.Module, D: nn.Module | None, loss_name: str | None = None,
                 directions: Directions | None = None):
        self.model_config, self.G, self.D = model_config, G.eval(), D.eval() if D is not None else None
        self.score, self.score_note = score_reading(loss_name)
        self.directions = directions if directions is not None else latent_directions(self.G, model_config)
        self.render(View(n=1))  # warm up: the first request should not pay for one-time allocations

    def latents(self, view: View) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(z (n, z_dim), labels (n,) or None) of a view: generate's draws, moved along the directions."""
        if len(view.shifts) > len(self.directions.vectors):
            raise MnistGanError(f"this generator has {len(self.directions.vectors)} directions, "
                                f"got {len(view.shifts)} slider values")
        z = sample_z(view.n, self.model_config, torch.Generator().manual_seed(view.seed))  # (n, z_dim)
        if any(view.shifts):
            shifts = torch.tensor(view.shifts, dtype=z.dtype) * prior_std(self.model_config)  # (k,)
            z = z + shifts @ self.directions.vectors[:len(shifts)]  # (n, z_dim) + (z_dim,)
        return z, sample_labels(view.n, self.model_config, view.digit)

    @torch.no_grad()
    def scores(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """D's score (N,) of images (N, C, 28, 28) with their class labels; None without D."""
        if self.D is None:
            return None
        return self.score(score_each(self.D, images, labels).float())

    @torch.no_grad()
    def render(self, view: View) -> Samples:
        """The view's images and D's scores; with no shifts, exactly `generate`'s images for seed, n, digit."""
        z, labels = self.latents(view)
        images = self.G(z, labels).float()  # (n, C, 28, 28)
        return Samples(images, self.scores(images, labels), labels)

    @torch.no_grad()
    def nice(self, view: View) -> Samples:
        """The n of 20 n samples (NICE_FACTOR) D scores highest, best first: what `generate --nice` writes."""
        if any(view.shifts):
            raise MnistGanError("the nice view ranks fresh draws; set the sliders to 0 to use it")
        images, outputs = nicest(self.G, self.D, self.model_config, view.n, seed=view.seed, digit=view.digit)
        labels = None if view.digit is None else sample_labels(view.n, self.model_config, view.digit)
        return Samples(images, self.score(outputs), labels)

    @torch.no_grad()
    def walk(self, view: View, first: int, last: int, steps: int) -> Samples:
        """Images (steps, C, 28, 28) from sample `first` of the view to sample `last`, walked as `interpolate`
        walks (see latent_walk): slerp for Gaussian z, a straight line for uniform z, a conditional G's label
        blended alike."""
        if not (0 <= first < view.n and 0 <= last < view.n) or first == last:
            raise MnistGanError(f"pick two different samples among the {view.n} shown (0..{view.n - 1}), "
                                f"got {first} and {last}")
        z, labels = self.latents(view)
        ends = (None, None) if labels is None else (labels[[first]], labels[[last]])  # (1,) each
        path, walk_labels = latent_walk(self.model_config, steps, z[[first]], z[[last]], *ends)  # (1, T, ...)
        images = self.G(path[0], None if walk_labels is None else walk_labels[0]).float()  # (T, C, 28, 28)
        # A conditional D needs one class per image; halfway between two digits there is none to give it.
        if labels is None or labels[first] == labels[last]:
            scores = self.scores(images, None if labels is None else labels[first].repeat(steps))
        else:
            scores = None
        return Samples(images, scores, None if labels is None else labels[[first, last]])
