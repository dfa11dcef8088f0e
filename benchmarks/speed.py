"""Training speed against this machine's limit: images/s, model FLOP/s as a share of the measured matmul peak,
and the speed-up over a plain fp32 eager step, all measured in one run. Then the bf16 numerics guard.

    flock /tmp/cpu.lock python -m benchmarks.speed --profile --guard-iterations 1500 --save

--save appends everything printed to stdout to benchmarks/results/speed_cpu_YYYY-MM-DD.txt, under a header naming
the date, commit, CPU, torch version and command (benchmarks/record.py). Run it on an otherwise idle machine.

Cases: the `seed` preset at batch 32 and 128, and the recommended preset at its default batch (`seed` at batch
64 when no recommended preset exists). Variants: the real training loop (`mnist_gan.training.loop.train`) in fp32 and
bf16, eager and compiled, its images/s the median of its logged one-iteration windows past the warm-up; and
"plain", the same step (`mnist_gan.gan.step.GanStep`) with the fast path's choices undone (fp32, NCHW, for-loop
optimizer, no autocast, denormals kept, `seed`'s G upsampling before it convolves), its median iteration timed
here. Medians, because other jobs may share the CPU.
Peak: a 2048^3 matmul (8192^3 on a GPU) in fp32 and in bf16, timed in the same run. FLOPs per image come from
the layer shapes (`mnist_gan.gan.flops.training_flops_per_image`). Numerics guard: the same preset, seed and iterations trained in
fp32 and in bf16, compared by classifier-FID (`mnist_gan.evaluation.metrics`); bf16 must be within 10% of fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import record
from mnist_gan import preset
from mnist_gan.data.datasets import load_dataset
from mnist_gan.data.images import to_float
from mnist_gan.gan.device import compile_available, cpu_has_native_bf16, resolve_device, resolve_precision
from mnist_gan.gan.flops import training_flops_per_image
from mnist_gan.gan.models import build_discriminator, build_generator, upsample_first
from mnist_gan.gan.step import GanStep
from mnist_gan.settings.config import PRESETS, RunConfig
from mnist_gan.training.loop import train

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int | None = None, seconds: float = 3.0) -> float:
    """FLOP/s of an n x n x n matrix product in `dtype`, best of repeated timings over about `seconds`
    (n: 2048 on a CPU, 8192 on a GPU, which a smaller product cannot fill)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    synchronize(device)
    best, spent = 0.0, 0.0
    while spent < seconds:
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        elapsed = time.perf_counter() - start
        spent += elapsed
        best = max(best, 2 * n**3 / elapsed)
    return best


def plain_step_rate(config, dataset, device: torch.device, warmup: int, iterations: int,
                    window: int = 1) -> float:
    """Images/s of the real step (`mnist_gan.gan.step.GanStep`, EMA included) with the fast path's choices undone:
    fp32, NCHW, for-loop SGD/Adam, no autocast, denormals kept, `seed`'s G upsampling before it convolves."""
    config = RunConfig.from_dict(config.to_dict())
    config.train.precision, config.train.compile = "fp32", False
    step = GanStep(config, device)
    torch.set_flush_denormal(False)
    for module in (step.G, step.D, step.G_ema):
        if module is not None:
            module.to(memory_format=torch.contiguous_format)  # the same parameters, stored NCHW
            upsample_first(module)
    t = config.train
    for name, module, lr in (("optimizer_g", step.G, t.lr_g), ("optimizer_d", step.D, t.lr_d)):
        if t.optimizer == "sgd":
            optimizer = torch.optim.SGD(module.parameters(), lr=lr or t.lr, momentum=t.momentum,
                                        nesterov=t.nesterov, foreach=False)
        else:
            optimizer = torch.optim.Adam(module.parameters(), lr=lr or t.lr, betas=(t.beta1, t.beta2), foreach=False)
        setattr(step, name, optimizer)  # the plain for-loop update instead of the fused kernel
    images, batch_size = dataset.images.to(device), t.batch_size

    def step_at(index: int) -> None:
        start = (index * batch_size) % (len(images) - batch_size)
        step(to_float(images[start:start + batch_size]))  # (B, 1, 28, 28), NCHW

    for index in range(warmup):
        step_at(index)
    seconds = []
    for index in range(0, iterations, window):
        synchronize(device)
        start = time.perf_counter()
        for offset in range(window):
            step_at(warmup + index + offset)
        synchronize(device)
        seconds.append((time.perf_counter() - start) / window)
    return batch_size / statistics.median(seconds)


