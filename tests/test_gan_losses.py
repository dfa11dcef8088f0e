"""The dcgan and recommended presets, the losses, the regularisers, conditional digits and interpolation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from mnist_gan.cli.parser import main
from mnist_gan.data.images import ImageDataset, random_shift
from mnist_gan.errors import MnistGanError
from mnist_gan.gan import step as step_module
from mnist_gan.gan.losses import LOSSES, bce_d, gradient_penalty, non_saturating_g, r1_penalty
from mnist_gan.gan.models import build_discriminator, build_generator, sample_z
from mnist_gan.run.checkpoint import load_checkpoint, load_generator
from mnist_gan.sampling.sample import generate, grid_inputs, interpolate, slerp
from mnist_gan.settings.config import preset
from mnist_gan.training.loop import train


def tiny(name: str = "dcgan", **fields):
    """A preset shrunk to a few fast iterations on a small width; fields are 'section.name' overrides."""
    config = preset(name)
    config.model.width = 8
    config.train.batch_size, config.train.iterations, config.train.sample_every = 32, 4, 2
    config.train.log_every, config.train.device = 2, "cpu"
    for key, value in fields.items():
        section, field_name = key.split("__")
        setattr(getattr(config, section), field_name, value)
    return config


def small_dataset(mnist_5k, n=256, labels=True) -> ImageDataset:
    return ImageDataset(mnist_5k.images[:n], mnist_5k.labels[:n] if labels else None, "mnist", "test digits")


# ---- losses -----------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("flags, message", [
    (["--loss", "wgan-gp"], "BatchNorm"),
    (["--loss", "hinge", "--label-smoothing", "0.1"], "label-smoothing"),
    (["--preset", "seed", "--conditional"], "conditional"),
    (["--loss", "nonsense"], "unknown loss"),
    (["--ema-decay", "1.5"], "ema-decay"),
])
def test_impossible_combinations_fail_with_one_clear_line(tmp_path, capsys, small_npz, flags, message):
    args = ["train", "--preset", "dcgan", "--data", str(small_npz), "--out", str(tmp_path / "run"),
            "--iterations", "1", "--no-progress"]
    assert main(args + flags) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# ---- models and regularisers --------------------------------------------------------------------------


@pytest.mark.parametrize("width, conditional", [(8, False), (32, False), (16, True)])
def test_dcgan_shapes(width, conditional):
    config = dataclasses.replace(preset("seed").model, architecture="dcgan", z_distribution="normal", width=width,
                                 conditional=conditional)
    G, D = build_generator(config), build_discriminator(config)
    labels = torch.arange(5) if conditional else None
    images = G(sample_z(5, config), labels)
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= -1 and images.max() <= 1
    assert D(images, labels).shape == (5,)
    assert G.net[0].out_features == 2 * width * 7 * 7  # the projection to (2w, 7, 7)
    convolutions = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in convolutions] == [width, 1]
    assert any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    assert any(isinstance(m, nn.LeakyReLU) for m in D.modules())


def test_dcgan_projection_is_radfords_7x7_transposed_convolution():
    """G's first layer is a Linear for speed; it must compute what a 7x7 transposed conv of a 1x1 input does."""
    torch.manual_seed(0)
    G = build_generator(dataclasses.replace(preset("seed").model, architecture="dcgan", z_distribution="normal",
                                            width=4))
    projection, reshape = G.net[0], G.net[1]
    convolution = nn.ConvTranspose2d(100, 8, 7, bias=False)
    with torch.no_grad():  # Linear weight (8*49, 100) -> ConvTranspose weight (100, 8, 7, 7)
        convolution.weight.copy_(projection.weight.t().reshape(100, 8, 7, 7))
    z = torch.randn(3, 100)
    torch.testing.assert_close(reshape(projection(z)), convolution(z[:, :, None, None]))


def test_dcgan_preset_follows_radford():
    config = preset("dcgan")
    assert (config.model.architecture, config.model.z_distribution) == ("dcgan", "normal")
    assert (config.train.optimizer, config.train.lr, config.train.beta1, config.train.beta2) == ("adam", 2e-4, 0.5, 0.999)
    assert config.train.loss == "non-saturating" and not config.train.joint_d_batch
    assert config.train.ema_decay == 0 and not config.model.spectral_norm


def test_spectral_norm_bounds_every_d_layer():
    config = dataclasses.replace(preset("seed").model, architecture="dcgan", width=8, d_batchnorm=False,
                                 spectral_norm=True)
    D = build_discriminator(config)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 3
    with torch.no_grad():
        for layer in layers:
            layer.parametrizations.weight.original.mul_(50)  # far from 1-Lipschitz before normalisation
        for _ in range(30):  # power iteration runs once per training-mode forward pass
            D(torch.randn(4, 1, 28, 28))
    for layer in layers:
        raw = torch.linalg.matrix_norm(layer.parametrizations.weight.original.detach().flatten(1), ord=2)
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()
        assert raw > 5 and sigma == pytest.approx(1.0, abs=0.02)


