"""examples/seed_from_scratch.py is the same algorithm as `mnist-gan train --preset seed`: started from the same
weights, on the same batches in the same order and with the same noise, both log the same losses (to 1e-5) and
each weight tensor's change over 5 iterations agrees to 2% of its largest change (not bitwise: see UPDATE_RTOL)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from helpers import REPO
from PIL import Image

from mnist_gan.gan.models import build_discriminator, build_generator
from mnist_gan.run.checkpoint import load_checkpoint
from mnist_gan.settings.config import preset

SEED = 3
BATCH_SIZE = 8
IMAGES = 32  # 4 batches an epoch: the 5th iteration starts the second epoch
ITERATIONS = 5
# The two compute the same sums in different orders (fused optimizer, channels-last convolutions, Keras' form of
# the Nesterov update), so they are not bitwise equal: each rounding difference in a gradient is carried on by
# the momentum. Measured on a 2-core AMD EPYC (torch 2.13.0, fp32, 1 or 2 threads): the largest difference in a
# tensor's change is 0.46% of that tensor's largest change (G conv2.weight, 1.5e-6 of 3.2e-4), and one float32
# step (1.2e-7) of BatchNorm's scale, whose values are ~1. The bound per tensor: 2% of its largest change, plus 4
# float32 steps of its largest weight, plus 1e-9 for dense2's bias, which the BatchNorm after it makes
# gradient-free (it moves by 1e-11, rounding alone). A different update rule, noise or batch order changes a
# tensor's update by far more than 2% (test_a_changed_update_rule_breaks_the_bound).
UPDATE_RTOL = 0.02
ROUNDING_STEPS = 4
STILL_ATOL = 1e-9

# The package's parameter names -> the script's.
G_NAMES = {"project.0": "dense1", "project.2": "dense2", "project.3": "bn", "upsample.1": "conv1",
           "upsample.4": "conv2"}
D_NAMES = {"features.0": "conv1", "features.3": "conv2", "classify.1": "dense1", "classify.3": "dense2"}
BATCHNORM_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}


def load_example():
    spec = importlib.util.spec_from_file_location("seed_from_scratch", REPO / "examples" / "seed_from_scratch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_script_names(state_dict: dict, names: dict) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, tensor in state_dict.items():
        module, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":  # a counter the script has no use for
            continue
        leaf = BATCHNORM_NAMES[leaf] if names[module] == "bn" else leaf
        renamed[f"{names[module]}.{leaf}"] = tensor.detach().clone()
    return renamed


def as_script_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.clone().requires_grad_(not name.startswith("bn.running")) for name, t in tensors.items()}


@pytest.fixture(scope="module")
def scratch():
    return load_example()


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory, mnist_5k):
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=mnist_5k.images[:IMAGES].numpy(), y_train=mnist_5k.labels[:IMAGES].numpy())
    return path


def test_script_and_package_end_with_the_same_weights(scratch, digits_npz, mnist_5k, tmp_path, cli):
    # The package: the real CLI, fp32, one metrics line per iteration.
    run = tmp_path / "run"
    status, _, err = cli(["train", "--preset", "seed", "--data", digits_npz, "--batch-size", BATCH_SIZE,
                          "--iterations", ITERATIONS, "--precision", "fp32", "--seed", SEED, "--log-every", 1,
                          "--sample-every", 0, "--checkpoint-every", 0, "--no-progress", "--out", run])
    assert status == 0, err
    final = load_checkpoint(run / "last.ckpt")
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    # Its initial weights, made as training makes them: the global seed, then G, then D.
    config = preset("seed")
    torch.manual_seed(SEED)
    G0, D0 = build_generator(config.model), build_discriminator(config.model)
    initial_G, initial_D = to_script_names(G0.state_dict(), G_NAMES), to_script_names(D0.state_dict(), D_NAMES)
    assert set(initial_G) == set(scratch.init_generator()) and set(initial_D) == set(scratch.init_discriminator())

    # The script, from those weights, on the same images in the same order, with the package's noise: a
    # generator seeded with --seed, drawn for D's fakes and then for G's.
    G, D = as_script_weights(initial_G), as_script_weights(initial_D)
    history = scratch.train(G, D, scratch.real_batches(mnist_5k.images[:IMAGES], BATCH_SIZE),
                            scratch.uniform_noise(SEED), ITERATIONS, lr=config.train.lr,
                            momentum=config.train.momentum)

    assert [r["iteration"] for r in logged] == list(range(1, ITERATIONS + 1))
    for mine, theirs in zip(history, logged, strict=True):
        for key in ("d_loss", "g_loss", "d_x", "d_g_z"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), (mine["iteration"], key)
    for network, mine, theirs, initial in (("G", G, to_script_names(final["G"], G_NAMES), initial_G),
                                           ("D", D, to_script_names(final["D"], D_NAMES), initial_D)):
        for name in mine:  # what training did to each tensor, in the script and in the package
            gap, bound = update_gap(mine[name].detach(), theirs[name], initial[name])
            assert gap <= bound, f"{network} {name}: the updates differ by {gap:.3g}, over the bound {bound:.3g}"
        assert max((theirs[name] - initial[name]).abs().max() for name in theirs) > 1e-3


def update_gap(mine: torch.Tensor, theirs: torch.Tensor, initial: torch.Tensor) -> tuple[float, float]:
    """(largest difference between two runs' changes to a tensor, the bound it must stay within)."""
    change = theirs - initial
    rounding = ROUNDING_STEPS * torch.finfo(torch.float32).eps * theirs.abs().max().item()
    bound = UPDATE_RTOL * change.abs().max().item() + rounding + STILL_ATOL
    return (mine - initial - change).abs().max().item(), bound


def test_a_changed_update_rule_breaks_the_bound(scratch, mnist_5k):
    """The bound is tight enough to see a wrong update rule: the same script with 10% more momentum breaks it."""
    config = preset("seed")
    torch.manual_seed(SEED)
    G0 = to_script_names(build_generator(config.model).state_dict(), G_NAMES)
    D0 = to_script_names(build_discriminator(config.model).state_dict(), D_NAMES)
    results = []
    for momentum in (config.train.momentum, config.train.momentum * 1.1):
        G, D = as_script_weights(G0), as_script_weights(D0)
        scratch.train(G, D, scratch.real_batches(mnist_5k.images[:IMAGES], BATCH_SIZE), scratch.uniform_noise(SEED),
                      ITERATIONS, lr=config.train.lr, momentum=momentum)
        results.append(G)
    gaps = [update_gap(results[1][name].detach(), results[0][name].detach(), G0[name]) for name in G0
            if not name.startswith("bn.running")]
    assert any(gap > bound for gap, bound in gaps)


def test_noise_and_batches_are_the_packages(scratch, mnist_5k):
    """The script's noise and real batches are the very tensors the package draws (sample_z, epoch_order)."""
    from mnist_gan.data.images import to_float
    from mnist_gan.gan.models import sample_z

    config = preset("seed")
    package_rng, noise = torch.Generator().manual_seed(SEED), scratch.uniform_noise(SEED)
    for _ in range(3):
        assert torch.equal(noise(BATCH_SIZE), sample_z(BATCH_SIZE, config.model, package_rng))
    batches = scratch.real_batches(mnist_5k.images[:IMAGES], BATCH_SIZE)
    for index in range(IMAGES // BATCH_SIZE + 1):  # one more than an epoch: it starts again at the first image
        start = index % (IMAGES // BATCH_SIZE) * BATCH_SIZE
        assert torch.equal(next(batches), to_float(mnist_5k.images[start:start + BATCH_SIZE]))


def test_initialisation_is_keras(scratch):
    G, D = scratch.init_generator(torch.Generator().manual_seed(0)), scratch.init_discriminator()
    limit = (6 / (100 + 1024)) ** 0.5
    assert G["dense1.weight"].shape == (1024, 100)
    assert G["dense1.weight"].abs().max() <= limit and G["dense1.weight"].abs().max() > 0.95 * limit
    conv_limit = (6 / (64 * 25 + 128 * 25)) ** 0.5  # Glorot's fans of a 5x5 convolution count the kernel
    assert 0.95 * conv_limit < D["conv2.weight"].abs().max() <= conv_limit
    assert all(not t.any() for name, t in {**G, **D}.items() if name.endswith(".bias"))
    assert torch.equal(G["bn.gamma"], torch.ones(6272)) and torch.equal(G["bn.running_var"], torch.ones(6272))
    assert not G["bn.running_mean"].requires_grad and G["bn.gamma"].requires_grad
    parameters = sum(t.numel() for t in G.values() if t.requires_grad)
    assert parameters == 6_751_233 and sum(t.numel() for t in D.values()) == 3_485_441, "the Keras model's counts"


def test_the_script_runs_and_writes_a_grid(scratch, digits_npz, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert scratch.main(["--iterations", "2", "--batch-size", "8", "--data", str(digits_npz), "--log-every", "1",
                         "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (2 * (8 * 30 + 2),) * 2 and np.asarray(image).std() > 0
    assert "iteration 2: d_loss" in capsys.readouterr().err
    before = out.read_bytes()
    assert scratch.main(["--iterations", "1", "--data", str(digits_npz), "--out", str(out)]) == 2
    assert out.read_bytes() == before, "an existing grid is never replaced without --overwrite"
    assert "exists" in capsys.readouterr().err
