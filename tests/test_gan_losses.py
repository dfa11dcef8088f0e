"""The losses: each pushes D up on real and down on fake and G up, minimax saturates where the non-saturating loss
does not, one-sided label smoothing, the gradient and R1 penalties on a critic whose gradient is known, and each
loss's reading of D's output as a score. Every loss and penalty is pinned by value against its paper's formula,
written out again here in plain Python, at several logits and real targets; and the default preset is pinned to what
its training step really builds (LSGAN, the learning rates, Adam's betas, EMA, a packed D)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mnist_gan.gan.losses import LOSSES, bce_d, gradient_penalty, make_d_penalty, non_saturating_g, r1_penalty


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_pushes_d_up_on_real_down_on_fake_and_g_up(name):
    loss = LOSSES[name]
    real_logits = torch.full((4,), 0.5, requires_grad=True)
    fake_logits = torch.full((4,), 0.5, requires_grad=True)
    loss.d(real_logits, fake_logits, 1.0).backward()
    # gradient descent moves a logit against its gradient: D raises its score of real, lowers that of fake
    assert (real_logits.grad < 0).all()
    assert (fake_logits.grad > 0).all()
    fake_for_g = torch.full((4,), 0.5, requires_grad=True)
    loss.g(fake_for_g).backward()
    assert (fake_for_g.grad < 0).all()  # G raises D(G(z))


def test_minimax_saturates_where_non_saturating_does_not():
    confident_fake = torch.full((4,), -8.0, requires_grad=True)  # D is sure these are fake
    LOSSES["minimax"].g(confident_fake).backward()
    minimax_grad = confident_fake.grad.abs().mean()
    confident_fake.grad = None
    non_saturating_g(confident_fake).backward()
    assert minimax_grad < 1e-3 < confident_fake.grad.abs().mean()


def test_one_sided_label_smoothing_pulls_confident_real_logits_down():
    real_logits = torch.full((4,), 6.0, requires_grad=True)
    bce_d(real_logits, torch.zeros(4), real_target=0.9).backward()
    assert (real_logits.grad > 0).all()  # D is told not to be surer than 0.9 about real images
    real_logits.grad = None
    bce_d(real_logits, torch.zeros(4), real_target=1.0).backward()
    assert (real_logits.grad < 0).all()


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere."""

    def __init__(self, norm: float):
        super().__init__()
        w = torch.randn(28 * 28, generator=torch.Generator().manual_seed(0))
        self.w = nn.Parameter(w / w.norm() * norm)

    def forward(self, images, labels=None):
        return images.flatten(1) @ self.w


def test_gradient_penalty_is_zero_for_unit_gradient_critic_and_positive_otherwise():
    real, fake = torch.rand(8, 1, 28, 28) * 2 - 1, torch.rand(8, 1, 28, 28) * 2 - 1
    assert gradient_penalty(LinearCritic(1.0), real, fake).item() == pytest.approx(0.0, abs=1e-8)
    assert gradient_penalty(LinearCritic(2.0), real, fake).item() == pytest.approx(1.0, rel=1e-4)
    assert gradient_penalty(LinearCritic(0.5), real, fake).item() == pytest.approx(0.25, rel=1e-4)
    critic = LinearCritic(2.0)
    gradient_penalty(critic, real, fake).backward()
    assert critic.w.grad is not None and critic.w.grad.norm() > 0  # the penalty trains D


def test_r1_penalty_is_the_squared_gradient_norm_on_real_images():
    real = torch.rand(8, 1, 28, 28)
    assert r1_penalty(LinearCritic(3.0), real).item() == pytest.approx(9.0, rel=1e-4)


def test_each_loss_scores_its_own_targets_as_real_and_fake():
    targets = {"non-saturating": (20.0, -20.0), "minimax": (20.0, -20.0), "lsgan": (1.0, 0.0), "hinge": (1.0, -1.0)}
    for name, (real, fake) in targets.items():
        score = LOSSES[name].score(torch.tensor([real, fake, real + 5, fake - 5]))
        assert score.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0], abs=1e-6), name
    assert not LOSSES["wgan-gp"].absolute_score


# ------------------------------------------------------------------------------ each loss by value, as published