# ---- training runs ------------------------------------------------------------------------------------


def test_ema_weights_differ_from_raw_and_are_what_sampling_and_export_use(tmp_path, mnist_5k):
    config = tiny(train__ema_decay=0.9, train__lr_d=4e-4, train__lr_g=1e-4)
    result = train(config, tmp_path / "run", dataset=small_dataset(mnist_5k), progress=False)
    state = load_checkpoint(result.checkpoint)
    raw, average = state["G"], state["G_ema"]
    assert any(not torch.equal(raw[k], average[k]) for k in raw if raw[k].is_floating_point())
    assert [g["lr"] for g in state["optimizer_g"]["param_groups"]] == [1e-4]
    assert [g["lr"] for g in state["optimizer_d"]["param_groups"]] == [4e-4]
    for source in (result.checkpoint, tmp_path / "run" / "generator.safetensors"):
        _, G, _ = load_generator(source)
        assert all(torch.equal(G.state_dict()[k], average[k]) for k in average)
    _, G, _ = load_generator(result.checkpoint)
    G_raw = build_generator(config.model)
    G_raw.load_state_dict(raw)
    assert not torch.allclose(generate(G, config.model, 8), generate(G_raw, config.model, 8))


def test_random_shift_is_differentiable_and_fills_with_background():
    images = (torch.rand(8, 1, 28, 28) + 0.01).requires_grad_(True)  # every pixel above the background, -1
    shifted = random_shift(images, 3, torch.Generator().manual_seed(0))
    shifted.sum().backward()
    assert set(images.grad.unique().tolist()) <= {0.0, 1.0}  # each output pixel copies one input pixel ...
    assert int(images.grad.sum()) == int((shifted > -1).sum())  # ... or is background
    assert (shifted == -1).any() and random_shift(images, 0) is images


def test_augment_shift_shows_d_shifted_reals_and_fakes_and_g_learns_through_it(tmp_path, mnist_5k, monkeypatch):
    calls = []

    def spy(images, max_shift, rng=None, offsets=None):
        assert offsets.shape == (len(images), 2) and 0 <= offsets.min() and offsets.max() <= 2 * max_shift
        calls.append((max_shift, images.requires_grad))
        return random_shift(images, max_shift, rng, offsets)

    monkeypatch.setattr(step_module, "random_shift", spy)
    config = tiny(name="recommended", train__augment_shift=2, train__iterations=3)
    train(config, tmp_path / "run", dataset=small_dataset(mnist_5k), progress=False)
    # per iteration: D's real batch, D's fakes (no gradient to G), then G's fakes (with gradient)
    assert calls == [(2, False), (2, False), (2, True)] * 3


def test_wgan_gp_runs_n_critic_d_steps_per_g_step(tmp_path, mnist_5k):
    config = tiny(train__loss="wgan-gp", train__n_critic=3, model__d_batchnorm=False, train__r1_gamma=1.0)
    result = train(config, tmp_path / "run", dataset=small_dataset(mnist_5k), progress=False)
    state = load_checkpoint(result.checkpoint)
    d_steps = next(iter(state["optimizer_d"]["state"].values()))["step"]
    g_steps = next(iter(state["optimizer_g"]["state"].values()))["step"]
    assert (int(d_steps), int(g_steps)) == (12, 4)
    assert all(torch.isfinite(torch.tensor([r["d_loss"], r["g_loss"]])).all() for r in result.history)


def test_conditional_run_grid_generate_and_export(tmp_path, mnist_5k, capsys):
    from PIL import Image

    config = tiny("recommended", model__conditional=True, model__self_condition=0)
    run = tmp_path / "run"
    train(config, run, dataset=small_dataset(mnist_5k), progress=False)
    grid = Image.open(run / "samples" / "iter_00000004.png")
    assert grid.size == (8 * 30 + 2, 10 * 30 + 2)  # one row of 8 per class
    model_config, G, _ = load_generator(run / "generator.safetensors")
    assert model_config.conditional
    z, labels = grid_inputs(64, model_config, seed=1)
    assert labels.tolist() == [digit for digit in range(10) for _ in range(8)]
    with torch.no_grad():
        threes, eights = G(z[:8], torch.full((8,), 3)), G(z[:8], torch.full((8,), 8))
    assert (threes - eights).abs().max() > 0.01 * threes.abs().max()  # the label reaches the image
    assert main(["generate", str(run), "--digit", "7", "-n", "4", "--out", str(tmp_path / "sevens.npz"),
                 "--format", "npz"]) == 0
    assert main(["generate", str(run), "--digit", "12", "--out", str(tmp_path / "bad.png")]) == 2
    assert "--digit must be in 0..9" in capsys.readouterr().err
    with pytest.raises(MnistGanError, match="needs a label"):
        G(z[:2])


