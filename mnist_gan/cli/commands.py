"""What each `mnist-gan` command does, given its parsed arguments: a thin layer over the Python API. Results go
to stdout (print), progress and messages to stderr (the `mnist_gan` logger); a user's mistake is a MnistGanError
(mnist_gan.cli.parser reports it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import threading
from pathlib import Path

from mnist_gan.errors import MnistGanError
from mnist_gan.io.files import check_replaceable, check_writable
from mnist_gan.settings.config import DataConfig, RunConfig
from mnist_gan.settings.flags import config_from_args

logger = logging.getLogger(__name__)


def cmd_train(args: argparse.Namespace) -> int:
    from mnist_gan.run.directory import RunDir
    from mnist_gan.training.loop import resume, train

    config, overrides = config_from_args(args)
    progress = not args.no_progress and logger.isEnabledFor(logging.INFO)  # -q: warnings and errors only, no bar
    if args.config:
        config = config_with_file(args, overrides)
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise MnistGanError("--resume RUN_DIR continues that directory; do not also pass a different --out")
        ignored = sorted(k.split(".")[1] for k in overrides if k not in ("train.iterations", "train.epochs"))
        if ignored:
            logger.warning(f"--resume keeps the run's own settings; ignoring {', '.join(ignored)}")
        # Without --iterations/--epochs the run keeps its own length, as "Continue with: ..." promises.
        if os.environ.get("RANK", "0") == "0":
            check_writable(args.resume, "the run cannot be continued where it cannot be written")
        if {"train.iterations", "train.epochs"} & set(overrides):
            given = {name: getattr(config.train, name) if f"train.{name}" in overrides else None
                     for name in ("iterations", "epochs")}  # a flag not given must not bring the preset's value
            result = resume(args.resume, given["iterations"], epochs=given["epochs"], progress=progress)
        else:
            result = resume(args.resume, progress=progress)
    else:
        if os.environ.get("RANK", "0") == "0":
            check_writable(Path(args.out).parent if args.out else "runs", "choose another --out")
        result = train(config, args.out, overwrite=args.overwrite, progress=progress)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(f"run directory: {result.run_dir}")
        print(f"checkpoint: {result.checkpoint}")
        print(f"samples: {RunDir(result.run_dir).samples}")
    return 130 if result.interrupted else 0


def config_with_file(args: argparse.Namespace, overrides: dict[str, object]) -> RunConfig:
    """--config FILE: the file's fields over the preset, then the flags the user gave."""
    from mnist_gan.settings.config_file import config_from_file

    if args.resume:
        raise MnistGanError("--resume keeps the run's own settings; --config starts a new run (pass --out instead)")
    return config_from_file(args.config, args.preset, overrides)


