"""Where and how the training step runs: device choice, back-end settings, threads, precision, memory format and
torch.compile. The model FLOPs that 'auto' precision weighs are counted in `mnist_gan.gan.flops`.

Nothing here changes what a run learns beyond rounding: bf16 autocast computes matrix products in bfloat16 with
fp32 accumulation while weights, optimizer state, losses and D's probabilities stay fp32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import warnings

import torch
from torch import nn

from mnist_gan.errors import MnistGanError

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


# --------------------------------------------------------------------------------------------- devices

def resolve_device(name: str) -> torch.device:
    """Map 'auto' to cuda when a GPU is present, else cpu; check an explicit choice exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MnistGanError(f"--device {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise MnistGanError(f"--device {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MnistGanError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MnistGanError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return device


def configure_backend(device: torch.device) -> None:
    """Per-process switches that make the step faster without changing its maths beyond rounding.

    CUDA: TF32 tensor-core matmuls and convolutions for whatever still runs in fp32, and cuDNN autotuning (the
    shapes never change: every batch is full). CPU: flush denormals, which tanh/sigmoid tails otherwise produce
    and which run far slower than normal numbers.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_flush_denormal(True)


def configure_threads() -> int:
    """One intra-op thread per physical core unless OMP_NUM_THREADS says otherwise; returns the count in use.

    This is PyTorch's own default for one process, made explicit; torchrun starting several processes on one
    machine sets OMP_NUM_THREADS=1 for each, so they do not oversubscribe the cores.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(_physical_cores())
    return torch.get_num_threads()


def _physical_cores() -> int:
    try:
        cores = int(_cpu_capability().get("num_physical_cores", 0))
    except (TypeError, ValueError):
        cores = 0
    return cores or os.cpu_count() or 1


# --------------------------------------------------------------------------------------------- precision

def _cpu_capability() -> dict:
    try:
        return dict(torch._C._cpu._get_cpu_capability())
    except (AttributeError, RuntimeError):  # older or unusual builds: read the kernel's flags instead
        return {}


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 matrices in hardware: x86 AVX512-BF16 or AMX-BF16, Arm BF16.

    Without such instructions oneDNN converts bf16 to fp32 around every product, which is slower than staying in
    fp32, so 'auto' precision picks fp32 there. A capability check rather than a timing: it costs nothing,
    and a timing taken at start-up on a shared machine is noisy (benchmarks/speed.py shows the actual gap).
    """
    capability = _cpu_capability()
    if capability:
        if capability.get("avx512_bf16") or capability.get("amx_bf16"):
            return True
        if capability.get("architecture") == "x86_64":
            return False
    flags = _cpuinfo_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


# Below this many model FLOPs per training step (per image, times the images of one step) a CPU step is bound by
# per-operation overhead, not arithmetic: bf16's casts then cost about as much as its faster products save. The
# threshold sits between the recommended networks at batch 32 (1.0 GFLOP a step) and at batch 64; bf16 against
# fp32 for each preset and batch is in `python -m benchmarks.speed --save`'s log (docs/performance.md cites it).
# Below the threshold fp32 is the safe choice: at worst a little slower, and no rounding to watch.
CPU_BF16_MIN_FLOPS_PER_STEP = 1.5e9
# On a GPU, eager steps of every preset here (up to 566 MFLOP) run at kernel-launch speed: an H200 ran bf16
# autocast at 0.75-0.86x of fp32 (TF32), its casts being extra launches. Compiled with CUDA graphs, the casts
# fuse into other kernels and a per-image threshold like the CPU's former one applies: seed bf16 1.39x fp32,
# recommended 0.79x (benchmarks/gpu_check.sh, benchmarks/results/gpu_check_h200.log).
CUDA_EAGER_BF16_MIN_FLOPS_PER_IMAGE = 10e9
CUDA_COMPILED_BF16_MIN_FLOPS_PER_IMAGE = 100e6


def resolve_precision(name: str, device: torch.device, flops_per_image: float | None = None,
                      compiled: bool = False, batch_size: int = 1) -> str:
    """Return 'fp32' or 'bf16' for --precision `name` on `device`.

    'auto' is bf16 where the hardware multiplies bf16 natively, except for steps too small to gain from it (when
    `flops_per_image`, from mnist_gan.gan.flops.training_flops_per_image, is given): on a CPU below
    CPU_BF16_MIN_FLOPS_PER_STEP in a step of `batch_size` images; on a GPU below CUDA_EAGER_BF16_MIN_FLOPS_PER_IMAGE
    per image in an eager step, below CUDA_COMPILED_BF16_MIN_FLOPS_PER_IMAGE in a compiled one.
    """
    if name not in PRECISIONS:
        raise MnistGanError(f"--precision must be one of {', '.join(PRECISIONS)}; got {name!r}")
    if device.type == "cuda":
        threshold = CUDA_COMPILED_BF16_MIN_FLOPS_PER_IMAGE if compiled else CUDA_EAGER_BF16_MIN_FLOPS_PER_IMAGE
        small = flops_per_image is not None and flops_per_image < threshold
    else:
        small = flops_per_image is not None and flops_per_image * batch_size < CPU_BF16_MIN_FLOPS_PER_STEP
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if name == "bf16" and not supported:
            raise MnistGanError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; "
                                "use --precision fp32 or auto")
        return name if name != "auto" else ("bf16" if supported and not small else "fp32")
    if name == "auto":
        return "bf16" if cpu_has_native_bf16() and not small else "fp32"
    if name == "bf16" and not cpu_has_native_bf16():
        warnings.warn("--precision bf16 on a CPU without native bf16 instructions: expect it to be slower "
                      "than fp32", stacklevel=2)
    return name


def autocast(device: torch.device, precision: str):
    """The context G's and D's forward passes run in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------- memory format

def has_convolutions(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in module.modules())


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store conv weights channels-last (NHWC), the layout oneDNN and cuDNN convolve fastest in."""
    return module.to(memory_format=torch.channels_last) if has_convolutions(module) else module


# --------------------------------------------------------------------------------------------- compile

@functools.cache
def compile_available() -> tuple[bool, str]:
    """Whether torch.compile can build kernels here; (False, why) when it cannot (no compiler, no inductor).

    Checked once per process by compiling a one-line function (a few seconds)."""
    try:
        compiled = torch.compile(lambda x: torch.tanh(x) * 2 + 1, dynamic=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled(torch.ones(8))
    except Exception as error:  # the toolchain fails in many ways: missing gcc, headers, triton ...
        reason = str(error).strip().splitlines()
        return False, f"{type(error).__name__}: {reason[0][:200] if reason else 'no detail'}"
    return True, ""


def maybe_compile(modules: list[nn.Module], enabled: bool, device: torch.device | None = None) -> list[nn.Module]:
    """Return torch.compile'd wrappers of `modules` (which keep sharing their weights), or the modules as
    they are when compiling is off or impossible here, with one warning saying why.

    On CUDA the wrappers also replay CUDA graphs ("reduce-overhead"): every batch has the same shape, and the
    small networks here are otherwise bound by kernel-launch latency."""
    if not enabled:
        return modules
    ok, reason = compile_available()
    if not ok:
        logger.warning(f"warning: --compile: torch.compile does not work here ({reason}); training eagerly")
        return modules
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a graph that fails to compile later runs eagerly, with a warning
    mode = "reduce-overhead" if device is not None and device.type == "cuda" else None
    return [torch.compile(module, dynamic=False, mode=mode) for module in modules]
