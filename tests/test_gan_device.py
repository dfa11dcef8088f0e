"""The fast path: device and precision choice, and tiny real runs with --precision and --compile."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from mnist_gan.cli.parser import main
from mnist_gan.errors import MnistGanError
from mnist_gan.gan import device as hardware
from mnist_gan.gan.flops import training_flops_per_image
from mnist_gan.gan.models import build_discriminator, build_generator

# ---------------------------------------------------------------------------------------------------- devices

def test_device_auto_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.resolve_device("auto") == torch.device("cpu")
    assert hardware.resolve_device("cpu") == torch.device("cpu")


def test_device_auto_is_cuda_with_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_device_cuda_without_a_gpu_is_a_clear_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MnistGanError, match="no CUDA GPU"):
        hardware.resolve_device(name)


def test_device_index_beyond_the_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert hardware.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(MnistGanError, match="1 GPU"):
        hardware.resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["tpu", "mps", "gpu0"])
def test_unsupported_devices_are_clear_errors(name):
    with pytest.raises(MnistGanError, match="--device"):
        hardware.resolve_device(name)


def test_cli_device_cuda_without_a_gpu_exits_2_with_one_line(tmp_path, small_npz, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--device", "cuda", "--iterations", "1", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "Traceback" not in err
    assert not out.exists()


# -------------------------------------------------------------------------------------------------- precision

def test_native_bf16_is_read_from_the_cpu_capability(monkeypatch):
    monkeypatch.setattr(hardware, "_cpu_capability", lambda: {"architecture": "x86_64", "avx512_bf16": True})
    assert hardware.cpu_has_native_bf16()
    monkeypatch.setattr(hardware, "_cpu_capability", lambda: {"architecture": "x86_64", "amx_bf16": True})
    assert hardware.cpu_has_native_bf16()
    monkeypatch.setattr(hardware, "_cpu_capability", lambda: {"architecture": "x86_64", "avx512_bf16": False,
                                                           "amx_bf16": False, "avx2": True})
    assert not hardware.cpu_has_native_bf16()


def test_native_bf16_falls_back_to_the_kernel_flags(monkeypatch):
    monkeypatch.setattr(hardware, "_cpu_capability", lambda: {})
    monkeypatch.setattr(hardware, "_cpuinfo_flags", lambda: {"fp", "asimd", "bf16"})
    assert hardware.cpu_has_native_bf16()
    monkeypatch.setattr(hardware, "_cpuinfo_flags", lambda: {"avx2", "fma"})
    assert not hardware.cpu_has_native_bf16()


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cpu_follows_the_hardware(monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert hardware.resolve_precision("auto", cpu) == expected
    assert hardware.resolve_precision("fp32", cpu) == "fp32"


def test_forced_bf16_on_a_cpu_without_it_warns_but_runs(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="slower"):
        assert hardware.resolve_precision("bf16", torch.device("cpu")) == "bf16"


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_cuda_follows_the_card(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Old GPU")
    assert hardware.resolve_precision("auto", torch.device("cuda")) == expected
    if not supported:
        with pytest.raises(MnistGanError, match="no bf16"):
            hardware.resolve_precision("bf16", torch.device("cuda"))


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(MnistGanError, match="--precision"):
        hardware.resolve_precision("fp8", torch.device("cpu"))


def test_autocast_runs_matmuls_in_bf16_only_when_asked():
    layer, x = nn.Linear(4, 4), torch.ones(2, 4)
    with hardware.autocast(torch.device("cpu"), "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with hardware.autocast(torch.device("cpu"), "fp32"):
        assert layer(x).dtype == torch.float32


def test_auto_precision_keeps_small_steps_in_fp32_on_cpu(monkeypatch):
    """On a CPU the work of one step decides: FLOPs per image times the images of a step."""
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    cpu = torch.device("cpu")
    threshold = hardware.CPU_BF16_MIN_FLOPS_PER_STEP
    assert hardware.resolve_precision("auto", cpu, flops_per_image=31.1e6, batch_size=32) == "fp32"  # 1.0 GFLOP
    assert hardware.resolve_precision("auto", cpu, flops_per_image=31.1e6, batch_size=128) == "bf16"  # 4.0
    assert hardware.resolve_precision("auto", cpu, flops_per_image=566e6, batch_size=32) == "bf16"
    assert hardware.resolve_precision("auto", cpu, flops_per_image=threshold / 64, batch_size=63) == "fp32"
    assert hardware.resolve_precision("auto", cpu, flops_per_image=threshold / 64, batch_size=64) == "bf16"
    assert hardware.resolve_precision("bf16", cpu, flops_per_image=11.6e6) == "bf16"  # asked for: obeyed


def test_auto_precision_on_cuda_depends_on_size_and_compilation(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    cuda = torch.device("cuda")
    assert hardware.resolve_precision("auto", cuda, flops_per_image=778e6) == "fp32"  # eager: launch-bound
    assert hardware.resolve_precision("auto", cuda, flops_per_image=778e6, compiled=True) == "bf16"
    assert hardware.resolve_precision("auto", cuda, flops_per_image=11.6e6, compiled=True) == "fp32"
    assert hardware.resolve_precision("auto", cuda, flops_per_image=50e9) == "bf16"


def test_presets_resolve_auto_precision_by_their_size(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    from mnist_gan import preset

    def auto(name, **model):
        config = preset(name)
        for key, value in model.items():
            setattr(config.model, key, value)
        flops = training_flops_per_image(build_generator(config.model), build_discriminator(config.model),
                                               config.model.z_dim, config.model.conditional)["total"]
        return hardware.resolve_precision("auto", torch.device("cpu"), flops, batch_size=config.train.batch_size)

    assert auto("seed") == "bf16"
    assert auto("recommended") == "bf16"  # batch 128
    assert auto("recommended", conditional=True) == "bf16"
    assert auto("recommended", width=8) == "fp32"  # a fraction of the work per step


def test_the_step_counts_its_own_batch_when_it_picks_the_precision(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    from mnist_gan import preset
    from mnist_gan.gan.step import GanStep

    config = preset("recommended")
    assert GanStep(config).precision == "bf16"
    config.train.batch_size = 32
    assert GanStep(config).precision == "fp32"


# --------------------------------------------------------------------------------------------- tiny real runs

def _tiny_run(tmp_path, small_npz, name: str, *flags: str) -> tuple[int, list[dict], dict]:
    out = tmp_path / name
    code = main(["train", "--preset", "dcgan", "--width", "8", "--data", str(small_npz), "--batch-size", "16",
                 "--iterations", "6", "--log-every", "2", "--sample-every", "0", "--out", str(out), "--no-progress",
                 *flags])
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    config = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
    return code, [json.loads(line) for line in lines], config


def test_bf16_and_fp32_runs_both_train_with_finite_losses(tmp_path, small_npz):
    code32, fp32, config32 = _tiny_run(tmp_path, small_npz, "fp32", "--precision", "fp32")
    code16, bf16, config16 = _tiny_run(tmp_path, small_npz, "bf16", "--precision", "bf16")
    assert code32 == code16 == 0
    assert config32["train"]["precision"] == "fp32" and config16["train"]["precision"] == "bf16"
    assert len(fp32) == len(bf16) == 3
    for a, b in zip(fp32, bf16, strict=True):
        for key in ("d_loss", "g_loss", "d_x", "d_g_z"):
            assert math.isfinite(b[key])
            assert abs(a[key] - b[key]) < 0.05  # the same step, rounded differently
    assert any(a["d_loss"] != b["d_loss"] for a, b in zip(fp32, bf16, strict=True))  # bf16 really ran in bf16


def test_bf16_run_resumes_and_exports_fp32_weights(tmp_path, small_npz):
    from mnist_gan.run.checkpoint import load_generator

    code, _, _ = _tiny_run(tmp_path, small_npz, "run", "--precision", "bf16")
    assert code == 0
    assert main(["train", "--resume", str(tmp_path / "run"), "--iterations", "8", "--no-progress"]) == 0
    _, G, _ = load_generator(str(tmp_path / "run" / "generator.safetensors"))
    assert all(p.dtype == torch.float32 for p in G.parameters())


def test_compile_falls_back_to_eager_with_a_warning_where_unavailable(tmp_path, small_npz, capsys, monkeypatch):
    monkeypatch.setattr(hardware, "compile_available", lambda: (False, "RuntimeError: no C++ compiler"))
    code, records, config = _tiny_run(tmp_path, small_npz, "nocompile", "--compile", "--precision", "fp32")
    assert code == 0 and len(records) == 3 and config["train"]["compile"] is True
    err = capsys.readouterr().err
    assert "--compile" in err and "no C++ compiler" in err and "Traceback" not in err


def test_compiled_run_matches_the_eager_run(tmp_path, small_npz, capsys):
    """In the default suite, so kept small: 3 iterations of dcgan at width 8 (BatchNorm in G and D), where
    compiling G's and D's graphs (the G step recompiles D for inputs that need a gradient) takes ~40 s on 2 busy
    cores with an empty inductor cache, ~15 s with a warm one."""
    from mnist_gan.run.checkpoint import load_generator

    ok, reason = hardware.compile_available()
    if not ok:
        pytest.skip(f"torch.compile is unavailable here: {reason}")
    short = ("--precision", "fp32", "--iterations", "3", "--log-every", "1")
    code, compiled, config = _tiny_run(tmp_path, small_npz, "compiled", "--compile", *short)
    err = capsys.readouterr().err
    assert ", compiled" in err and "training eagerly" not in err  # it really ran compiled, not eager
    code_eager, eager, _ = _tiny_run(tmp_path, small_npz, "eager", *short)
    assert code == code_eager == 0 and config["train"]["compile"] is True
    assert [r["iteration"] for r in compiled] == [r["iteration"] for r in eager] == [1, 2, 3]
    for a, b in zip(eager, compiled, strict=True):
        for key in ("d_loss", "g_loss", "d_x", "d_g_z"):
            assert abs(a[key] - b[key]) < 1e-4, (key, a, b)  # the same maths, fused differently
    _, G_compiled, _ = load_generator(str(tmp_path / "compiled" / "generator.safetensors"))
    _, G_eager, _ = load_generator(str(tmp_path / "eager" / "generator.safetensors"))
    for (name, a), b in zip(G_eager.state_dict().items(), G_compiled.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5), name
    assert len({r["d_loss"] for r in eager}) == 3  # the runs did learn: each step's loss differs
