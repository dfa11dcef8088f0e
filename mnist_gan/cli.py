"""The `mnist-gan` command: a thin layer over the Python API. The only module that reads argv.

Training flags are made from the config dataclasses' fields, so the CLI, the Python API and `config.json`
share one set of names and defaults (the preset's). Results go to stdout, progress and notes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import types
import typing
import warnings
from pathlib import Path

import mnist_gan
from mnist_gan.config import (
    MAX_COUNT,
    MAX_SEED,
    PRESETS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    preset,
)
from mnist_gan.errors import MnistGanError, quote, shorten
from mnist_gan.files import check_writable

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
    config = preset(args.preset or "seed")
    overrides = {key: value for key, value in vars(args).items() if "." in key}
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(config, section), name, value)
    return config, overrides


class _Parser(argparse.ArgumentParser):
    """A usage error is one line on stderr and exit status 2, like every other user error (--help shows usage)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {shorten(message)}; see {self.prog} --help\n")


MAX_EVALUATE_SAMPLES = 100_000  # twice the 50,000 of the FID's authors; images and features are held in memory


def integer(low: int = -MAX_COUNT - 1, high: int = MAX_COUNT, why: str = ""):
    """An argparse type: an integer in low..high (by default, any that fits in 64 bits, as torch needs)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also a number too long to convert
            raise argparse.ArgumentTypeError(f"expected an integer, got {quote(text)}") from None
        if not low <= value <= high:
            bounds = "fit in 64 bits" if (low, high) == (-MAX_COUNT - 1, MAX_COUNT) else f"be in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must {bounds}{why}, got {quote(value)}")
        return value
    parse.__name__ = "int"
    return parse


seed_type = integer(0, MAX_SEED, " (the seeds numpy accepts)")


class _PrintVersion(argparse.Action):
    """--version, read from the installed package's metadata only when asked (reading it slows every start)."""

    def __call__(self, parser, namespace, values, option_string=None) -> typing.NoReturn:
        print(f"{parser.prog} {mnist_gan.__version__}")  # stdout, as argparse's own version action
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mnist-gan", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_PrintVersion, nargs=0, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a GAN", description="Train a GAN and write a run directory.",
                                usage="mnist-gan train [--preset NAME] [--config FILE] [--out DIR | --resume DIR] [options]")
    train.add_argument("--preset", choices=list(PRESETS), help="named configuration (default: seed, or the "
                                                               "--config file's)")
    train.add_argument("--config", metavar="FILE", help="a .json or .toml file of config fields, e.g. a run's "
                                                        "config.json; flags override it")
    train.add_argument("--out", help="run directory (default: runs/<preset>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (notes still go to stderr)")
    add_config_flags(train)

    generate = commands.add_parser("generate", help="draw samples from a trained generator",
                                   description="Draw samples from a checkpoint, a run directory or generator.safetensors.")
    generate.add_argument("checkpoint", help="a .ckpt file, a run directory, or a generator.safetensors")
    generate.add_argument("-n", "--n", type=integer(), default=64, help="number of images (default: 64)")
    generate.add_argument("--out", help="output path (default: generated.png, generated.npz or generated/)")
    generate.add_argument("--format", choices=["png", "npz", "dir"], default="png",
                          help="png: one grid; npz: uint8 array (N, 28, 28) under 'images'; dir: one PNG per image")
    generate.add_argument("--seed", type=seed_type, default=0, help="noise seed (default: 0)")
    generate.add_argument("--nice", action="store_true",
                          help="draw 20x as many and keep those the discriminator scores highest")
    generate.add_argument("--nrow", type=integer(), help="images per grid row (default: square)")
    generate.add_argument("--overwrite", action="store_true", help="replace an existing output")
    generate.add_argument("--digit", type=integer(),
                          help="conditional models: draw only this digit (default: 0-9 in turn)")

    interpolate = commands.add_parser("interpolate", help="walk between latent points",
                                      description="Write a strip (PNG) or animation (GIF) of G's images along a "
                                                  "path between random noise vectors (slerp for Gaussian z, "
                                                  "straight lines for uniform z).")
    interpolate.add_argument("checkpoint", help="a .ckpt file, a run directory, or a generator.safetensors")
    interpolate.add_argument("--out", default="interpolation.png", help="a .png strip or a .gif animation "
                             "(default: interpolation.png)")
    interpolate.add_argument("--steps", type=integer(), default=10, help="images along each walk (default: 10)")
    interpolate.add_argument("--rows", type=integer(), default=1, help="walks, one per row (default: 1)")
    interpolate.add_argument("--seed", type=seed_type, default=0, help="noise seed of the end points (default: 0)")
    interpolate.add_argument("--from-digit", type=integer(), help="conditional models: the digit to start from")
    interpolate.add_argument("--to-digit", type=integer(), help="conditional models: the digit to end at")
    interpolate.add_argument("--scale", type=integer(), default=2,
                             help="pixel enlargement of the output (default: 2)")
    interpolate.add_argument("--overwrite", action="store_true", help="replace an existing output")

    evaluate = commands.add_parser(
        "evaluate", help="measure sample quality (FID, KID, precision/recall, ...)",
        description="Score samples against held-out real images, in the feature space of a classifier trained on "
                    "the data set (trained once and cached). Prints a table, or one JSON object with --json.")
    evaluate.add_argument("source", help="a .ckpt, a run directory, a generator.safetensors, or an .npz/.npy of "
                                         "images ((N, 28, 28) uint8, or float in [-1, 1] or [0, 1])")
    evaluate.add_argument("-n", "--n", type=integer(1, MAX_EVALUATE_SAMPLES),
                          help="samples to draw from a generator (default: 10000); for an image file, score its "
                               "first N (default: all)")
    evaluate.add_argument("--seed", type=seed_type, default=0, help="noise and subset seed (default: 0)")
    evaluate.add_argument("--inception", action="store_true",
                          help="also report Inception FID (needs torch-fidelity and its downloadable weights)")
    add_metric_data_flags(evaluate)

    classifier = commands.add_parser(
        "classifier", help="train or inspect the feature classifier the metrics use",
        description="Train (once, then cached) or inspect the data set's feature classifier; print its accuracy "
                    "on held-out images.")
    classifier.add_argument("--retrain", action="store_true", help="train again even if a cached one matches")
    add_metric_data_flags(classifier)
    add_export_command(commands)
    add_serve_parser(commands)
    add_diagnose_parser(commands)
    return parser


