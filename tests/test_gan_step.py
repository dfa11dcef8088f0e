"""The training step, GanStep, used directly: one step trains both networks with every loss, penalty and shift,
the step holds two networks and their average, its state round-trips; and the step's features on tiny real runs:
the moving average of G (EMA), shift augmentation, WGAN-GP's critic steps, and the remedies for mode collapse,
PacGAN's packs (--pack), top-k G updates (--top-k) and the mode-seeking term (--diversity)."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import small_dataset, tiny_config, tiny_run_config

from mnist_gan.data.images import random_shift
from mnist_gan.errors import MnistGanError
from mnist_gan.gan import step as step_module
from mnist_gan.gan.models import build_generator
from mnist_gan.gan.step import GanStep
from mnist_gan.run.checkpoint import load_checkpoint, load_generator
from mnist_gan.sampling.sample import generate
from mnist_gan.training.loop import train


def unconditioned(pack: int = 1, **train):
    """tiny_config without the preset's clusters, in packs of `pack`: the remedies for mode collapse alone, on the
    unconditioned networks."""
    return tiny_config(model={"pack": pack, "self_condition": 0}, **train)


# ---------------------------------------------------------------------------------------------------- GanStep

def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name, train, model", [
    ("recommended", {}, {}),
    ("dcgan", {"loss": "wgan-gp", "n_critic": 2}, {"d_batchnorm": False}),
    ("dcgan", {"augment_shift": 2, "r1_gamma": 1.0}, {}),
    ("seed", {}, {}),
])
def test_one_step_trains_both_networks_and_reports_four_finite_figures(real, name, train, model):
    config = tiny_config(name, **train)
    for key, value in model.items():
        setattr(config.model, key, value)
    step = GanStep(config)
    G_before, D_before = _weights(step.G), _weights(step.D)
    updates = []
    for optimizer in (step.optimizer_d, step.optimizer_g):
        optimizer.register_step_post_hook(lambda optimizer, args, kwargs: updates.append(optimizer))
    stats = step(real)
    assert stats.shape == (4,) and stats.dtype == torch.float32 and torch.isfinite(stats).all()
    d_loss, g_loss, d_real, d_fake = stats.tolist()
    assert 0 <= d_real <= 1 and 0 <= d_fake <= 1  # D(x), D(G(z)) on the loss's own [0, 1] scale
    for net, before in (("G", G_before), ("D", D_before)):
        after = getattr(step, net).state_dict()
        assert any(not torch.equal(after[k], before[k]) for k in before if before[k].is_floating_point()), net
    assert step.iteration == 1
    assert (step.G_ema is not None) == bool(config.train.ema_decay)
    # (1) n_critic D updates, then (2) one G update
    assert updates == [step.optimizer_d] * config.train.n_critic + [step.optimizer_g]


def test_the_step_holds_two_networks_and_their_average(real):
    """No handles beside G, D and G_ema: eagerly in one process both updates call the networks themselves."""
    step = GanStep(tiny_config())
    networks = {name for name, value in vars(step).items() if isinstance(value, torch.nn.Module)}
    assert networks == {"G", "D", "G_ema"}
    assert step.wrappers.updating("D") == (step.G, step.D) == step.wrappers.updating("G")
    assert step.G_sample is step.G_ema and not step.compiled
    called = []
    for name in ("G", "D"):
        getattr(step, name).register_forward_hook(lambda module, inputs, output, name=name: called.append(name))
    step(real)
    assert called == ["G", "D"] * step.config.train.n_critic + ["G", "D"]  # one D pass on reals and fakes
    assert all(p.requires_grad for p in step.D.parameters())  # D frozen for the G update only
    plain = GanStep(tiny_config(ema_decay=0.0))
    assert plain.G_ema is None and plain.G_sample is plain.G


def test_under_compile_both_updates_call_the_wrappers_and_the_state_keeps_its_keys(real, monkeypatch):
    """--compile's wrappers (spies here, compiling takes a minute) run every forward pass but the penalty's."""
    from mnist_gan.gan import wrappers

    called = []

    class Spy(torch.nn.Module):
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, *inputs):
            called.append(self.module.__class__.__name__)
            return self.module(*inputs)

    monkeypatch.setattr(wrappers, "maybe_compile",
                        lambda modules, enabled, device: [Spy(m) for m in modules] if enabled else modules)
    step = GanStep(tiny_config("dcgan", compile=True, r1_gamma=1.0))
    eager = GanStep(tiny_config("dcgan", r1_gamma=1.0))
    assert step.compiled and not eager.compiled
    assert torch.equal(step(real), eager(real))  # the same maths through the wrappers
    G, D = step.G.__class__.__name__, step.D.__class__.__name__
    assert called == [G, D, D] + [G, D]  # (1) G's fakes, D on reals and on fakes; (2) D(G(z))
    assert step.state_dict()["G"].keys() == eager.state_dict()["G"].keys()


def test_state_dict_round_trip_gives_an_identical_next_step(real):
    config = tiny_config(augment_shift=2)  # draws from torch's global RNG too, which the state carries
    first = GanStep(config)
    first(real)
    saved = copy.deepcopy(first.state_dict())  # the state tensors are live: copy before stepping on
    expected = first(real)
    torch.manual_seed(12345)  # disturb the global RNG: the state must restore it

    second = GanStep(config)
    second.load_state_dict(saved)
    assert second.iteration == 1
    assert torch.equal(second(real), expected)
    for net in ("G", "D", "G_ema"):
        for key, value in getattr(first, net).state_dict().items():
            assert torch.equal(value, getattr(second, net).state_dict()[key]), f"{net}.{key}"


def test_a_state_that_does_not_fit_is_one_clear_error(real):
    saved = copy.deepcopy(GanStep(tiny_config()).state_dict())
    with pytest.raises(MnistGanError, match="run.ckpt: generator weights do not fit"):
        GanStep(tiny_config("seed")).load_state_dict(saved, "run.ckpt")


def test_check_finite_names_the_network():
    step = GanStep(tiny_config())
    step.check_finite(1)
    with torch.no_grad():
        next(step.D.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(MnistGanError, match="D has non-finite weights at iteration 3"):
        step.check_finite(3)


# --------------------------------------------------------------------------------------- EMA, shifts, WGAN-GP

def test_ema_weights_differ_from_raw_and_are_what_sampling_and_export_use(tmp_path, mnist_5k):
    config = tiny_run_config(ema_decay=0.9, lr_d=4e-4, lr_g=1e-4)
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


def test_augment_shift_shows_d_shifted_reals_and_fakes_and_g_learns_through_it(tmp_path, mnist_5k, monkeypatch):
    calls = []

    def spy(images, max_shift, rng=None, offsets=None):
        assert offsets.shape == (len(images), 2) and 0 <= offsets.min() and offsets.max() <= 2 * max_shift
        calls.append((max_shift, images.requires_grad))
        return random_shift(images, max_shift, rng, offsets)

    monkeypatch.setattr(step_module, "random_shift", spy)
    config = tiny_run_config("recommended", augment_shift=2, iterations=3)
    train(config, tmp_path / "run", dataset=small_dataset(mnist_5k), progress=False)
    # per iteration: D's real batch, D's fakes (no gradient to G), then G's fakes (with gradient)
    assert calls == [(2, False), (2, False), (2, True)] * 3


def test_wgan_gp_runs_n_critic_d_steps_per_g_step(tmp_path, mnist_5k):
    config = tiny_run_config(model={"d_batchnorm": False}, loss="wgan-gp", n_critic=3, r1_gamma=1.0)
    result = train(config, tmp_path / "run", dataset=small_dataset(mnist_5k), progress=False)
    state = load_checkpoint(result.checkpoint)
    d_steps = next(iter(state["optimizer_d"]["state"].values()))["step"]
    g_steps = next(iter(state["optimizer_g"]["state"].values()))["step"]
    assert (int(d_steps), int(g_steps)) == (12, 4)
    assert all(torch.isfinite(torch.tensor([r["d_loss"], r["g_loss"]])).all() for r in result.history)


# ----------------------------------------------------------------------------------------------------- --pack

def test_a_packed_d_judges_real_packs_and_fake_packs_apart(real):
    step = GanStep(unconditioned(pack=2))
    fake, _ = step._fakes_for_d(None)
    real_logits, fake_logits = step._d_outputs(real, fake, None)
    assert real_logits.shape == fake_logits.shape == (4,)
    with torch.no_grad():  # the first half of the joint pass is D's verdict on the reals (spectral norm has since
        # taken one more power-iteration step, hence the tolerance)
        assert torch.allclose(real_logits, step.D(real).float(), atol=1e-3)
    stats = step(real)
    assert torch.isfinite(stats).all() and step.iteration == 1


def test_pack_two_resumes_bit_for_bit_and_generates(tmp_path, small_npz, cli):
    from mnist_gan import resume, train

    def config(iterations: int):
        config = unconditioned(pack=2, iterations=iterations, sample_every=0, log_every=1)
        config.data.data, config.data.limit = str(small_npz), 32
        return config

    whole = train(config(6), tmp_path / "whole", progress=False)
    train(config(3), tmp_path / "parts", progress=False)
    second = resume(tmp_path / "parts", iterations=6, progress=False)  # 4 batches an epoch: crosses into epoch 2
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(second.checkpoint)
    assert a["config"]["model"]["pack"] == 2
    for net in ("G", "D", "G_ema"):
        for key, value in a[net].items():
            assert torch.equal(value, b[net][key]), f"{net}.{key}"
    status, _, err = cli(["generate", tmp_path / "whole", "-n", 4, "--nice", "--out", tmp_path / "nice.png"])
    assert status == 0, err
    assert (tmp_path / "nice.png").is_file()


# ---------------------------------------------------------------------------------------------------- --top-k

def test_top_k_anneals_from_the_batch_to_its_floor():
    from mnist_gan.gan.step import top_k_count

    assert [top_k_count(32, epoch, 0.5) for epoch in (0, 1, 10, 68, 69, 500)] == [32, 31, 28, 16, 16, 16]
    assert top_k_count(2, 0, 0.1) == 2 and top_k_count(2, 10**6, 0.1) == 1  # never fewer than one


def test_g_learns_only_from_the_top_k_fakes(real):
    step = GanStep(unconditioned(top_k=True, top_k_min=0.5), batches_per_epoch=1)
    step.iteration = 1000  # 0.99^1000 of the batch is below the floor: k = 4 of 8
    seen = {}

    def keep_fakes(module, inputs, output):
        if output.requires_grad:  # the G step's fakes (the D step draws its own without a gradient)
            output.retain_grad()
            seen["fake"] = output

    step.G.register_forward_hook(keep_fakes)
    step.D.register_forward_hook(lambda module, inputs, output: seen.__setitem__("logits", output.detach()))
    step(real)
    learned = seen["fake"].grad.flatten(1).abs().sum(1) > 0  # (8,): which fakes G's loss reaches
    assert int(learned.sum()) == 4
    assert set(learned.nonzero().flatten().tolist()) == set(seen["logits"].topk(4).indices.tolist())


def test_without_top_k_every_fake_teaches_g(real):
    step = GanStep(unconditioned())
    seen = {}

    def keep_fakes(module, inputs, output):
        if output.requires_grad:
            output.retain_grad()
            seen["fake"] = output

    step.G.register_forward_hook(keep_fakes)
    step(real)
    assert bool((seen["fake"].grad.flatten(1).abs().sum(1) > 0).all())


# ------------------------------------------------------------------------------------------------ --diversity

@pytest.mark.parametrize("pack", [1, 2])
def test_diversity_pairs_fakes_of_one_class_with_fresh_noise(pack):
    step = GanStep(unconditioned(pack=pack, diversity=1.0))
    z, labels = torch.randn(8, step.config.model.z_dim), torch.arange(8)
    paired, paired_labels = step._pairs(z, labels)
    blocks, drawn = paired.view(-1, 2, pack, z.shape[1]), z.view(-1, 2, pack, z.shape[1])  # (8/2m, 2, m, z_dim)
    label_blocks = paired_labels.view(-1, 2, pack)
    assert torch.equal(label_blocks[:, 0], label_blocks[:, 1])  # the two of a pair: one class (label)...
    assert torch.equal(blocks[:, 0, :, 0], blocks[:, 1, :, 0])  # ...and one cluster coordinate
    assert torch.equal(blocks[:, 0], drawn[:, 0])  # the first of a pair as drawn
    assert torch.equal(blocks[:, 1, :, 1:], drawn[:, 1, :, 1:])  # the second: its own noise elsewhere
    assert all(len(set(p.tolist())) == pack for p in paired_labels.view(-1, pack))  # a pack: m different classes


def test_the_mode_seeking_term_falls_as_pairs_differ():
    step = GanStep(unconditioned(diversity=1.0))
    z = torch.randn(8, step.config.model.z_dim)
    identical = torch.zeros(8, 1, 28, 28)
    different = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert step._mode_seeking(z, identical) > 1e4 > 10 > step._mode_seeking(z, different)


def test_diversity_changes_g_update_and_nothing_else(real):
    plain, diverse = GanStep(unconditioned()), GanStep(unconditioned(diversity=1.0))
    a, b = plain(real), diverse(real)
    assert torch.equal(a[[0, 2, 3]], b[[0, 2, 3]])  # the same noise drawn, the same D step
    assert b[1] > a[1]  # G's loss carries the term
    assert all(torch.equal(p, q) for p, q in zip(plain.D.parameters(), diverse.D.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(plain.G.parameters(), diverse.G.parameters(), strict=True))


# ---------------------------------------------------------------------------------------------- --reuse-fakes

def test_reuse_fakes_runs_g_once_and_g_learns_from_the_fakes_d_was_updated_on(real):
    reuse, reference, plain = (GanStep(unconditioned(reuse_fakes=flag)) for flag in (True, False, False))
    passes = []
    reuse.G.register_forward_hook(lambda module, inputs, output: passes.append(output.requires_grad))
    stats = reuse(real)
    assert passes == [True]  # one G forward pass, its graph kept for G's update
    # The iteration written out: one batch of fakes; D's update on them, detached; G's update through D on them
    fake = reference.G(reference._noise(), None)
    real_logits, fake_logits = reference._d_outputs(real, fake.detach(), None)
    GanStep._descend(reference.optimizer_d, reference.loss.d(real_logits, fake_logits, reference.real_target))
    reference.D.requires_grad_(False)
    loss_g = reference.loss.g(reference.D(fake, None).float())
    GanStep._descend(reference.optimizer_g, loss_g)
    assert torch.allclose(stats[1], loss_g, atol=1e-6)
    for net in ("G", "D"):
        for ours, theirs in zip(getattr(reuse, net).parameters(), getattr(reference, net).parameters(), strict=True):
            assert torch.allclose(ours, theirs, atol=1e-6), net
    plain_stats = plain(real)  # fresh fakes for G: the same D update, another G update
    assert torch.equal(plain_stats[[0, 2, 3]], stats[[0, 2, 3]])
    assert abs(float(plain_stats[1] - stats[1])) > 1e-4
    assert max((p - q).abs().max() for p, q in zip(plain.G.parameters(), reuse.G.parameters(), strict=True)) > 1e-5


@pytest.mark.parametrize("other", [{"diversity": 1.0}, {"fake_in_eval_mode": True}])
def test_reuse_fakes_refuses_what_needs_fakes_of_its_own(other):
    from mnist_gan.settings.validation import validate

    with pytest.raises(MnistGanError, match="--reuse-fakes and --(diversity|fake-in-eval-mode) exclude each other"):
        validate(unconditioned(reuse_fakes=True, **other), training=True)
