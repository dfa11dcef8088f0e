"""The `mnist-gan` command: a thin layer over the Python API. The only module that reads argv.

Training flags are made from the config dataclasses' fields, so the CLI, the Python API and `config.json`
share one set of names and defaults (the preset's). Results go to stdout, progress and notes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from pathlib import Path

from mnist_gan.config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig, preset
from mnist_gan.errors import MnistGanError

SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _field_type(annotation) -> type:
    """The concrete type behind `int | None` and friends."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _positive_or_none(kind: type):
    def parse(text: str):
        if text.lower() in ("none", ""):
            return None
        return kind(text)
    parse.__name__ = kind.__name__
    return parse


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, e.g. TrainConfig.batch_size -> --batch-size; unset flags keep the preset's value."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} settings (defaults: the preset's)")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            kind = _field_type(hints[f.name])
            help_text = f.metadata.get("help", "") + (f" (seed: {f.default})" if f.default is not None else "")
            kwargs = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS, "help": help_text}
            if kind is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            else:
                nullable = hints[f.name] is not kind
                group.add_argument(flag, type=_positive_or_none(kind) if nullable else kind,
                                   choices=f.metadata.get("choices"), metavar=f.name.upper(), **kwargs)


def config_from_args(args: argparse.Namespace) -> tuple[RunConfig, dict[str, object]]:
    """The preset named by --preset with every flag the user gave applied; also returns those overrides."""
    config = preset(args.preset)
    overrides = {key: value for key, value in vars(args).items() if "." in key}
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(config, section), name, value)
    return config, overrides


