"""Cheap measurements a training loop takes at its log steps, so that mnist_gan.diagnose can tell how a run fails.

Each probe returns a dict of the optional metrics fields `mnist_gan.diagnose.FIELDS` documents, ready to be merged
into the metrics record of that log step. None of them draws from torch's global RNG or changes a network's
state (modes and buffers are restored, nothing is trained), so a run with probes computes the same weights as one
without. On rank 0 only, once the networks are on their device:

    classes = ClassProbe.for_dataset(dataset, config.model, device=device, cache_dir=config.data.cache_dir)
    heldout = HeldoutProbe.for_dataset(dataset, loss, device=device, conditional=config.model.conditional)

and at each log step, after that iteration's G update and before the next zero_grad:

    record |= grad_norms(G, D)                             # the plain modules, not DDP or compiled views
    if probe_due(iteration, config.train.log_every):       # every PROBE_EVERY iterations: 500 G samples
        record |= classes(G_sample) | (heldout(D) if heldout else {})
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist_gan.config import ModelConfig
from mnist_gan.diagnose import (
    CLASS_HISTOGRAM,
    CLASS_PROBE,
    CLASS_REFERENCE,
    D_HELDOUT,
    D_TRAIN_REAL,
    GRAD_NORM_D,
    GRAD_NORM_G,
)
from mnist_gan.images import ImageDataset, to_float
from mnist_gan.models import sample_z, score_each

PROBE_SAMPLES = 500  # fixed-noise images per class histogram: a class at 10% then varies by +-1.3% (binomial)
REFERENCE_IMAGES = 2000  # real images that set the data's own histogram (+-0.7% per class at 10%)
PROBE_REAL_IMAGES = 256  # training and held-out reals scored by D: the mean score's noise is ~0.01 each
CLUSTERS = 10  # k-means clusters standing in for classes when the data has no labels (MNIST has 10 digits)
KMEANS_ITERATIONS = 25  # Lloyd steps; on 2,000 MNIST digits the assignments stop changing after ~15
PROBE_EVERY = 50  # iterations between class and held-out probes: ~1,000 forward passes each, a few percent of
#                   50 training iterations at batch 32 and more (gradient norms cost nothing: every log step)
PROBE_SEED = 20_240_601  # fixed: the probes' noise and image choices never depend on (or draw from) the run's RNG


def probe_due(iteration: int, log_every: int) -> bool:
    """Whether the log step at `iteration` is the first at or after a multiple of PROBE_EVERY."""
    return iteration // PROBE_EVERY != max(0, iteration - log_every) // PROBE_EVERY or iteration <= log_every


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
        from mnist_gan.sample import sample_labels

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
            def assign(images: torch.Tensor) -> torch.Tensor:
                return classifier.features_and_probabilities(images, device=device)[1].argmax(1)
            classes = classifier.model.head[-1].out_features
            return cls(assign, classes, assign(real), "classes", model_config, device, samples)
        centres = kmeans(_pooled(real), CLUSTERS)

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
                 device: torch.device | str = "cpu", conditional: bool = False):
        self.train = (to_float(train_images).to(device), None if train_labels is None else train_labels.to(device))
        self.heldout = (to_float(heldout_images).to(device),
                        None if heldout_labels is None else heldout_labels.to(device))
        self.score, self.conditional = score, conditional

    @classmethod
    def for_dataset(cls, dataset: ImageDataset, loss, *, device: torch.device | str = "cpu",
                    conditional: bool = False, count: int = PROBE_REAL_IMAGES) -> HeldoutProbe | None:
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
                   loss.score, device, conditional)

    @torch.no_grad()
    def __call__(self, D: nn.Module) -> dict:
        """{d_train_real, d_heldout}, read as training reads D (training mode: BatchNorm's batch statistics);
        every buffer (BatchNorm's running statistics, spectral norm's vectors) and the RNG are left as they were."""
        saved = {name: buffer.clone() for name, buffer in D.named_buffers()}
        was_training = D.training
        scores = {}
        try:
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if self._on_cuda(D) else []):
                D.train()
                for name, (images, labels) in ((D_TRAIN_REAL, self.train), (D_HELDOUT, self.heldout)):
                    outputs = score_each(D, images, labels if self.conditional else None).float()  # (n,)
                    scores[name] = float(self.score(outputs).mean())
        finally:
            for name, buffer in D.named_buffers():
                buffer.copy_(saved[name])
            D.train(was_training)
        return scores

    @staticmethod
    def _on_cuda(D: nn.Module) -> bool:
        return next(D.parameters()).device.type == "cuda"


def kmeans(points: torch.Tensor, k: int, iterations: int = KMEANS_ITERATIONS) -> torch.Tensor:
    """k centres (k, P) of points (N, P): k-means++ seeding under PROBE_SEED, then Lloyd steps; deterministic."""
    rng = torch.Generator().manual_seed(PROBE_SEED)
    centres = points[torch.randint(len(points), (1,), generator=rng)]
    for _ in range(1, k):
        distance = torch.cdist(points, centres).min(1).values.pow(2)  # (N,)
        centres = torch.cat([centres, points[torch.multinomial(distance + 1e-12, 1, generator=rng)]])
    for _ in range(iterations):
        nearest = torch.cdist(points, centres).argmin(1)  # (N,)
        for j in range(k):
            members = points[nearest == j]
            if len(members):  # an empty cluster keeps its centre
                centres[j] = members.mean(0)
    return centres


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


def _chunks(z: torch.Tensor, labels: torch.Tensor | None, size: int = 250):
    for start in range(0, len(z), size):
        yield z[start:start + size], None if labels is None else labels[start:start + size]


def _cached_classifier(dataset: ImageDataset, cache_dir: str | Path | None):
    """The data set's feature classifier if one is already cached, else None (never trains one)."""
    from mnist_gan.classifier import cache_path, fingerprint, load_classifier, split
    from mnist_gan.errors import MnistGanError

    if dataset.labels is None:
        return None
    try:
        data = split(dataset)
        key = fingerprint(data, dataset.num_classes)
        path = cache_path(dataset, key, cache_dir)
        return load_classifier(path, expected_fingerprint=key) if path.exists() else None
    except MnistGanError:
        return None
