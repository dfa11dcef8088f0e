"""Self-conditioned training (--self-condition K, --recluster-every N): clusters instead of labels, kept stable
across re-clusterings, saved in the checkpoint, and drawn in proportion by the generator alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_config

from mnist_gan.data.images import ImageDataset
from mnist_gan.errors import MnistGanError
from mnist_gan.gan.clusters import SelfConditioning, assign, kmeans, match_clusters
from mnist_gan.run.checkpoint import load_checkpoint, load_generator


def clustered(iterations: int, k: int = 3, recluster_every: int = 3):
    """tiny_config of the recommended preset on k clusters, re-clustered every `recluster_every` iterations, a
    metrics line every iteration, no grids."""
    return tiny_config(model={"self_condition": k}, iterations=iterations, recluster_every=recluster_every,
                       sample_every=0, log_every=1)


@pytest.fixture(scope="module")
def digits(mnist_5k) -> ImageDataset:
    return ImageDataset(mnist_5k.images[:48], mnist_5k.labels[:48], "mnist", "48 real digits")


def test_kmeans_finds_separated_groups_and_is_repeatable():
    rng = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(50, 4, generator=rng) * 0.1 + offset for offset in (-5.0, 0.0, 5.0)])
    centres = kmeans(points, 3, torch.Generator().manual_seed(1))
    ids = assign(points, centres)
    assert sorted(torch.bincount(ids).tolist()) == [50, 50, 50]
    assert torch.equal(centres, kmeans(points, 3, torch.Generator().manual_seed(1)))


def test_matching_gives_renamed_clusters_their_old_ids():
    old = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    new = torch.tensor([2, 2, 1, 0, 0, 1, 1, 1, 1])  # 2 -> 0, 0 -> 1, 1 -> 2, one image moved
    mapping = match_clusters(old, new, 3)
    assert mapping.tolist() == [1, 2, 0]
    assert mapping[new].tolist() == [0, 0, 2, 1, 1, 2, 2, 2, 2]


def test_pixel_clusters_follow_the_digits(mnist_5k):
    clusters = SelfConditioning.from_pixels(mnist_5k.images[:1000], 10, seed=0)
    labels = mnist_5k.labels[:1000]
    # purity: each cluster's most common digit; k-means on MNIST pixels gets ~0.6 (chance: ~0.11)
    purity = sum(int(torch.bincount(labels[clusters.assignments == c]).max()) for c in range(10)
                 if (clusters.assignments == c).any()) / 1000
    assert purity > 0.45
    assert abs(float(clusters.proportions().sum()) - 1) < 1e-6


def test_g_draws_clusters_in_proportion_from_z_alone():
    from mnist_gan.gan.models import build_generator, sample_z

    config = clustered(1).model
    G = build_generator(config)
    G.cluster_weights.copy_(torch.tensor([0.5, 0.0, 0.5]))
    z = sample_z(4000, config, torch.Generator().manual_seed(0))
    shares = torch.bincount(G.cluster_ids(z), minlength=3).float() / 4000
    assert shares[1] == 0 and abs(float(shares[0]) - 0.5) < 0.03
    with torch.no_grad():
        G.eval()
        assert torch.equal(G(z[:8]), G(z[:8], G.cluster_ids(z[:8])))


def test_resume_across_reclusterings_is_bit_identical(tmp_path, digits):
    from mnist_gan import resume, train

    whole = train(clustered(6), tmp_path / "whole", dataset=digits, progress=False)  # re-clusters at 3 and 6
    config = clustered(3)
    config.data.data, config.data.limit = "unused", None
    train(config, tmp_path / "parts", dataset=digits, progress=False)
    # resume() reloads the data the config names: stand in the same 48 digits
    np.savez(tmp_path / "digits.npz", x_train=digits.images.numpy(), y_train=digits.labels.numpy())
    _point_config_at(tmp_path / "parts", tmp_path / "digits.npz")
    second = resume(tmp_path / "parts", iterations=6, progress=False)
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(second.checkpoint)
    for part in ("G", "D", "G_ema", "clusters"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key}"
    assert torch.equal(a["G"]["cluster_weights"], a["clusters"]["proportions"])
    model_config, G, _ = load_generator(tmp_path / "whole" / "generator.safetensors")
    assert model_config.self_condition == 3
    assert torch.equal(G.cluster_weights, a["clusters"]["proportions"])  # the export carries the shares


def _point_config_at(run_dir, data_path) -> None:
    """Make a run's config.json and checkpoints name `data_path` as their data (as if trained on it)."""
    import json

    from mnist_gan.run.checkpoint import list_checkpoints, save_checkpoint

    raw = json.loads((run_dir / "config.json").read_text())
    raw["data"]["data"] = str(data_path)
    (run_dir / "config.json").write_text(json.dumps(raw))
    for path in list_checkpoints(run_dir):
        state = load_checkpoint(path)
        state["config"]["data"]["data"] = str(data_path)
        state.pop("format_version")
        save_checkpoint(path, state)


def test_no_label_is_read(tmp_path, digits):
    from mnist_gan import train

    shuffled = ImageDataset(digits.images, digits.labels[torch.randperm(48)], "mnist", "labels shuffled")
    unlabelled = ImageDataset(digits.images, None, "mnist", "no labels")
    runs = [train(clustered(4), tmp_path / name, dataset=data, progress=False)
            for name, data in (("labelled", digits), ("shuffled", shuffled), ("unlabelled", unlabelled))]
    states = [load_checkpoint(run.checkpoint) for run in runs]
    for state in states[1:]:
        for key, value in states[0]["G"].items():
            assert torch.equal(value, state["G"][key]), key


def test_generate_needs_nothing_and_refuses_a_digit(tmp_path, digits, cli):
    from mnist_gan import train

    train(clustered(2), tmp_path / "run", dataset=digits, progress=False)
    status, _, err = cli(["generate", tmp_path / "run", "-n", 8, "--out", tmp_path / "out.png"])
    assert status == 0, err
    status, _, err = cli(["generate", tmp_path / "run", "--digit", 3, "--out", tmp_path / "three.png"])
    assert status == 2 and err.count("\n") == 1 and "self-conditioned on 3 clusters" in err


def test_a_checkpoint_whose_clusters_do_not_fit_is_refused(digits):
    with pytest.raises(MnistGanError, match="x.ckpt: its clusters do not fit this run"):
        SelfConditioning.from_state({"assignments": torch.zeros(5, dtype=torch.long), "centres": torch.zeros(3, 2)},
                                    48, 3, "x.ckpt")
