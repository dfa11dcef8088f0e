"""Remedies for mode collapse in the step: PacGAN's packed D (--pack), top-k G updates (--top-k) and the
mode-seeking regulariser (--diversity)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mnist_gan.data.images import to_float
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.models import build_discriminator, score_each
from mnist_gan.gan.step import GanStep
from mnist_gan.run.checkpoint import load_checkpoint
from mnist_gan.settings.config import preset
from mnist_gan.settings.validation import validate


def tiny_config(name: str = "recommended", pack: int = 1, **train):
    config = preset(name)
    config.model.width, config.model.pack = 8, pack
    config.model.self_condition = 0  # the remedies alone, on the unconditioned networks
    config.train.batch_size, config.train.device = 8, "cpu"
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


@pytest.fixture
def real(mnist_5k) -> torch.Tensor:
    return to_float(mnist_5k.images[:8])  # (8, 1, 28, 28)


# --------------------------------------------------------------------------------------------- --pack

@pytest.mark.parametrize("architecture", ["dcgan", "seed"])
def test_a_packed_d_takes_m_images_along_its_channels(architecture, real):
    D = build_discriminator(dataclasses.replace(preset("seed").model, architecture=architecture, width=8, pack=4))
    assert D.features[0].in_channels == 4
    with torch.no_grad():
        assert D(real).shape == (2,)  # 8 images, 4 per verdict
        assert score_each(D, real).shape == (8,)  # each image judged as a pack of 4 copies of itself
        assert torch.equal(score_each(D, real[:1]), D(real[:1].repeat(4, 1, 1, 1)))
    with pytest.raises(MnistGanError, match="judges 4 images at once; got a batch of 6"):
        D(real[:6])


def test_a_packed_d_judges_real_packs_and_fake_packs_apart(real):
    step = GanStep(tiny_config(pack=2))
    fake, _ = step._fakes_for_d(None)
    real_logits, fake_logits = step._d_outputs(real, fake, None)
    assert real_logits.shape == fake_logits.shape == (4,)
    with torch.no_grad():  # the first half of the joint pass is D's verdict on the reals (spectral norm has since
        # taken one more power-iteration step, hence the tolerance)
        assert torch.allclose(real_logits, step.D(real).float(), atol=1e-3)
    stats = step(real)
    assert torch.isfinite(stats).all() and step.iteration == 1


@pytest.mark.parametrize("pack, batch, message", [
    (0, 8, "--pack must be in 1..8"), (9, 9, "--pack must be in 1..8"),
    (3, 8, "--batch-size 8 must be a multiple of --pack 3"),
])
def test_an_impossible_pack_is_one_line(pack, batch, message):
    config = tiny_config(pack=pack)
    config.train.batch_size = batch
    with pytest.raises(MnistGanError, match=message):
        validate(config, training=True)


def test_pack_two_resumes_bit_for_bit_and_generates(tmp_path, small_npz, cli):
    from mnist_gan import resume, train

    def config(iterations: int):
        config = tiny_config(pack=2, iterations=iterations, sample_every=0, log_every=1)
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


def test_pack_flag_reaches_the_config(tmp_path, small_npz, cli):
    status, _, err = cli(["train", "--preset", "recommended", "--pack", "9", "--data", small_npz, "--out",
                          tmp_path / "run", "--no-progress"])
    assert status == 2 and err.count("\n") == 1 and "--pack must be in 1..8" in err


# --------------------------------------------------------------------------------------------- --top-k

def test_top_k_anneals_from_the_batch_to_its_floor():
    from mnist_gan.gan.step import top_k_count

    assert [top_k_count(32, epoch, 0.5) for epoch in (0, 1, 10, 68, 69, 500)] == [32, 31, 28, 16, 16, 16]
    assert top_k_count(2, 0, 0.1) == 2 and top_k_count(2, 10**6, 0.1) == 1  # never fewer than one


def test_g_learns_only_from_the_top_k_fakes(real):
    step = GanStep(tiny_config(top_k=True, top_k_min=0.5), batches_per_epoch=1)
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
    step = GanStep(tiny_config())
    seen = {}

    def keep_fakes(module, inputs, output):
        if output.requires_grad:
            output.retain_grad()
            seen["fake"] = output

    step.G.register_forward_hook(keep_fakes)
    step(real)
    assert bool((seen["fake"].grad.flatten(1).abs().sum(1) > 0).all())


# --------------------------------------------------------------------------------------------- --diversity

@pytest.mark.parametrize("pack", [1, 2])
def test_diversity_pairs_fakes_of_one_class_with_fresh_noise(pack):
    step = GanStep(tiny_config(pack=pack, diversity=1.0))
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
    step = GanStep(tiny_config(diversity=1.0))
    z = torch.randn(8, step.config.model.z_dim)
    identical = torch.zeros(8, 1, 28, 28)
    different = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert step._mode_seeking(z, identical) > 1e4 > 10 > step._mode_seeking(z, different)


def test_diversity_changes_g_update_and_nothing_else(real):
    plain, diverse = GanStep(tiny_config()), GanStep(tiny_config(diversity=1.0))
    a, b = plain(real), diverse(real)
    assert torch.equal(a[[0, 2, 3]], b[[0, 2, 3]])  # the same noise drawn, the same D step
    assert b[1] > a[1]  # G's loss carries the term
    assert all(torch.equal(p, q) for p, q in zip(plain.D.parameters(), diverse.D.parameters(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(plain.G.parameters(), diverse.G.parameters(), strict=True))


@pytest.mark.parametrize("diversity, pack, batch, message", [
    (-1.0, 1, 8, "--diversity must be zero or positive"),
    (1.0, 4, 12, "--batch-size 12 must be a multiple of twice --pack 4"),
])
def test_an_impossible_diversity_is_one_line(diversity, pack, batch, message):
    config = tiny_config(pack=pack, diversity=diversity)
    config.train.batch_size = batch
    with pytest.raises(MnistGanError, match=message):
        validate(config, training=True)