REAL_LOGITS = [-3.0, -0.5, 0.0, 0.7, 2.5, 8.0]
FAKE_LOGITS = [-6.0, -1.2, 0.0, 0.3, 1.5, 4.0]
REAL_TARGETS = [1.0, 0.9, 0.75]  # 1: no smoothing; below 1: one-sided label smoothing's target for real images


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _bce_d(real, fake, t):
    """Goodfellow et al. (2014), D's cross-entropy with real labelled t (Salimans et al. 2016's one-sided
    smoothing), reported as the mean of the real and fake halves (Keras' loss on a concatenated batch)."""
    real_term = _mean(-(t * math.log(_sigmoid(x)) + (1 - t) * math.log(1 - _sigmoid(x))) for x in real)
    fake_term = _mean(-math.log(1 - _sigmoid(x)) for x in fake)
    return (real_term + fake_term) / 2


def _lsgan_d(real, fake, t):
    """Mao et al. (2017), eq. (2) with a = 0 (fake), b = t (real): 1/2 E[(D(x) - b)^2] + 1/2 E[(D(G(z)) - a)^2]."""
    return 0.5 * _mean((x - t) ** 2 for x in real) + 0.5 * _mean(x ** 2 for x in fake)


REFERENCE = {  # name: (D's loss (real, fake, real target), G's loss (fake)); hinge and WGAN take no target
    "non-saturating": (_bce_d, lambda fake: _mean(-math.log(_sigmoid(x)) for x in fake)),
    "minimax": (_bce_d, lambda fake: _mean(math.log(1 - _sigmoid(x)) for x in fake)),
    "lsgan": (_lsgan_d, lambda fake: 0.5 * _mean((x - 1) ** 2 for x in fake)),  # Mao et al. eq. (2), c = 1
    "hinge": (lambda real, fake, t: _mean(max(0, 1 - x) for x in real) + _mean(max(0, 1 + x) for x in fake),
              lambda fake: -_mean(fake)),  # Lim & Ye (2017); Miyato et al. (2018), eq. (16)-(17)
    "wgan-gp": (lambda real, fake, t: _mean(fake) - _mean(real), lambda fake: -_mean(fake)),  # Gulrajani, Alg. 1
}


def test_reference_covers_every_loss():
    assert set(REFERENCE) == set(LOSSES)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("shift", [0.0, -2.0, 3.0])
def test_each_loss_equals_its_papers_formula(name, shift):
    reference_d, reference_g = REFERENCE[name]
    real = [x + shift for x in REAL_LOGITS]
    fake = [x - shift for x in FAKE_LOGITS]
    real_t, fake_t = torch.tensor(real, dtype=torch.float64), torch.tensor(fake, dtype=torch.float64)
    targets = REAL_TARGETS if LOSSES[name].smoothable else [1.0]
    for target in targets:
        got = LOSSES[name].d(real_t, fake_t, target).item()
        assert got == pytest.approx(reference_d(real, fake, target), rel=1e-12, abs=1e-12), (name, target)
    assert LOSSES[name].g(fake_t).item() == pytest.approx(reference_g(fake), rel=1e-12, abs=1e-12), name


@pytest.mark.parametrize("name", [name for name, loss in LOSSES.items() if loss.smoothable])
def test_label_smoothing_changes_each_smoothable_loss_by_its_formula(name):
    """The real target reaches the loss: D's loss with target 0.9 differs from target 1 by what the formula says
    (not only in sign), so `--label-smoothing` cannot silently do nothing under a loss that declares it."""
    reference_d, _ = REFERENCE[name]
    real_t, fake_t = torch.tensor(REAL_LOGITS, dtype=torch.float64), torch.tensor(FAKE_LOGITS, dtype=torch.float64)
    change = LOSSES[name].d(real_t, fake_t, 0.9).item() - LOSSES[name].d(real_t, fake_t, 1.0).item()
    expected = reference_d(REAL_LOGITS, FAKE_LOGITS, 0.9) - reference_d(REAL_LOGITS, FAKE_LOGITS, 1.0)
    assert abs(expected) > 1e-3 and change == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_loss_gradient_equals_its_formulas_derivative(name):
    """D's and G's gradients per logit, against the derivative of the formula above by central differences."""
    reference_d, reference_g = REFERENCE[name]
    target = 0.9 if LOSSES[name].smoothable else 1.0
    real = torch.tensor(REAL_LOGITS, dtype=torch.float64, requires_grad=True)
    fake = torch.tensor(FAKE_LOGITS, dtype=torch.float64, requires_grad=True)
    LOSSES[name].d(real, fake, target).backward()
    fake_for_g = torch.tensor(FAKE_LOGITS, dtype=torch.float64, requires_grad=True)
    LOSSES[name].g(fake_for_g).backward()

    def derivative(f, values, i, h=1e-6):
        up, down = list(values), list(values)
        up[i] += h
        down[i] -= h
        return (f(up) - f(down)) / (2 * h)

    for i in range(len(REAL_LOGITS)):
        if name == "hinge" and (abs(REAL_LOGITS[i] - 1) < 1e-3 or abs(FAKE_LOGITS[i] + 1) < 1e-3):
            continue  # the hinge's kink
        d_real = derivative(lambda r: reference_d(r, FAKE_LOGITS, target), REAL_LOGITS, i)
        d_fake = derivative(lambda f: reference_d(REAL_LOGITS, f, target), FAKE_LOGITS, i)
        g_fake = derivative(reference_g, FAKE_LOGITS, i)
        assert real.grad[i].item() == pytest.approx(d_real, rel=1e-6, abs=1e-9), (name, i)
        assert fake.grad[i].item() == pytest.approx(d_fake, rel=1e-6, abs=1e-9), (name, i)
        assert fake_for_g.grad[i].item() == pytest.approx(g_fake, rel=1e-6, abs=1e-9), (name, i)