def loop_rate(case, precision: str, compiled: bool, dataset, warmup: int, iterations: int, out: Path,
              window: int = 1) -> float:
    """Images/s of the real training loop: the median of its own logged `window`-iteration windows past
    `warmup` (longer windows on a GPU, where reading the losses every iteration would cost more than a step)."""
    config = RunConfig.from_dict(case.to_dict())
    config.train.precision, config.train.compile = precision, compiled
    config.train.iterations, config.train.log_every = warmup + iterations, window
    config.train.sample_every = config.train.checkpoint_every = 0
    if compiled:
        import torch._dynamo

        torch._dynamo.reset()  # each variant compiles afresh, not into the previous variants' cache
    with contextlib.redirect_stderr(io.StringIO()):
        history = train(config, out, overwrite=True, dataset=dataset, progress=False).history
    return statistics.median(r["images_per_s"] for r in history[-(iterations // window):])


def epoch_seconds(case, dataset, out: Path) -> tuple[float, float]:
    """One epoch of the real loop at the preset's defaults (auto precision, eager): wall-clock seconds of the
    whole train() call (set-up, first grid and final checkpoint included), and the seconds the epoch's images
    take at the median logged rate."""
    config = RunConfig.from_dict(case.to_dict())
    config.train.epochs, config.train.iterations, config.train.log_every = 1, None, 10
    config.train.sample_every = config.train.checkpoint_every = 0
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        history = train(config, out, overwrite=True, dataset=dataset, progress=False).history
    wall = time.perf_counter() - started
    images = len(dataset) // config.train.batch_size * config.train.batch_size
    return wall, images / statistics.median(r["images_per_s"] for r in history)


def profile_loop(case, dataset, out: Path, rows: int = 12, iterations: int = 4) -> str:
    """torch.profiler's table of the ops that take the time in a few iterations of the real loop."""
    from torch.profiler import ProfilerActivity, profile

    config = RunConfig.from_dict(case.to_dict())
    config.train.iterations, config.train.log_every = iterations, 2
    config.train.sample_every = config.train.checkpoint_every = 0
    with contextlib.redirect_stderr(io.StringIO()):
        train(config, out, overwrite=True, dataset=dataset, progress=False)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train(config, out, overwrite=True, dataset=dataset, progress=False)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def numerics_guard(name: str, batch_size: int, iterations: int, dataset, out: Path) -> str:
    """Train fp32 and bf16 with the same preset, seed and iterations; compare classifier-FID."""
    if importlib.util.find_spec("mnist_gan.evaluation.evaluator") is None:
        return "numerics guard: not run: mnist_gan.evaluation.evaluator (classifier-FID) is not in this checkout yet"
    from mnist_gan.evaluation.evaluator import evaluate_generator

    fids = {}
    for precision in ("fp32", "bf16"):
        config = preset(name)
        config.train.batch_size, config.train.iterations, config.train.precision = batch_size, iterations, precision
        config.train.sample_every, config.train.checkpoint_every, config.train.log_every = 0, 0, 50
        with contextlib.redirect_stderr(io.StringIO()):
            result = train(config, out / f"guard-{precision}", overwrite=True, dataset=dataset, progress=False)
        from mnist_gan.run.checkpoint import load_generator

        model_config, G, _ = load_generator(str(result.checkpoint))
        fids[precision] = evaluate_generator(G, model_config, dataset, n=2000, seed=0)["fid"]
    ratio = fids["bf16"] / fids["fp32"]
    verdict = "PASS" if ratio <= 1.10 else "FAIL"
    return (f"numerics guard ({name}, batch {batch_size}, {iterations} iterations, seed 0): classifier-FID "
            f"fp32 {fids['fp32']:.2f}, bf16 {fids['bf16']:.2f}, bf16/fp32 {ratio:.3f} -> {verdict} (limit 1.10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=3, help="iterations before timing (compilation included)")
    parser.add_argument("--iterations", type=int, default=9, help="timed iterations per variant (median taken)")
    parser.add_argument("--window", type=int, default=1, help="iterations per timed window (10 suits a GPU)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variants")
    parser.add_argument("--compiled-only", action="store_true", help="measure plain and the compiled variants only")
    parser.add_argument("--guard-iterations", type=int, default=600, help="0 skips the numerics guard")
    parser.add_argument("--guard-batch", type=int, default=32, help="batch size of the numerics guard runs")
    parser.add_argument("--guard-only", action="store_true", help="run only the numerics guard")
    parser.add_argument("--profile", action="store_true",
                        help="print profiles of seed at batch 128 in bf16 and of the recommended preset")
    parser.add_argument("--data", help="training images (default: ../shared/data/mnist, else mnist)")
    parser.add_argument("--epoch", action="store_true", help="also time one epoch of each case at its defaults")
    parser.add_argument("--cases", nargs="+", metavar="PRESET[:BATCH]",
                        help="measure only these presets (default: seed:32 seed:128 and the recommended preset)")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"),
                        help="precisions to time (default: fp32, and bf16 where the device multiplies it natively: "
                             "emulated bf16 on an older CPU runs 10-20x slower and says nothing of interest)")
    parser.add_argument("--save", action="store_true", help="also write the output to benchmarks/results/")
    parser.add_argument("--note", default="", help="a line for the header (e.g. that the machine was idle)")
    args = parser.parse_args()
    with record.saved_output("speed", args.save, args.note):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    data = args.data or (str(SHARED_MNIST) if SHARED_MNIST.exists() else "mnist")
    config = preset("seed")
    config.data.data = data
    with contextlib.redirect_stderr(io.StringIO()):
        dataset = load_dataset(config.data)
    recommended = next((n for n in ("recommended", "dcgan") if n in PRESETS), None)
    cases = [("seed", 32), ("seed", 128)]
    cases.append((recommended, preset(recommended).train.batch_size) if recommended else ("seed", 64))
    if args.cases:
        cases = [(name, int(batch) if batch else preset(name).train.batch_size)
                 for name, _, batch in (case.partition(":") for case in args.cases)]
    compiled_ok, why = (False, "--no-compile") if args.no_compile else compile_available()
    modes = ([] if args.compiled_only else [False]) + ([True] if compiled_ok else [])  # compiled or not
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        (dict(torch._C._cpu._get_cpu_capability()).get("cpu_name", "CPU") if hasattr(torch._C, "_cpu") else "CPU")
    native_bf16 = cpu_has_native_bf16() if device.type == "cpu" else torch.cuda.is_bf16_supported()
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"native bf16: {native_bf16}, "
          f"data: {len(dataset)} images from {dataset.source}")
    if args.guard_only:
        with tempfile.TemporaryDirectory() as tmp:
            print(numerics_guard("seed", args.guard_batch, args.guard_iterations, dataset, Path(tmp)))
        return
    if not recommended:
        print("no recommended preset in this checkout: the third case is seed at batch 64")
    if not compiled_ok:
        print(f"compiled variants skipped: {why}")
    precisions = args.precisions or (["fp32", "bf16"] if native_bf16 else ["fp32"])
    if "bf16" not in precisions:
        print("bf16 variants skipped: " + ("--precisions" if args.precisions else "no native bf16 on this device"))

    torch.set_flush_denormal(False)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peak = {precision: matmul_peak(dtypes[precision], device) for precision in precisions}

    header = (f"{'preset':<12} {'batch':>5} {'variant':<14} {'s/iter':>8} {'images/s':>9} {'GFLOP/s':>8} "
              f"{'% peak':>7} {'speed-up':>8}")
    lines, epochs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for preset_name, batch_size in cases:
            case = preset(preset_name)
            case.train.device, case.train.batch_size = args.device, batch_size
            torch.manual_seed(0)
            model = case.model  # counted as the step counts them (a packed D's FLOPs shared by its pack)
            flops = training_flops_per_image(build_generator(model), build_discriminator(model), model.z_dim,
                                             model.conditional, channels=model.channels, pack=model.pack)["total"]
            auto = [resolve_precision("auto", device, flops, compiled=c, batch_size=batch_size) for c in (False, True)]
            print(f"{preset_name} batch {batch_size}: {flops / 1e6:.1f} MFLOP per trained image; --precision auto "
                  f"picks {auto[0]} eager, {auto[1]} compiled")
            rows = [("plain fp32", "fp32",
                     plain_step_rate(case, dataset, device, args.warmup, args.iterations, args.window))]
            for precision in precisions:
                for compiled in modes:
                    variant = f"{precision} {'compiled' if compiled else 'eager'}"
                    try:
                        rate = loop_rate(case, precision, compiled, dataset, args.warmup, args.iterations,
                                         out / "run", args.window)
                    except Exception as error:  # report it and measure the other variants
                        print(f"  {variant}: FAILED: {type(error).__name__}: {str(error)[:300]}")
                        continue
                    rows.append((variant, precision, rate))
                    print(f"  {variant}: {rate:.1f} images/s", file=sys.stderr)
            lines += [(preset_name, batch_size, variant, precision, rate, flops, rows[0][2])
                      for variant, precision, rate in rows]
            if args.epoch:
                wall, steady = epoch_seconds(case, dataset, out / "epoch")
                epochs.append(f"{preset_name} batch {batch_size}, {auto[0]} eager: one epoch of {len(dataset)} "
                              f"images: {steady:.2f} s of training steps, {wall:.2f} s for the whole train() call")
        # The peak again at the end, keeping the better figure: other jobs sharing the CPU only ever lower it.
        peak = {precision: max(peak[precision], matmul_peak(dtypes[precision], device)) for precision in precisions}
        print("measured matmul peak (best of start and end): "
              + ", ".join(f"{precision} {flops / 1e9:.1f} GFLOP/s" for precision, flops in peak.items()))
        print(header)
        for preset_name, batch_size, variant, precision, rate, flops, plain in lines:
            achieved = rate * flops
            print(f"{preset_name:<12} {batch_size:>5} {variant:<14} {batch_size / rate:>8.4f} {rate:>9.1f} "
                  f"{achieved / 1e9:>8.1f} {100 * achieved / peak[precision]:>6.1f}% {rate / plain:>7.2f}x")
        for line in epochs:
            print(line)
        if args.profile:
            case = preset("seed")
            case.train.device, case.train.batch_size, case.train.precision = args.device, 128, "bf16"
            print("\nprofile: seed, batch 128, bf16 eager, 4 iterations of the real loop (set-up included)")
            print(profile_loop(case, dataset, out / "profile"))
            if recommended:
                case = preset(recommended)
                case.train.device = args.device
                print(f"\nprofile: {recommended}, batch {case.train.batch_size}, auto precision, eager, 40 "
                      "iterations of the real loop (set-up included)")
                print(profile_loop(case, dataset, out / "profile", iterations=40))
        if args.guard_iterations:
            print(numerics_guard("seed", args.guard_batch, args.guard_iterations, dataset, out))


if __name__ == "__main__":
    main()
