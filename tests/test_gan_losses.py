"""The losses: each pushes D up on real and down on fake and G up, minimax saturates where the non-saturating loss
does not, one-sided label smoothing, the gradient and R1 penalties on a critic whose gradient is known, and each
loss's reading of D's output as a score."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_gan.gan.losses import LOSSES, bce_d, gradient_penalty, non_saturating_g, r1_penalty


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