def test_each_loss_reads_d_output_as_its_score_by_value():
    outputs = torch.tensor([-3.0, -1.0, -0.4, 0.0, 0.25, 0.6, 1.0, 2.0], dtype=torch.float64)
    expected = {"non-saturating": [_sigmoid(x) for x in outputs.tolist()],
                "minimax": [_sigmoid(x) for x in outputs.tolist()],
                "lsgan": [min(max(x, 0.0), 1.0) for x in outputs.tolist()],
                "hinge": [min(max((x + 1) / 2, 0.0), 1.0) for x in outputs.tolist()]}
    for name, values in expected.items():
        assert LOSSES[name].score(outputs).tolist() == pytest.approx(values, rel=1e-12), name


# --------------------------------------------------------------------------- the penalties on a curved critic

class QuadraticCritic(nn.Module):
    """D(x) = 1/2 sum_i c_i x_i^2 (+ 10 * label): its gradient c * x differs from point to point, so the penalty's
    value says where it was taken; the label term shows that labels reach D."""

    def __init__(self):
        super().__init__()
        self.c = nn.Parameter(torch.linspace(0.2, 3.0, 28 * 28, dtype=torch.float64))
        self.labels_seen = None

    def forward(self, images, labels=None):
        self.labels_seen = labels
        return 0.5 * (self.c * images.flatten(1) ** 2).sum(1)


def _images(seed: int, n: int = 5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=generator, dtype=torch.float64) * 2 - 1) * 0.2


def _gp_reference(c, real, fake, alpha) -> float:
    """Gulrajani et al. (2017), Algorithm 1: x_hat = eps x + (1 - eps) x~, penalty (||grad D(x_hat)||_2 - 1)^2,
    averaged over the batch; here grad D(x_hat) = c * x_hat."""
    values = []
    for i in range(len(real)):
        x_hat = alpha[i] * real[i].flatten() + (1 - alpha[i]) * fake[i].flatten()
        norm = math.sqrt(sum((ci * xi) ** 2 for ci, xi in zip(c.tolist(), x_hat.tolist(), strict=True)))
        values.append((norm - 1) ** 2)
    return _mean(values)


def test_gradient_penalty_equals_wgan_gp_formula_at_its_interpolates():
    critic, real, fake = QuadraticCritic(), _images(1), _images(2)
    alpha = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64).view(5, 1, 1, 1)
    labels = torch.arange(5)
    got = gradient_penalty(critic, real, fake, labels, alpha).item()
    assert got == pytest.approx(_gp_reference(critic.c.detach(), real, fake, alpha.flatten().tolist()), rel=1e-10)
    assert critic.labels_seen is labels
    # alpha weighs the real image: swapping real and fake (alpha on the fake) gives another value
    assert gradient_penalty(critic, fake, real, labels, alpha).item() != pytest.approx(got, rel=1e-3)
    # without alpha, it is drawn from torch's global RNG as torch.rand(B, 1, 1, 1)
    torch.manual_seed(11)
    drawn = gradient_penalty(critic, real, fake).item()
    torch.manual_seed(11)
    alpha = torch.rand(5, 1, 1, 1).tolist()
    assert drawn == pytest.approx(_gp_reference(critic.c.detach(), real, fake, [a[0][0][0] for a in alpha]),
                                  rel=1e-6)


