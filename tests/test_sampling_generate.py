"""`mnist-gan generate` from every source, in every format, with --seed, --nice and --digit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import small_dataset, tiny_run_config
from PIL import Image

from mnist_gan.cli.parser import main
from mnist_gan.data.images import to_uint8
from mnist_gan.run.checkpoint import load_generator
from mnist_gan.sampling.sample import NICE_FACTOR, generate, generate_nice
from mnist_gan.training.loop import train


@pytest.fixture(scope="module")
def sources(trained_run):
    run = trained_run.dir
    return {"checkpoint": run / "last.ckpt", "run directory": run, "export": run / "generator.safetensors"}


def _npz(cli, source, out, *flags):
    status, stdout, stderr = cli(["generate", source, "--format", "npz", "--out", out, *flags])
    assert status == 0, stderr
    assert stdout.strip() == str(out)
    with np.load(out) as archive:
        return archive["images"]


def test_every_source_gives_the_same_images(cli, sources, tmp_path):
    arrays = {name: _npz(cli, source, tmp_path / f"{i}.npz", "-n", 10, "--seed", 5)
              for i, (name, source) in enumerate(sources.items())}
    for images in arrays.values():
        assert images.dtype == np.uint8 and images.shape == (10, 28, 28)
        assert np.array_equal(images, arrays["checkpoint"])
    assert images.std() > 0


def test_seed_is_repeatable(cli, sources, tmp_path):
    first = _npz(cli, sources["checkpoint"], tmp_path / "a.npz", "-n", 6, "--seed", 1)
    again = _npz(cli, sources["checkpoint"], tmp_path / "b.npz", "-n", 6, "--seed", 1)
    other = _npz(cli, sources["checkpoint"], tmp_path / "c.npz", "-n", 6, "--seed", 2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_png_grid(cli, sources, tmp_path):
    out = tmp_path / "grid.png"
    status, stdout, stderr = cli(["generate", sources["run directory"], "-n", 12, "--nrow", 4, "--out", out,
                                  "--seed", 5])
    assert status == 0, stderr
    with Image.open(out) as grid:
        assert grid.format == "PNG" and grid.mode == "L"
        assert grid.size == (4 * 30 + 2, 3 * 30 + 2)  # 4 per row, 3 rows, 2-pixel padding
        pixels = np.asarray(grid)
    reference = _npz(cli, sources["checkpoint"], tmp_path / "same.npz", "-n", 12, "--seed", 5)
    assert np.array_equal(pixels[2:30, 2:30], reference[0])
    assert np.array_equal(pixels[32:60, 2 + 30:30 + 30], reference[5])  # row 1, column 1


def test_dir_format(cli, sources, tmp_path):
    out = tmp_path / "digits"
    status, _, stderr = cli(["generate", sources["export"], "-n", 5, "--format", "dir", "--out", out])
    assert status == 0, stderr
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"{i:04d}.png" for i in range(5)]
    reference = _npz(cli, sources["export"], tmp_path / "same.npz", "-n", 5)
    for file, expected in zip(files, reference, strict=True):
        with Image.open(file) as image:
            assert image.size == (28, 28) and image.mode == "L"
            assert np.array_equal(np.asarray(image), expected)


def test_nice_keeps_the_best_scored(cli, sources, tmp_path):
    model_config, G, D = load_generator(sources["checkpoint"])
    n = 8
    images, scores = generate_nice(G, D, model_config, n, seed=4)
    assert images.shape == (n, 1, 28, 28) and scores.shape == (n,)
    assert torch.all(scores[:-1] >= scores[1:]), "best first"
    with torch.no_grad():
        candidates = generate(G, model_config, n * NICE_FACTOR, seed=4)
        all_scores = torch.sigmoid(D(candidates))
    assert torch.allclose(scores, all_scores.sort(descending=True).values[:n])
    assert scores.mean() > all_scores.mean(), "better than the mean of random draws"
    assert scores.min() >= all_scores.quantile(1 - 1 / NICE_FACTOR) - 1e-6

    out = tmp_path / "nice.npz"
    status, _, stderr = cli(["generate", sources["checkpoint"], "-n", n, "--nice", "--seed", 4,
                             "--format", "npz", "--out", out])
    assert status == 0, stderr
    assert f"kept the best {n} of {n * NICE_FACTOR}" in stderr
    with np.load(out) as archive:
        assert np.array_equal(archive["images"], to_uint8(images).numpy())


def test_nice_needs_a_discriminator(cli, sources, tmp_path):
    out = tmp_path / "nice.png"
    status, stdout, stderr = cli(["generate", sources["export"], "--nice", "-n", 4, "--out", out])
    assert status == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert "--nice" in stderr and "discriminator" in stderr and ".ckpt" in stderr
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["png", "npz"])
def test_refuses_to_overwrite_without_flag(cli, sources, tmp_path, fmt):
    out = tmp_path / f"mine.{fmt}"
    out.write_bytes(b"precious")
    status, _, stderr = cli(["generate", sources["checkpoint"], "-n", 4, "--format", fmt, "--out", out])
    assert status == 2 and "already exists" in stderr and "--overwrite" in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"precious"
    status, _, stderr = cli(["generate", sources["checkpoint"], "-n", 4, "--format", fmt, "--out", out,
                             "--overwrite"])
    assert status == 0, stderr
    assert out.read_bytes() != b"precious"


def test_refuses_a_non_empty_directory(cli, sources, tmp_path):
    out = tmp_path / "digits"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    for flags in ([], ["--overwrite"]):
        status, _, stderr = cli(["generate", sources["checkpoint"], "-n", 3, "--format", "dir", "--out", out,
                                 *flags])
        assert status == 2 and len(stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("flags, phrase", [
    (["-n", 0], "-n must be positive"),
    (["--nrow", -2], "--nrow must be positive"),
    (["--format", "gif"], "invalid choice: 'gif'"),
])
def test_bad_generate_flags(cli, sources, tmp_path, flags, phrase):
    status, stdout, stderr = cli(["generate", sources["checkpoint"], "--out", tmp_path / "x.png", *flags])
    assert status == 2 and stdout == "" and phrase in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("content", [None, b"not a checkpoint"], ids=["missing", "garbage"])
def test_bad_checkpoint_path(cli, tmp_path, content):
    source = tmp_path / "model.ckpt"
    if content is not None:
        source.write_bytes(content)
    status, _, stderr = cli(["generate", source, "--out", tmp_path / "x.png"])
    assert status == 2 and str(source) in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_dir_format_over_a_file(cli, sources, tmp_path):
    out = tmp_path / "digits"
    out.write_text("precious")
    status, _, stderr = cli(["generate", sources["checkpoint"], "-n", 3, "--format", "dir", "--out", out,
                             "--overwrite"])
    assert status == 2 and "not a directory" in stderr and "Traceback" not in stderr
    assert out.read_text() == "precious"


def test_digit_on_unconditional_model_is_an_error(tmp_path, mnist_5k, capsys):
    train(tiny_run_config(), tmp_path / "run", dataset=small_dataset(mnist_5k), progress=False)
    assert main(["generate", str(tmp_path / "run"), "--digit", "7", "--out", str(tmp_path / "x.png")]) == 2
    assert "conditional" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