def add_export_command(commands) -> None:
    export = commands.add_parser(
        "export", help="write the generator for other tools (safetensors, ONNX)",
        description="Write G (its moving average where the run keeps one) as safetensors, the file a run writes "
                    "as generator.safetensors, or as ONNX (inputs z [and labels], free batch size), checked "
                    "against PyTorch with onnxruntime before it is written.")
    export.add_argument("source", help="a .ckpt file, a run directory, or a generator.safetensors")
    export.add_argument("--format", choices=["safetensors", "onnx"], default="safetensors",
                        help="safetensors (default) or onnx (needs: pip install 'mnist-gan[onnx]')")
    export.add_argument("--out", help="output file (default: generator.safetensors or generator.onnx)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output")


def add_serve_parser(commands) -> None:
    serve = commands.add_parser(
        "serve", help="a local web page to explore a generator and watch a run",
        description="Serve a local web page: explore a trained generator (seeded grids, latent-direction sliders, "
                    "interpolation, digits, D's scores) and follow a run directory while it trains. Needs the "
                    "[serve] extra. Prints the URL; Ctrl-C stops it.")
    serve.add_argument("source", help="a run directory (explore and watch), a .ckpt or a generator.safetensors")
    serve.add_argument("--host", default="127.0.0.1",
                       help="interface to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every one)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    serve.add_argument("--refresh", type=float, default=2.0,
                       help="seconds between the page's updates of a training run (default: 2)")


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
    if args.config:
        config = config_with_file(args, overrides)
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise MnistGanError("--resume RUN_DIR continues that directory; do not also pass a different --out")
        ignored = sorted(k.split(".")[1] for k in overrides if k not in ("train.iterations", "train.epochs"))
        if ignored:
            print(f"mnist-gan: --resume keeps the run's own settings; ignoring {', '.join(ignored)}", file=sys.stderr)
        # Without --iterations/--epochs the run keeps its own length, as "Continue with: ..." promises.
        if os.environ.get("RANK", "0") == "0":
            check_writable(args.resume, "the run cannot be continued where it cannot be written")
        if {"train.iterations", "train.epochs"} & set(overrides):
            result = resume(args.resume, config.train.iterations, epochs=config.train.epochs,
                            progress=not args.no_progress)
        else:
            result = resume(args.resume, progress=not args.no_progress)
    else:
        if os.environ.get("RANK", "0") == "0":
            check_writable(Path(args.out).parent if args.out else "runs", "choose another --out")
        result = train(config, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"run directory: {result.run_dir}")
        print(f"checkpoint: {result.checkpoint}")
        print(f"samples: {result.run_dir / 'samples'}")
    return 130 if result.interrupted else 0