def test_r1_penalty_equals_mescheder_formula_on_real_images():
    critic, real = QuadraticCritic(), _images(3)
    c = critic.c.detach()
    # Mescheder et al. (2018), eq. (9) without gamma / 2: E[||grad D(x)||^2] over real x
    expected = _mean(float(((c * x.flatten()) ** 2).sum()) for x in real)
    labels = torch.arange(5)
    assert r1_penalty(critic, real, labels).item() == pytest.approx(expected, rel=1e-12)
    assert critic.labels_seen is labels


@pytest.mark.parametrize(("loss", "gp_weight", "r1_gamma"), [("wgan-gp", 10.0, 0.0), ("wgan-gp", 2.5, 4.0),
                                                              ("lsgan", 10.0, 0.0), ("lsgan", 10.0, 3.0),
                                                              ("hinge", 0.0, 1.0), ("wgan-gp", 0.0, 0.0)])
def test_d_penalty_is_gp_weight_times_gp_plus_half_gamma_times_r1(loss, gp_weight, r1_gamma):
    from mnist_gan.settings.config import TrainConfig

    critic, real, fake = QuadraticCritic(), _images(4), _images(5)
    alpha = torch.full((5, 1, 1, 1), 0.3, dtype=torch.float64)
    config = TrainConfig(loss=loss, gp_weight=gp_weight, r1_gamma=r1_gamma)
    total = make_d_penalty(LOSSES[loss], config)(critic, real, fake, None, alpha)
    expected = r1_gamma / 2 * r1_penalty(critic, real).item()
    if loss == "wgan-gp":  # only WGAN-GP declares a gradient penalty; --gp-weight weighs nothing else
        expected += gp_weight * _gp_reference(critic.c.detach(), real, fake, [0.3] * 5)
    total = total.item() if torch.is_tensor(total) else total
    assert total == pytest.approx(expected, rel=1e-10, abs=1e-12)


# ----------------------------------------------------------------------- the default preset, as the step builds it

def test_default_preset_trains_lsgan_with_adam_ema_and_a_packed_d():
    """What `mnist-gan train` with no flag really trains with, read from the built step, not the config's text."""
    from mnist_gan.gan.step import GanStep
    from mnist_gan.settings.config import DEFAULT_PRESET, preset

    config = preset(DEFAULT_PRESET)
    config.model.width = 8  # a small D and G; every setting pinned here is the preset's own
    step = GanStep(config, "cpu")
    assert step.loss is LOSSES["lsgan"] and step.real_target == 1.0
    (group_g,), (group_d,) = step.optimizer_g.param_groups, step.optimizer_d.param_groups
    assert isinstance(step.optimizer_g, torch.optim.Adam) and isinstance(step.optimizer_d, torch.optim.Adam)
    assert (group_g["lr"], group_d["lr"]) == (1.6e-3, 1.6e-3)  # one rate: it beat TTUR's (8e-4, D 1.6e-3)
    assert group_g["betas"] == group_d["betas"] == (0.0, 0.99)
    assert config.train.ema_decay == 0.999 and step.G_ema is not None and step.G_sample is step.G_ema
    assert step.D.pack == 2 and step.D(torch.zeros(4, 1, 28, 28)).shape == (2,)  # PacGAN: one logit per 2 images
    assert config.model.self_condition == 100 and step.G.cluster_weights.shape == (100,)  # 100 clusters as labels
    assert not any(isinstance(m, nn.BatchNorm2d) for m in step.D.modules())
    parametrized = [m for m in step.D.modules() if nn.utils.parametrize.is_parametrized(m, "weight")]
    assert len(parametrized) == 3  # spectral norm on each of D's weighted layers
    assert step.D.embed.num_embeddings == 100  # D projects the cluster too
    assert (config.train.gp_weight, config.train.r1_gamma, config.train.label_smoothing) == (10.0, 0.0, 0.0)
    assert make_d_penalty(step.loss, config.train)(step.D, torch.zeros(2, 1, 28, 28),
                                                   torch.zeros(2, 1, 28, 28)) == 0.0  # LSGAN: no penalty
    assert (config.train.batch_size, config.model.z_dim, config.model.z_distribution) == (128, 100, "normal")