def test_conditional_training_needs_labels(tmp_path, mnist_5k):
    with pytest.raises(MnistGanError, match="labelled images"):
        train(tiny(model__conditional=True), tmp_path / "run", dataset=small_dataset(mnist_5k, labels=False),
              progress=False)
    assert not (tmp_path / "run").exists()


def test_digit_on_unconditional_model_is_an_error(tmp_path, mnist_5k, capsys):
    train(tiny(), tmp_path / "run", dataset=small_dataset(mnist_5k), progress=False)
    assert main(["generate", str(tmp_path / "run"), "--digit", "7", "--out", str(tmp_path / "x.png")]) == 2
    assert "conditional" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# ---- interpolation ------------------------------------------------------------------------------------


def test_slerp_keeps_the_norm_and_hits_the_end_points():
    z0, z1 = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[0.0, 3.0, 0.0]])
    path = slerp(z0, z1, torch.linspace(0, 1, 5))  # (1, 5, 3)
    assert torch.allclose(path[0, 0], z0[0], atol=1e-5) and torch.allclose(path[0, -1], z1[0], atol=1e-5)
    assert torch.allclose(path.norm(dim=-1), torch.full((1, 5), 3.0), atol=1e-5)  # lerp's middle has norm 2.1


def test_uniform_z_walks_a_straight_line():
    config = dataclasses.replace(preset("seed").model, architecture="dcgan", width=8, z_distribution="uniform")
    G = build_generator(config)
    seen = []
    G.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    interpolate(G, config, steps=5)
    z = seen[0]  # (5, z_dim)
    assert torch.allclose(z[2], (z[0] + z[4]) / 2, atol=1e-6)


def test_interpolate_writes_strip_and_gif_of_the_right_size(tmp_path, mnist_5k):
    from PIL import Image

    train(tiny("recommended", model__conditional=True, model__self_condition=0), tmp_path / "run",
          dataset=small_dataset(mnist_5k), progress=False)
    strip, gif = tmp_path / "walk.png", tmp_path / "walk.gif"
    assert main(["interpolate", str(tmp_path / "run"), "--steps", "6", "--rows", "2", "--out", str(strip)]) == 0
    assert Image.open(strip).size == ((6 * 30 + 2) * 2, (2 * 30 + 2) * 2)
    assert main(["interpolate", str(tmp_path / "run"), "--steps", "6", "--rows", "3", "--scale", "1",
                 "--from-digit", "3", "--to-digit", "8", "--out", str(gif)]) == 0
    animation = Image.open(gif)
    assert animation.size == (3 * 30 + 2, 32) and animation.n_frames == 10  # 6 steps there, 4 back
    assert main(["interpolate", str(tmp_path / "run"), "--out", str(strip)]) == 2  # exists, not replaced


# ---- evaluation of conditional models -----------------------------------------------------------------


class DigitLookup(nn.Module):
    """A stand-in conditional G: returns one fixed real digit per requested class (or always class 0's)."""

    def __init__(self, digits: torch.Tensor, obey: bool):
        super().__init__()
        self.register_buffer("digits", digits)  # (10, 1, 28, 28) in [-1, 1]
        self.obey = obey

    def forward(self, z, labels=None):
        return self.digits[labels if self.obey else torch.zeros_like(labels)]


def test_conditional_accuracy_reads_the_requested_digit(mnist_5k, tmp_path, monkeypatch):
    import mnist_gan.evaluation.classifier as C
    from mnist_gan.data.images import to_float
    from mnist_gan.evaluation.evaluator import Evaluator, conditional_accuracy

    monkeypatch.setattr(C, "RECIPE", dict(C.RECIPE, width=16, steps=80))
    evaluator = Evaluator.for_dataset(mnist_5k, tmp_path)
    digits = to_float(torch.stack([mnist_5k.images[mnist_5k.labels == c][0] for c in range(10)]))
    config = dataclasses.replace(preset("seed").model, architecture="dcgan", conditional=True)
    obeying = conditional_accuracy(evaluator, DigitLookup(digits, obey=True), config, n=200)
    ignoring = conditional_accuracy(evaluator, DigitLookup(digits, obey=False), config, n=200)
    assert obeying["label_accuracy"] >= 0.8 and len(obeying["label_accuracy_per_class"]) == 10
    assert ignoring["label_accuracy"] <= 0.2
    with pytest.raises(MnistGanError, match="conditional"):
        conditional_accuracy(evaluator, DigitLookup(digits, obey=True), preset("seed").model, n=200)
