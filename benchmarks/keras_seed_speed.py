"""The `seed` preset against the tutorial's own Keras/TensorFlow code, timed back to back on this machine.

    python -m benchmarks.keras_seed_speed --keras-python .venv-keras/bin/python --save

The Keras code and its timer are ../shared/bench/keras_seed/ (its README says how to make the TensorFlow
environment, which this project does not install). Each round times the Keras code (`seed_dcgan.py bench`: the
median wall time of one iteration, a D update on a real and a fake batch then a G update, after its warm-up) and
then this project's real training loop on the same batch size (the `seed` preset, `--precision auto`, the median of
its logged one-iteration windows, benchmarks.speed.loop_rate); rounds alternate, so a slow spell of the machine
touches both. Prints each round's seconds per iteration and the ratio, then the medians. --save appends the output
to benchmarks/results/keras_seed_speed_cpu_YYYY-MM-DD.txt under a header naming the date, commit, CPU and torch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch

from benchmarks import record
from benchmarks.speed import loop_rate
from mnist_gan import preset
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.gan.device import cpu_has_native_bf16, resolve_device, resolve_precision
from mnist_gan.gan.flops import training_flops_per_image
from mnist_gan.gan.models import build_discriminator, build_generator

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def keras_seconds(python: str, work: Path, batch: int, iterations: int, mnist: Path) -> float:
    """Median seconds per iteration of the Keras code (copied into `work`) at `batch`."""
    env = dict(os.environ, MNIST_DIR=str(mnist))
    done = subprocess.run([python, "seed_dcgan.py", "bench", "--batch", str(batch), "--iters", str(iterations),
                           "--name", f"b{batch}"], cwd=work, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the Keras code failed:\n{done.stderr[-2000:]}")
    return json.loads((work / f"bench_b{batch}.json").read_text())["median_s_per_iter"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keras-python", required=True, help="python of an environment with tensorflow and keras")
    parser.add_argument("--keras-code", type=Path, default=SHARED / "bench" / "keras_seed")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "mnist", help="MNIST IDX directory")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()

    config = preset("seed")
    config.train.batch_size = args.batch
    G, D = build_generator(config.model), build_discriminator(config.model)
    flops = training_flops_per_image(G, D, config.model.z_dim)["total"]
    precision = resolve_precision("auto", resolve_device("cpu"), flops, batch_size=args.batch)
    dataset = load_idx_directory(args.data)
    with record.saved_output("keras_seed_speed", args.save), tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch) / "keras_seed"
        shutil.copytree(args.keras_code, work)
        print(f"seed preset at batch {args.batch}, precision {precision} (native bf16: {cpu_has_native_bf16()}), "
              f"{flops / 1e6:.0f} MFLOP per image as computed; {torch.get_num_threads()} threads; "
              f"{args.iterations} timed iterations per side and round")
        print("round  keras s/iter  mnist-gan s/iter  speed-up")
        ratios, keras_all, ours_all = [], [], []
        for round_index in range(args.rounds):
            keras = keras_seconds(args.keras_python, work, args.batch, args.iterations, args.data)
            ours = args.batch / loop_rate(config, precision, False, dataset, warmup=3, iterations=args.iterations,
                                          out=Path(scratch) / "run")
            keras_all.append(keras), ours_all.append(ours), ratios.append(keras / ours)
            print(f"{round_index + 1:5d}  {keras:12.3f}  {ours:16.3f}  {keras / ours:7.2f}x", flush=True)
        print(f"median {statistics.median(keras_all):12.3f}  {statistics.median(ours_all):16.3f}  "
              f"{statistics.median(ratios):7.2f}x (median of the rounds' ratios)")


if __name__ == "__main__":
    main()
