"""Cheap measurements a training loop takes at its log steps, so that mnist_gan.diagnosis.detectors can tell how a run fails.

Each probe returns a dict of the optional metrics fields `mnist_gan.run.history.FIELDS` documents, ready to be merged
into the metrics record of that log step. None of them draws from torch's global RNG or changes a network's
state (modes are restored, D is scored through a private copy, nothing is trained), so a run with probes computes
the same weights as one without. The recorder of rank 0 runs them all through `RunProbes`:

    probes = RunProbes(step, dataset, classifier)   # once, G, D and G_ema on their device
    record |= probes(iteration)                     # at each log step, after the step, before the next one

which takes gradient norms at every log step and, where `probe_due` (every PROBE_EVERY iterations), the class
histogram of G_sample's images from fixed noise and D's scores of fixed training and held-out reals.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist_gan.data.images import ImageDataset, to_float
from mnist_gan.gan.clusters import kmeans
from mnist_gan.gan.models import build_discriminator, sample_z, score_each
from mnist_gan.run.history import (
    CLASS_HISTOGRAM,
    CLASS_PROBE,
    CLASS_REFERENCE,
    D_HELDOUT,
    D_TRAIN_REAL,
    GRAD_NORM_D,
    GRAD_NORM_G,
)
from mnist_gan.settings.config import ModelConfig

PROBE_SAMPLES = 500  # fixed-noise images per class histogram: a class at 10% then varies by +-1.3% (binomial)
REFERENCE_IMAGES = 2000  # real images that set the data's own histogram (+-0.7% per class at 10%)
PROBE_REAL_IMAGES = 256  # training and held-out reals scored by D: the mean score's noise is ~0.01 each
CLUSTERS = 10  # k-means clusters standing in for classes when the data has no labels (MNIST has 10 digits)
PROBE_EVERY = 200  # iterations between class and held-out probes: ~1,000 forward passes (1,500 with a classifier)
#                    each, ~1% of 200 recommended iterations' time on a CPU (~4% with a classifier); every 50
#                    it was 4.5% (16%) (docs/diagnose.md). Gradient norms cost nothing: every log step.
PROBE_SEED = 20_240_601  # fixed: the probes' noise and image choices never depend on (or draw from) the run's RNG


def probe_due(iteration: int, log_every: int) -> bool:
    """Whether the log step at `iteration` is the first at or after a multiple of PROBE_EVERY (so a run shorter
    than PROBE_EVERY, a test's or a smoke run's, never pays for the class and held-out probes)."""
    return iteration // PROBE_EVERY != max(0, iteration - log_every) // PROBE_EVERY


class RunProbes:
    """Every probe of one run, for its recorder. Rank 0 alone runs them under torchrun: none of them asks
    anything of the other processes (no collective), and ranks > 0 record nothing."""

    def __init__(self, step, dataset: ImageDataset, classifier=None) -> None:
        """`step` is the run's GanStep, its networks on their device; `classifier` the evaluator's, if any (else
        the data's cached one, else k-means clusters; see ClassProbe.for_dataset). The class and held-out probes
        are set up when first due."""
        self.step, self.dataset, self.classifier = step, dataset, classifier
        self.log_every = step.config.train.log_every
        self.classes: ClassProbe | None = None
        self.heldout: HeldoutProbe | None = None

    def __call__(self, iteration: int) -> dict:
        """The probe fields of the log step at `iteration`: gradient norms always (so call it after that
        iteration's step and before the next, whose zero_grad clears them); class and held-out probes when due."""
        step = self.step
        record = grad_norms(step.G, step.D)  # the plain modules: DDP and compiled views share their parameters
        if probe_due(iteration, self.log_every):
            if self.classes is None:
                config = step.config
                self.classes = ClassProbe.for_dataset(self.dataset, config.model, device=step.device,
                                                      classifier=self.classifier, cache_dir=config.data.cache_dir)
                self.heldout = HeldoutProbe.for_dataset(self.dataset, step.loss, config.model, device=step.device)
            record |= self.classes(step.G_sample) | (self.heldout(step.D) if self.heldout else {})
        return record


@torch.no_grad()
def grad_norms(G: nn.Module, D: nn.Module) -> dict[str, float]:
    """L2 norms of all of G's and of D's parameter gradients, as they stand: {grad_norm_g, grad_norm_d}.

    Call it after an iteration's G update and before the next zero_grad: G's gradients are then those of its
    last update and D's those of its last update (the G step runs with D frozen, so it leaves D's untouched).
    Pass the plain modules (not DDP or compiled wrappers; they share the same parameters). A network whose
    parameters have no gradient yet reads 0.
    """
    return {GRAD_NORM_G: _grad_norm(G), GRAD_NORM_D: _grad_norm(D)}


def _grad_norm(module: nn.Module) -> float:
    grads = [p.grad.detach().float() for p in module.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


class ClassProbe:
    """The predicted-class histogram of G's images from one fixed noise batch, beside the data's own.

    `assign` maps images (N, 1, 28, 28) in [-1, 1] to class indices (N,): the metrics' feature classifier where
    the data has labels, else the nearest of CLUSTERS k-means centres of the training images ("clusters").
    """

    def __init__(self, assign: Callable[[torch.Tensor], torch.Tensor], classes: int, reference: torch.Tensor,
                 kind: str, model_config: ModelConfig, device: torch.device | str = "cpu",
                 samples: int = PROBE_SAMPLES):
        from mnist_gan.sampling.sample import sample_labels

        self.assign, self.classes, self.kind, self.device = assign, classes, kind, torch.device(device)
        self.reference = [round(float(v), 6) for v in _histogram(reference, classes)]
        rng = torch.Generator().manual_seed(PROBE_SEED)
        self.z = sample_z(samples, model_config, rng, device)  # (N, z_dim)
        self.labels = sample_labels(samples, model_config, device=device)  # conditional: every class in turn
        self.reported = False

    @classmethod
    def for_dataset(cls, dataset: ImageDataset, model_config: ModelConfig, *, device: torch.device | str = "cpu",
                    classifier=None, cache_dir: str | Path | None = None, samples: int = PROBE_SAMPLES) -> ClassProbe:
        """Classes from `classifier`, or from the data's cached feature classifier, else k-means clusters.

        It never trains a classifier (that is evaluation's job, once per data set); without one at hand it falls
        back on clusters, which need no labels.
        """
        classifier = classifier or _cached_classifier(dataset, cache_dir)
        real = to_float(_spread(dataset.images, REFERENCE_IMAGES))  # (M, 1, 28, 28)
        if classifier is not None:
            # a channels-last copy: about twice as fast on CPUs, and the evaluator's own model stays as it is
            model = copy.deepcopy(classifier.model).eval().to(device, memory_format=torch.channels_last)

            def assign(images: torch.Tensor) -> torch.Tensor:
                return _classify(model, images, device)
            classes = classifier.model.head[-1].out_features
            return cls(assign, classes, assign(real), "classes", model_config, device, samples)
        centres = kmeans(_pooled(real), CLUSTERS, torch.Generator().manual_seed(PROBE_SEED))

        def nearest(images: torch.Tensor) -> torch.Tensor:
            return torch.cdist(_pooled(images.float().cpu()), centres).argmin(1)
        return cls(nearest, CLUSTERS, nearest(real), "clusters", model_config, device, samples)

    @torch.no_grad()
    def __call__(self, G: nn.Module) -> dict:
        """{class_histogram: fractions (C,)}; the first call also carries class_reference and class_probe."""
        was_training = G.training
        G.eval()
        images = torch.cat([G(z, None if y is None else y).float().clamp(-1, 1).cpu()
                            for z, y in _chunks(self.z, self.labels)])  # (N, 1, 28, 28)
        G.train(was_training)
        record = {CLASS_HISTOGRAM: [round(float(v), 6) for v in _histogram(self.assign(images), self.classes)]}
        if not self.reported:  # the reference is logged once; the diagnosis reads the newest one it finds
            record |= {CLASS_REFERENCE: self.reference, CLASS_PROBE: self.kind}
            self.reported = True
        return record


class HeldoutProbe:
    """D's mean score (the loss's own [0, 1] reading) on fixed training reals and on fixed held-out reals.

    A D that stays general scores both alike; one that memorises its training set scores them apart (the signal
    adaptive augmentation watches, Karras et al. 2020).
    """

    def __init__(self, train_images: torch.Tensor, train_labels: torch.Tensor | None, heldout_images: torch.Tensor,
                 heldout_labels: torch.Tensor | None, score: Callable[[torch.Tensor], torch.Tensor],
                 model_config: ModelConfig, device: torch.device | str = "cpu"):
        self.train = (to_float(train_images).to(device), None if train_labels is None else train_labels.to(device))
        self.heldout = (to_float(heldout_images).to(device),
                        None if heldout_labels is None else heldout_labels.to(device))
        self.score, self.conditional = score, model_config.conditional
        with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten; the run's RNG stays
            self.D_copy = build_discriminator(model_config).to(device)

    @classmethod
    def for_dataset(cls, dataset: ImageDataset, loss, model_config: ModelConfig, *,
                    device: torch.device | str = "cpu", count: int = PROBE_REAL_IMAGES) -> HeldoutProbe | None:
        """Fixed images from the training set and from its test split; None when the data has no test split
        (then no image is truly held out from D, and the diagnosis says that detector could not run)."""
        if dataset.test_images is None or len(dataset.test_images) == 0:
            return None
        train_index = _spread_index(len(dataset), count)
        heldout_index = _spread_index(len(dataset.test_images), count)
        labels = dataset.labels
        test_labels = dataset.test_labels
        return cls(dataset.images[train_index], None if labels is None else labels[train_index],
                   dataset.test_images[heldout_index], None if test_labels is None else test_labels[heldout_index],
                   loss.score, model_config, device)

    @torch.no_grad()
    def __call__(self, D: nn.Module) -> dict:
        """{d_train_real, d_heldout}, read as training reads D (training mode: BatchNorm's batch statistics).

        The scores come from a private copy loaded with D's weights and buffers, so D itself is never run: its
        buffers (BatchNorm's running statistics, spectral norm's vectors) stay as they were, and under torchrun
        its global-batch BatchNorm waits for no other process. No RNG is drawn.
        """
        self.D_copy.load_state_dict(D.state_dict())
        self.D_copy.train()
        scores = {}
        devices = [self.train[0].device] if self.train[0].device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for name, (images, labels) in ((D_TRAIN_REAL, self.train), (D_HELDOUT, self.heldout)):
                outputs = score_each(self.D_copy, images, labels if self.conditional else None).float()  # (n,)
                scores[name] = float(self.score(outputs).mean())
        return scores


def _pooled(images: torch.Tensor) -> torch.Tensor:
    # 14x14 averages: a stroke shifted by a pixel stays in the same cluster, and the distances cost a quarter
    return F.avg_pool2d(images.float(), 2).flatten(1)  # (N, 196)


def _histogram(indices: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.bincount(indices.cpu(), minlength=classes)[:classes].double() / max(1, len(indices))


def _spread_index(count: int, n: int) -> torch.Tensor:
    """n positions spread over 0..count-1 in a fixed random order (data sets are often sorted by class)."""
    return torch.randperm(count, generator=torch.Generator().manual_seed(PROBE_SEED))[:n].sort().values


def _spread(images: torch.Tensor, n: int) -> torch.Tensor:
    return images[_spread_index(len(images), n)]


@torch.no_grad()
def _classify(model: nn.Module, images: torch.Tensor, device: torch.device | str, size: int = 500) -> torch.Tensor:
    """The classes (N,) a feature classifier predicts for images (N, 1, 28, 28) in [-1, 1]."""
    return torch.cat([model(chunk.to(device).float().contiguous(memory_format=torch.channels_last)).argmax(1).cpu()
                      for chunk in images.split(size)])


def _chunks(z: torch.Tensor, labels: torch.Tensor | None, size: int = 250):
    for start in range(0, len(z), size):
        yield z[start:start + size], None if labels is None else labels[start:start + size]


def _cached_classifier(dataset: ImageDataset, cache_dir: str | Path | None):
    """The data set's feature classifier if one is already cached, else None (never trains one)."""
    from mnist_gan.errors import MnistGanError
    from mnist_gan.evaluation.classifier import cache_path, fingerprint, load_classifier, split

    if dataset.labels is None:
        return None
    try:
        data = split(dataset)
        key = fingerprint(data, dataset.num_classes)
        path = cache_path(dataset, key, cache_dir)
        return load_classifier(path, expected_fingerprint=key) if path.exists() else None
    except MnistGanError:
        return None