def config_with_file(args: argparse.Namespace, overrides: dict[str, object]) -> RunConfig:
    """--config FILE: the file's fields over the preset, then the flags the user gave."""
    from mnist_gan.configfile import config_from_file

    if args.resume:
        raise MnistGanError("--resume keeps the run's own settings; --config starts a new run (pass --out instead)")
    return config_from_file(args.config, args.preset, overrides)


def cmd_export(args: argparse.Namespace) -> int:
    from mnist_gan.export import export

    print(export(args.source, args.out, args.format, overwrite=args.overwrite))
    return 0


@contextlib.contextmanager
def _interruptible(out: Path):
    """SIGTERM ends the block like Ctrl-C: a KeyboardInterrupt, so the writers delete their temporaries (and a
    partial --format dir) on the way out, and main prints one line and exits 130. Further signals are ignored
    until then, so that clean-up is not cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except KeyboardInterrupt as error:
        raise KeyboardInterrupt(f"by {error or 'SIGINT'}; nothing written to {out}") from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _refuse_existing(out: Path, overwrite: bool) -> None:
    """Fail fast, before the model loads; the writers check again at the moment they publish."""
    if out.exists() and not overwrite and not (out.is_dir() and not any(out.iterdir())):
        raise MnistGanError(f"{out}: already exists; pass --overwrite or another --out")
    if overwrite and out.is_dir() and any(out.iterdir()):
        raise MnistGanError(f"{out}: refusing to replace a non-empty directory; choose another --out")


def cmd_generate(args: argparse.Namespace) -> int:
    from mnist_gan.checkpoint import load_generator
    from mnist_gan.sample import (
        CHUNK,
        NICE_FACTOR,
        check_output,
        generate_chunks,
        generate_nice,
        write_images,
    )

    check_output(args.n, args.format, args.nrow, nice=args.nice)  # bounds, before anything is allocated
    out = Path(args.out or {"png": "generated.png", "npz": "generated.npz", "dir": "generated"}[args.format])
    _refuse_existing(out, args.overwrite)
    check_writable(out if args.format == "dir" else out.parent, "choose another --out")
    with _interruptible(out):
        model_config, G, D = load_generator(args.checkpoint)
        if args.nice:
            images, scores = generate_nice(G, D, model_config, args.n, seed=args.seed, digit=args.digit)
            print(f"kept the best {args.n} of {args.n * NICE_FACTOR} by D: mean D score {scores.mean():.4f} "
                  f"(range {scores.min():.4f}-{scores.max():.4f})", file=sys.stderr)
            chunks = images.split(CHUNK)
        else:
            chunks = generate_chunks(G, model_config, args.n, seed=args.seed, digit=args.digit)
        print(write_images(chunks, args.n, out, args.format, nrow=args.nrow, overwrite=args.overwrite))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mnist_gan.arrays import load_images
    from mnist_gan.data import load_dataset
    from mnist_gan.device import resolve_device
    from mnist_gan.evaluation import Evaluator, format_table
    from mnist_gan.inception import inception_fid, require_inception

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
        from mnist_gan.evaluation import conditional_accuracy

        result.update(conditional_accuracy(evaluator, G, model_config, args.n or 10_000, seed=args.seed))
    if args.inception:
        result["inception_fid"], result["inception_backend"] = inception_fid(images, evaluator.reference_images)
    strict, not_finite = strict_json(result)
    if args.json:
        print(strict)
    else:
        print(format_table(result, f"mnist-gan evaluate {source}"))
        if not_finite:
            print(f"not finite (nan/inf here, null with --json): {', '.join(not_finite)}")
    return 0


def strict_json(result: dict) -> tuple[str, list[str]]:
    """`result` as strict JSON, every non-finite number (NaN, inf) written as null, and the keys that held one.

    Python's json writes NaN, which JSON does not allow; allow_nan=False makes any that slips through an error.
    """
    not_finite = []

    def finite(value, key):
        if isinstance(value, float) and not math.isfinite(value):
            not_finite.append(key)
            return None
        if isinstance(value, (list, tuple)):
            return [finite(item, key) for item in value]
        if isinstance(value, dict):
            return {name: finite(item, key) for name, item in value.items()}
        return value

    clean = {key: finite(value, key) for key, value in result.items()}
    not_finite = list(dict.fromkeys(not_finite))
    if not_finite:
        clean["not_finite"] = not_finite
    return json.dumps(clean, allow_nan=False), not_finite


def cmd_classifier(args: argparse.Namespace) -> int:
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
        print(strict_json(info)[0])
    else:
        print(f"classifier: {info['path']}\nfingerprint: {info['fingerprint']}\ndata: {info['data']}\n"
              f"trained on: {info['n_train']} images ({info['training_seconds']:.0f}s)\n"
              f"held-out: {info['heldout']}\nheld-out accuracy: {100 * info['heldout_accuracy']:.2f}%")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from mnist_gan.checkpoint import load_generator
    from mnist_gan.sample import check_walk, interpolate, save_interpolation

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise MnistGanError(f"{out}: --out must end in .png (a strip) or .gif (an animation)")
    check_walk(args.steps, args.rows, args.scale, gif=out.suffix.lower() == ".gif")  # before anything is allocated
    if out.exists() and not args.overwrite:
        raise MnistGanError(f"{out}: already exists; pass --overwrite or another --out")
    check_writable(out.parent, "choose another --out")
    with _interruptible(out):
        model_config, G, _ = load_generator(args.checkpoint)
        images = interpolate(G, model_config, steps=args.steps, rows=args.rows, seed=args.seed,
                             from_digit=args.from_digit, to_digit=args.to_digit)
        print(save_interpolation(images, out, scale=args.scale, overwrite=args.overwrite))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mnist_gan.serve import serve

    return serve(args.source, host=args.host, port=args.port, refresh=args.refresh)


def add_diagnose_parser(commands) -> None:
    diagnose = commands.add_parser(
        "diagnose", help="say what went wrong in a run, when, and what to try",
        description="Read a run directory (finished, stopped or still training), replay every check on what it "
                    "logged, and print a timeline, each problem with its evidence, likely causes and flags to "
                    "try, and the checks its logs could not support. Writes the evidence as plots. Exit status: "
                    "0 healthy, 1 problems found, 2 usage error.")
    diagnose.add_argument("run_dir", help="a run directory (holds config.json and metrics.jsonl)")
    diagnose.add_argument("--out", help="where to write the plots (default: RUN_DIR/diagnosis)")
    diagnose.add_argument("--no-plots", action="store_true", help="no plots, only the report")
    diagnose.add_argument("--json", action="store_true", help="print one JSON object instead of the report")


def cmd_diagnose(args: argparse.Namespace) -> int:
    import json

    from mnist_gan.doctor import diagnose, format_report, read_run
    from mnist_gan.doctor_plots import write_plots

    report = diagnose(args.run_dir)
    if not args.no_plots:
        _, records, evaluations = read_run(args.run_dir)
        out = Path(args.out) if args.out else Path(args.run_dir) / "diagnosis"
        try:
            report.plots = [str(p) for p in write_plots(report, records, evaluations, out)]
        except MnistGanError as error:  # e.g. a read-only run directory: the report still counts
            print(f"mnist-gan: no plots: {error}; pass --out DIR or --no-plots", file=sys.stderr)
    print(json.dumps(report.to_dict()) if args.json else format_report(report))
    return 0 if report.healthy else 1


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "interpolate": cmd_interpolate, "evaluate": cmd_evaluate,
            "classifier": cmd_classifier, "export": cmd_export, "serve": cmd_serve, "diagnose": cmd_diagnose}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 a user error, 130 interrupted).

    Every message is one line of at most MAX_MESSAGE_CHARS, and each warning (numpy's and PIL's included) is
    shown as one line too, not the file, line and source that Python prints by default.
    """
    with warnings.catch_warnings():  # restores the caller's warning display (a notebook, a test) on return
        warnings.showwarning = _one_line_warning
        args = build_parser().parse_args(argv)
        try:
            return COMMANDS[args.command](args)
        except MnistGanError as error:
            _say(f"error: {error}")
            return 2
        except KeyboardInterrupt as error:  # the message says what was (not) written, where a command knows
            _say(f"interrupted {error}".rstrip())
            return 130
        except OSError as error:  # the file system said no (full disk, permissions) where no check caught it first
            where = f"{error.filename}: " if error.filename else ""
            _say(f"error: {where}{error.strerror or error}")
            return 2


def _say(text: str) -> None:
    """One line on stderr, however long or multi-line `text` is (the final guard on every message)."""
    print(f"mnist-gan: {shorten(text)}", file=sys.stderr)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the CLI: `mnist-gan: warning: <the message's first line>`."""
    lines = str(message).strip().splitlines()
    _say(f"warning: {lines[0] if lines else category.__name__}")


if __name__ == "__main__":
    sys.exit(main())