class _Parser(argparse.ArgumentParser):
    """A usage error is one line on stderr and exit status 2, like every other user error (--help shows usage)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnist-gan", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a GAN", description="Train a GAN and write a run directory.",
                                usage="mnist-gan train [--preset NAME] [--out DIR | --resume DIR] [options]")
    train.add_argument("--preset", default="seed", choices=list(PRESETS), help="named configuration (default: seed)")
    train.add_argument("--out", help="run directory (default: runs/<preset>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (notes still go to stderr)")
    add_config_flags(train)

    generate = commands.add_parser("generate", help="draw samples from a trained generator",
                                   description="Draw samples from a checkpoint, a run directory or generator.safetensors.")
    generate.add_argument("checkpoint", help="a .ckpt file, a run directory, or a generator.safetensors")
    generate.add_argument("-n", "--n", type=int, default=64, help="number of images (default: 64)")
    generate.add_argument("--out", help="output path (default: generated.png, generated.npz or generated/)")
    generate.add_argument("--format", choices=["png", "npz", "dir"], default="png",
                          help="png: one grid; npz: uint8 array (N, 28, 28) under 'images'; dir: one PNG per image")
    generate.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    generate.add_argument("--nice", action="store_true",
                          help="draw 20x as many and keep those the discriminator scores highest")
    generate.add_argument("--nrow", type=int, help="images per grid row (default: square)")
    generate.add_argument("--overwrite", action="store_true", help="replace an existing output")
    generate.add_argument("--digit", type=int, help="conditional models: draw only this digit (default: 0-9 in turn)")

    interpolate = commands.add_parser("interpolate", help="walk between latent points",
                                      description="Write a strip (PNG) or animation (GIF) of G's images along a "
                                                  "path between random noise vectors (slerp for Gaussian z, "
                                                  "straight lines for uniform z).")
    interpolate.add_argument("checkpoint", help="a .ckpt file, a run directory, or a generator.safetensors")
    interpolate.add_argument("--out", default="interpolation.png", help="a .png strip or a .gif animation "
                             "(default: interpolation.png)")
    interpolate.add_argument("--steps", type=int, default=10, help="images along each walk (default: 10)")
    interpolate.add_argument("--rows", type=int, default=1, help="walks, one per row (default: 1)")
    interpolate.add_argument("--seed", type=int, default=0, help="noise seed of the end points (default: 0)")
    interpolate.add_argument("--from-digit", type=int, help="conditional models: the digit to start from")
    interpolate.add_argument("--to-digit", type=int, help="conditional models: the digit to end at")
    interpolate.add_argument("--scale", type=int, default=2, help="pixel enlargement of the output (default: 2)")
    interpolate.add_argument("--overwrite", action="store_true", help="replace an existing output")

    evaluate = commands.add_parser(
        "evaluate", help="measure sample quality (FID, KID, precision/recall, ...)",
        description="Score samples against held-out real images, in the feature space of a classifier trained on "
                    "the data set (trained once and cached). Prints a table, or one JSON object with --json.")
    evaluate.add_argument("source", help="a .ckpt, a run directory, a generator.safetensors, or an .npz/.npy of "
                                         "images ((N, 28, 28) uint8, or float in [-1, 1] or [0, 1])")
    evaluate.add_argument("-n", "--n", type=int, help="samples to draw from a generator (default: 10000); "
                                                      "for an image file, score its first N (default: all)")
    evaluate.add_argument("--seed", type=int, default=0, help="noise and subset seed (default: 0)")
    evaluate.add_argument("--inception", action="store_true",
                          help="also report Inception FID (needs torch-fidelity and its downloadable weights)")
    add_metric_data_flags(evaluate)

    classifier = commands.add_parser(
        "classifier", help="train or inspect the feature classifier the metrics use",
        description="Train (once, then cached) or inspect the data set's feature classifier; print its accuracy "
                    "on held-out images.")
    classifier.add_argument("--retrain", action="store_true", help="train again even if a cached one matches")
    add_metric_data_flags(classifier)
    return parser


def add_metric_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="mnist", help="the real data set: mnist, fashion-mnist, or a path "
                                                        "(default: mnist)")
    parser.add_argument("--cache-dir", help="data and classifier cache (default: $MNIST_GAN_CACHE, then "
                                            "~/.cache/mnist-gan)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def cmd_train(args: argparse.Namespace) -> int:
    from mnist_gan.training import resume, train

    config, overrides = config_from_args(args)
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise MnistGanError("--resume RUN_DIR continues that directory; do not also pass a different --out")
        ignored = sorted(k.split(".")[1] for k in overrides if k not in ("train.iterations", "train.epochs"))
        if ignored:
            print(f"mnist-gan: --resume keeps the run's own settings; ignoring {', '.join(ignored)}", file=sys.stderr)
        # Without --iterations/--epochs the run keeps its own length, as "Continue with: ..." promises.
        if {"train.iterations", "train.epochs"} & set(overrides):
            result = resume(args.resume, config.train.iterations, epochs=config.train.epochs,
                            progress=not args.no_progress)
        else:
            result = resume(args.resume, progress=not args.no_progress)
    else:
        result = train(config, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"run directory: {result.run_dir}")
        print(f"checkpoint: {result.checkpoint}")
        print(f"samples: {result.run_dir / 'samples'}")
    return 130 if result.interrupted else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from mnist_gan.checkpoint import load_generator
    from mnist_gan.sample import generate, generate_nice, save_images

    if args.n <= 0:
        raise MnistGanError(f"-n must be positive, got {args.n}")
    if args.nrow is not None and args.nrow <= 0:
        raise MnistGanError(f"--nrow must be positive, got {args.nrow}")
    out = Path(args.out or {"png": "generated.png", "npz": "generated.npz", "dir": "generated"}[args.format])
    if out.exists() and not args.overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise MnistGanError(f"{out}: already exists; pass --overwrite or another --out")
    if args.overwrite and out.is_dir() and any(out.iterdir()):
        raise MnistGanError(f"{out}: refusing to replace a non-empty directory; choose another --out")
    model_config, G, D = load_generator(args.checkpoint)
    if args.nice:
        images, scores = generate_nice(G, D, model_config, args.n, seed=args.seed, digit=args.digit)
        print(f"kept the best {args.n} of {args.n * 20} by D: mean D score {scores.mean():.4f} "
              f"(range {scores.min():.4f}-{scores.max():.4f})", file=sys.stderr)
    else:
        images = generate(G, model_config, args.n, seed=args.seed, digit=args.digit)
    print(save_images(images, out, args.format, nrow=args.nrow))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from mnist_gan.data import load_dataset
    from mnist_gan.device import resolve_device
    from mnist_gan.metrics import Evaluator, format_table, inception_fid, load_images, require_inception

    source = Path(args.source)
    if not source.exists():
        raise MnistGanError(f"{source}: no such file or directory")
    if args.n is not None and args.n <= 0:
        raise MnistGanError(f"-n must be positive, got {args.n}")
    if args.inception:
        require_inception()  # fail before the long work, not after
    device = resolve_device(args.device)
    if source.is_file() and source.suffix in (".npz", ".npy"):
        images = load_images(source, args.n)
    else:
        from mnist_gan.checkpoint import load_generator
        from mnist_gan.sample import generate

        model_config, G, _ = load_generator(source)
        images = generate(G.to(device), model_config, args.n or 10_000, seed=args.seed, device=device).clamp(-1, 1)
    dataset = load_dataset(DataConfig(data=args.data, cache_dir=args.cache_dir))
    evaluator = Evaluator.for_dataset(dataset, args.cache_dir, device=device)
    result = {"source": str(source), **evaluator.evaluate(images, seed=args.seed)}
    if not (source.is_file() and source.suffix in (".npz", ".npy")) and model_config.conditional:
        from mnist_gan.metrics import conditional_accuracy

        result.update(conditional_accuracy(evaluator, G, model_config, args.n or 10_000, seed=args.seed))
    if args.inception:
        result["inception_fid"], result["inception_backend"] = inception_fid(images, evaluator.reference_images)
    print(json.dumps(result) if args.json else format_table(result, f"mnist-gan evaluate {source}"))
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    import json

    from mnist_gan.classifier import accuracy, get_classifier, split
    from mnist_gan.data import load_dataset
    from mnist_gan.device import resolve_device

    dataset = load_dataset(DataConfig(data=args.data, cache_dir=args.cache_dir))
    classifier = get_classifier(dataset, args.cache_dir, retrain=args.retrain, device=resolve_device(args.device))
    data = split(dataset)
    info = {"path": str(classifier.path), "fingerprint": classifier.fingerprint, "data": dataset.source,
            "n_train": classifier.n_train, "heldout": data.description, "n_heldout": classifier.n_heldout,
            "heldout_accuracy": accuracy(classifier, data.heldout_images, data.heldout_labels),
            "training_seconds": classifier.seconds}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"classifier: {info['path']}\nfingerprint: {info['fingerprint']}\ndata: {info['data']}\n"
              f"trained on: {info['n_train']} images ({info['training_seconds']:.0f}s)\n"
              f"held-out: {info['heldout']}\nheld-out accuracy: {100 * info['heldout_accuracy']:.2f}%")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from mnist_gan.checkpoint import load_generator
    from mnist_gan.sample import interpolate, save_interpolation

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise MnistGanError(f"{out}: --out must end in .png (a strip) or .gif (an animation)")
    if out.exists() and not args.overwrite:
        raise MnistGanError(f"{out}: already exists; pass --overwrite or another --out")
    if args.scale < 1:
        raise MnistGanError(f"--scale must be at least 1, got {args.scale}")
    model_config, G, _ = load_generator(args.checkpoint)
    images = interpolate(G, model_config, steps=args.steps, rows=args.rows, seed=args.seed,
                         from_digit=args.from_digit, to_digit=args.to_digit)
    print(save_interpolation(images, out, scale=args.scale))
    return 0


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "interpolate": cmd_interpolate, "evaluate": cmd_evaluate,
            "classifier": cmd_classifier}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 a user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MnistGanError as error:
        print(f"mnist-gan: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnist-gan: interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # the file system said no (full disk, permissions) where no check caught it first
        where = f"{error.filename}: " if error.filename else ""
        print(f"mnist-gan: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