def cmd_presets(args: argparse.Namespace) -> int:
    """The default preset, then each other one as the flags that turn the default into it (stdout)."""
    from mnist_gan.settings.config import DEFAULT_PRESET, PRESETS
    from mnist_gan.settings.flags import flag_words, preset_differences

    names = [DEFAULT_PRESET, *(name for name in PRESETS if name != DEFAULT_PRESET)]
    differences = {name: preset_differences(name) for name in names}
    if args.json:
        print(json.dumps({"default": DEFAULT_PRESET, "presets": differences}))
        return 0
    default = PRESETS[DEFAULT_PRESET].to_dict()
    print(f"{DEFAULT_PRESET}: the default; a bare 'mnist-gan train' runs it, and 'mnist-gan train --help' shows "
          f"its values")
    for name in names[1:]:
        print(f"\n{name}: {DEFAULT_PRESET} with")
        for key, value in differences[name].items():
            section, field_name = key.split(".")
            was = flag_words(key, default[section][field_name])
            print(f"  {flag_words(key, value):<28} ({DEFAULT_PRESET}: {was})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from mnist_gan.sampling.export import export

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
    if overwrite and not out.is_dir():
        check_replaceable(out)  # never a device or FIFO (`--out /dev/null --overwrite` as root)


def cmd_generate(args: argparse.Namespace) -> int:
    from mnist_gan.data.images import class_index
    from mnist_gan.run.classes import load_generator_with_classes
    from mnist_gan.sampling.sample import (
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
        model_config, G, D, names = load_generator_with_classes(args.checkpoint)
        digit = args.digit if args.class_name is None else class_index(names, args.class_name)
        if args.nice:
            images, scores = generate_nice(G, D, model_config, args.n, seed=args.seed, digit=digit)
            logger.info(f"kept the best {args.n} of {args.n * NICE_FACTOR} by D: mean D score {scores.mean():.4f} "
                        f"(range {scores.min():.4f}-{scores.max():.4f})")
            chunks = images.split(CHUNK)
        else:
            chunks = generate_chunks(G, model_config, args.n, seed=args.seed, digit=digit)
        print(write_images(chunks, args.n, out, args.format, nrow=args.nrow, overwrite=args.overwrite))
    return 0


EVALUATE_READS = "a .ckpt, a run directory, a generator.safetensors, or an .npz/.npy of images (N, 28, 28)"


def _load_evaluated_generator(source: Path):
    """load_generator(source); a file that is none of what evaluate reads (a grid .png) is told so, not its bytes."""
    from mnist_gan.run.checkpoint import load_generator

    try:
        return load_generator(source)
    except MnistGanError:
        if source.is_file() and source.suffix not in (".ckpt", ".safetensors"):
            raise MnistGanError(f"{source}: evaluate reads {EVALUATE_READS}") from None
        raise


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mnist_gan.data.arrays import load_images
    from mnist_gan.data.datasets import load_dataset
    from mnist_gan.evaluation.evaluator import Evaluator, format_table
    from mnist_gan.evaluation.inception import inception_fid, require_inception
    from mnist_gan.gan.device import resolve_device

    source = Path(args.source)
    if not source.exists():
        raise MnistGanError(f"{source}: no such file or directory")
    if args.n is not None and args.n <= 0:
        raise MnistGanError(f"-n must be positive, got {args.n}")
    if args.inception:
        require_inception()  # fail before the long work, not after
    device = resolve_device(args.device)
    checkpoint = None  # a run directory's: the evaluation is then recorded in the run, for `diagnose`
    if source.is_file() and source.suffix in (".npz", ".npy"):
        images = load_images(source, args.n)
    else:
        from mnist_gan.sampling.sample import generate

        if source.is_dir():
            model_config, G, checkpoint = _run_generator(source)
        else:
            model_config, G, _ = _load_evaluated_generator(source)
        images = generate(G.to(device), model_config, args.n or 10_000, seed=args.seed, device=device).clamp(-1, 1)
    from mnist_gan.run.classes import run_data_name

    dataset = load_dataset(DataConfig(data=args.data or run_data_name(source, named_only=True) or "mnist", cache_dir=args.cache_dir))
    evaluator = Evaluator.for_dataset(dataset, args.cache_dir, device=device)
    result = {"source": str(source), **evaluator.evaluate(images, seed=args.seed), "floor": evaluator.floor()}
    if not (source.is_file() and source.suffix in (".npz", ".npy")) and model_config.conditional:
        from mnist_gan.evaluation.evaluator import conditional_accuracy

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
    if checkpoint is not None:
        _record_in_run(source, result, checkpoint)
    return 0


def _run_generator(run_dir: Path):
    """(model config, G, where it comes from) for a run directory: its newest usable checkpoint's G (the moving
    average where the run keeps one), as load_generator reads it, and that checkpoint's iteration and name."""
    from mnist_gan.run.checkpoint import load_latest_checkpoint, models_from_checkpoint

    path, state = load_latest_checkpoint(run_dir)
    config, G, _ = models_from_checkpoint(state, path)
    return config.model, G, {"iteration": state["iteration"], "epoch": state["epoch"], "checkpoint": path.name}


def _record_in_run(run_dir: Path, result: dict, checkpoint: dict) -> None:
    """Append the evaluation to the run's records, where `diagnose` reads it; if the run cannot take it, say so."""
    from mnist_gan.run.history import record_evaluation

    try:
        path = record_evaluation(run_dir, result, **checkpoint)
    except (OSError, MnistGanError) as error:
        logger.warning(f"{run_dir}: this evaluation is not recorded in the run ({error}); its figures are above")
        return
    logger.info(f"recorded in {path} (the generator of iteration {checkpoint['iteration']}); "
                f"`mnist-gan diagnose {run_dir}` shows it")


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
    from mnist_gan.data.datasets import load_dataset
    from mnist_gan.evaluation.classifier import accuracy, get_classifier, split
    from mnist_gan.gan.device import resolve_device

    dataset = load_dataset(DataConfig(data=args.data or "mnist", cache_dir=args.cache_dir))
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
    from mnist_gan.run.checkpoint import load_generator
    from mnist_gan.sampling.sample import check_walk, interpolate, save_interpolation

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise MnistGanError(f"{out}: --out must end in .png (a strip) or .gif (an animation)")
    check_walk(args.steps, args.rows, args.scale, gif=out.suffix.lower() == ".gif")  # before anything is allocated
    if out.exists() and not args.overwrite:
        raise MnistGanError(f"{out}: already exists; pass --overwrite or another --out")
    check_replaceable(out)
    check_writable(out.parent, "choose another --out")
    with _interruptible(out):
        model_config, G, _ = load_generator(args.checkpoint)
        for flag, digit in (("--from-digit", args.from_digit), ("--to-digit", args.to_digit)):
            if model_config.conditional and digit is not None and not 0 <= digit < model_config.num_classes:
                raise MnistGanError(f"{flag} must be in 0..{model_config.num_classes - 1}, got {digit}")
        images = interpolate(G, model_config, steps=args.steps, rows=args.rows, seed=args.seed,
                             from_digit=args.from_digit, to_digit=args.to_digit)
        print(save_interpolation(images, out, scale=args.scale, overwrite=args.overwrite))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mnist_gan.serve.app import serve

    return serve(args.source, host=args.host, port=args.port, refresh=args.refresh, allow_hosts=args.allow_host)

def cmd_diagnose(args: argparse.Namespace) -> int:
    from mnist_gan.diagnosis.plots import write_plots
    from mnist_gan.diagnosis.report import build_report, format_report
    from mnist_gan.run.directory import RunDir
    from mnist_gan.run.history import read_run

    history = read_run(args.run_dir)  # read once, so a damaged line is named once
    report = build_report(args.run_dir, history)
    if not args.no_plots:
        _, records, evaluations = history
        out = Path(args.out) if args.out else RunDir(args.run_dir).diagnosis  # a run file: --overwrite removes it
        try:
            report.plots = [str(p) for p in write_plots(report, records, evaluations, out)]
        except MnistGanError as error:  # e.g. a read-only run directory: the report still counts
            logger.warning(f"no plots: {error}; pass --out DIR or --no-plots")
    print(report.to_json() if args.json else format_report(report))
    return 0 if report.healthy else 1

