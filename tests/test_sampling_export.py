"""`mnist-gan export`: ONNX files that onnxruntime runs to PyTorch's images (within 1e-4) for the seed, dcgan,
recommended (moving-average G) and conditional models at any batch size; the default safetensors export; outputs
created exclusively; and one clear line when the optional ONNX packages are missing."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import invoke_cli

from mnist_gan.run.checkpoint import load_checkpoint, load_generator
from mnist_gan.run.generator_file import load_exported_generator
from mnist_gan.sampling.export import ONNX_TOLERANCE, example_inputs

TINY = ["--batch-size", 8, "--limit", 64, "--iterations", 3, "--log-every", 1, "--sample-every", 0,
        "--checkpoint-every", 0, "--no-progress"]
MODELS = {  # tiny real runs of each kind of G
    "seed": ["--preset", "seed"],
    "dcgan": ["--preset", "dcgan", "--width", 8],
    "recommended": ["--preset", "recommended", "--width", 8, "--self-condition", 8],  # 64 images: 8 clusters
    "conditional": ["--preset", "recommended", "--width", 8, "--conditional"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_npz):
    root = tmp_path_factory.mktemp("export")
    for name, flags in MODELS.items():
        status, _, err = invoke_cli(["train", "--data", small_npz, "--out", root / name, *flags, *TINY])
        assert status == 0, err
    return root


@pytest.mark.parametrize("model", list(MODELS))
def test_onnx_gives_pytorchs_images(model, runs, tmp_path, cli):
    pytest.importorskip("onnxruntime")
    import onnx

    from mnist_gan.sampling.export import run_onnx

    out = tmp_path / "G.onnx"
    status, stdout, err = cli(["export", runs / model, "--format", "onnx", "--out", out])
    assert status == 0, err
    assert stdout.strip() == str(out) and "largest pixel difference" in err
    model_config, G, _ = load_generator(runs / model)  # the sampling G: the moving average where there is one
    for n in (1, 5, 33):  # the batch size is free
        z, labels = example_inputs(model_config, n, seed=n)
        with torch.no_grad():
            expected = G(z, labels)
        images = run_onnx(out, z, labels)
        assert images.shape == (n, 1, 28, 28)
        assert (images - expected).abs().max() <= ONNX_TOLERANCE
    saved = onnx.load(str(out))
    assert [i.name for i in saved.graph.input] == (["z", "labels"] if model == "conditional" else ["z"])
    metadata = {p.key: p.value for p in saved.metadata_props}
    assert json.loads(metadata["model_config"])["conditional"] == (model == "conditional")
    assert metadata["iteration"] == "3"


def test_onnx_uses_the_moving_average_and_the_labels(runs, tmp_path, cli):
    pytest.importorskip("onnxruntime")
    from mnist_gan.gan.weights import build_models, load_state
    from mnist_gan.run.checkpoint import config_from_checkpoint
    from mnist_gan.sampling.export import run_onnx

    out = tmp_path / "cond.onnx"
    assert cli(["export", runs / "conditional", "--format", "onnx", "--out", out])[0] == 0
    state = load_checkpoint(runs / "conditional" / "last.ckpt")
    model_config = config_from_checkpoint(state, "ckpt").model
    trained_G, ema_G = build_models(model_config, "ckpt")[0].eval(), build_models(model_config, "ckpt")[0].eval()
    load_state(trained_G, state["G"], "G", "ckpt")
    load_state(ema_G, state["G_ema"], "G", "ckpt")
    z, labels = example_inputs(model_config, 10)
    images = run_onnx(out, z, labels)
    with torch.no_grad():
        error = float((images - ema_G(z, labels)).abs().max())
        raw = float((images - trained_G(z, labels)).abs().max())
    # After 3 steps from DCGAN's N(0, 0.02) start, G's images are all near 0: compare with the export's own error.
    assert error <= ONNX_TOLERANCE and raw > ONNX_TOLERANCE and raw > 100 * error, "the average, not the raw G"
    steered = float((run_onnx(out, z, (labels + 1) % 10) - images).abs().max())
    assert steered > 100 * error, "the label input steers the images"


def test_safetensors_is_the_default_and_the_runs_own_file(runs, tmp_path, cli, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    status, stdout, err = cli(["export", runs / "recommended"])
    assert status == 0, err
    assert stdout.strip() == "generator.safetensors"
    ours, runs_own = tmp_path / "generator.safetensors", runs / "recommended" / "generator.safetensors"
    mine, theirs = load_file(ours), load_file(runs_own)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    with safe_open(str(ours), "pt") as a, safe_open(str(runs_own), "pt") as b:
        assert a.metadata() == b.metadata()  # the byte order of the metadata varies from process to process
    model_config, G = load_exported_generator(ours)
    assert model_config.spectral_norm and model_config.width == 8


def test_outputs_are_created_exclusively(runs, tmp_path, cli):
    out = tmp_path / "G.safetensors"
    out.write_bytes(b"keep me")
    status, _, err = cli(["export", runs / "dcgan", "--out", out])
    assert status == 2 and "already exists; pass --overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == b"keep me"
    assert cli(["export", runs / "dcgan", "--out", out, "--overwrite"])[0] == 0
    assert load_exported_generator(out)[0].width == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["G.safetensors"], "no temporary file is left"
    status, _, err = cli(["export", runs / "dcgan", "--out", tmp_path])
    assert status == 2 and "is a directory" in err
    status, _, err = cli(["export", tmp_path / "missing", "--out", tmp_path / "new.onnx"])
    assert status == 2 and "no such file or directory" in err


def test_a_file_that_appears_during_the_export_is_kept(runs, tmp_path, monkeypatch):
    """The final step is a hard link, which cannot replace a file created after the first check."""
    import mnist_gan.sampling.export as export_module
    from mnist_gan.errors import MnistGanError

    out = tmp_path / "G.safetensors"
    real = export_module.export_generator

    def racing(*args):
        real(*args)
        out.write_bytes(b"someone else's")

    monkeypatch.setattr(export_module, "export_generator", racing)
    with pytest.raises(MnistGanError, match="already exists"):
        export_module.export(runs / "dcgan", out)
    assert out.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["G.safetensors"]


@pytest.mark.parametrize("package", ["onnx", "onnxruntime"])
def test_a_missing_onnx_package_is_one_line(package, runs, tmp_path, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # `import onnx...` now raises ImportError, as when not installed
    status, stdout, err = cli(["export", runs / "dcgan", "--format", "onnx", "--out", tmp_path / "G.onnx"])
    assert status == 2 and stdout == ""
    assert err == f"mnist-gan: error: --format onnx needs the {package} package: pip install 'mnist-gan[onnx]'\n"
    assert not (tmp_path / "G.onnx").exists()


def test_an_onnxruntime_failure_is_one_line(runs, tmp_path, cli, monkeypatch):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    class TooOld(Exception):
        pass

    def refuse(*args, **kwargs):
        raise TooOld("[ONNXRuntimeError] : 10 : INVALID_GRAPH : opset 17 is not supported\nmore detail")

    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    status, _, err = cli(["export", runs / "dcgan", "--format", "onnx", "--out", tmp_path / "G.onnx"])
    assert status == 2 and err.count("\n") == 1
    assert "ONNX export failed (TooOld: [ONNXRuntimeError] : 10 : INVALID_GRAPH : opset 17" in err
    assert not (tmp_path / "G.onnx").exists()
