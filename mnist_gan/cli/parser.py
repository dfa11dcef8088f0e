"""The `mnist-gan` command: a thin layer over the Python API. The only module that reads argv.

Here: the parser (one `add_<command>_parser` per command) and `main`. What each command does is
mnist_gan.cli.commands'; the training flags are made from the config fields (mnist_gan.settings.flags), so the CLI, the
Python API and `config.json` share one set of names and defaults (the preset's). Results go to stdout, progress
and messages to stderr (through the `mnist_gan` logger, whose level -q/--quiet and -v/--verbose set).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import typing
import warnings

import mnist_gan
from mnist_gan.cli.commands import (
    cmd_classifier,
    cmd_diagnose,
    cmd_evaluate,
    cmd_export,
    cmd_generate,
    cmd_interpolate,
    cmd_presets,
    cmd_serve,
    cmd_train,
)
from mnist_gan.cli.sweep_command import add_sweep_parser, cmd_sweep
from mnist_gan.cli.tune_command import add_tune_parser, cmd_tune
from mnist_gan.errors import MnistGanError, quote, shorten
from mnist_gan.settings.config import DEFAULT_PRESET, PRESETS
from mnist_gan.settings.flags import add_config_flags
from mnist_gan.settings.validation import MAX_COUNT, MAX_SEED

logger = logging.getLogger(__name__)

DESCRIPTION = ("Train GANs on MNIST-like images, watch them learn, diagnose their failures, sample digits and "
               "measure their quality. 'mnist-gan COMMAND --help' lists a command's flags.")
MAX_EVALUATE_SAMPLES = 100_000  # twice the 50,000 of the FID's authors; images and features are held in memory


class _Parser(argparse.ArgumentParser):
    """A usage error is one line on stderr and exit status 2, like every other user error (--help shows usage)."""

    commands: dict[str, argparse.ArgumentParser] = {}  # build_parser's subcommand parsers, by name

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {shorten(message)}; see {self.prog} --help\n")

    def parse_args(self, args=None, namespace=None):
        """argparse's, but a flag no parser knows points at its command's --help (`mnist-gan train --help`)."""
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            where = self.commands.get(getattr(parsed, "command", None), self)
            where.error(f"unrecognized arguments: {' '.join(unknown)}")
        return parsed


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



def build_parser(help_preset: str = DEFAULT_PRESET) -> argparse.ArgumentParser:
    """The parser; `train --help` shows the values of `help_preset` as its flags' defaults (main passes the
    --preset that argv names, so the help shows what that command line runs)."""
    parser = _Parser(prog="mnist-gan", description=DESCRIPTION)
    parser.add_argument("--version", action=_PrintVersion, nargs=0, help="print the version and exit")
    add_verbosity_flags(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(commands, help_preset)
    for add_parser in (add_generate_parser, add_interpolate_parser, add_evaluate_parser, add_classifier_parser,
                       add_export_parser, add_serve_parser, add_diagnose_parser, add_presets_parser):
        add_parser(commands)
    add_tune_parser(commands)
    add_sweep_parser(commands)
    for command in commands.choices.values():  # also after the command: `mnist-gan train -q ...`
        add_verbosity_flags(command, argparse.SUPPRESS)
    parser.commands = dict(commands.choices)
    return parser


def add_verbosity_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """-q/--quiet and -v/--verbose, as `args.log_level`: the `mnist_gan` logger's level while the command runs.
    The main parser's default is None (the level as it is); a command's is SUPPRESS, so that its parser does not
    reset a flag given before the command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="log_level", action="store_const", const=logging.WARNING,
                       default=default, help="only warnings and errors on stderr (and no progress bar)")
    group.add_argument("-v", "--verbose", dest="log_level", action="store_const", const=logging.DEBUG,
                       default=default, help="also details (debug messages) on stderr")


def named_preset(argv: list[str]) -> str:
    """The preset `argv` names (--preset NAME or --preset=NAME, the last one, as argparse takes it), else
    DEFAULT_PRESET. Read before parsing, since --help prints and exits as soon as it is parsed; an unknown name
    is left for the parser to refuse."""
    words, name = [str(word) for word in argv], DEFAULT_PRESET
    for index, word in enumerate(words):
        if word == "--":
            break
        flag, given, value = word.partition("=")
        if len(flag) >= len("--pres") and "--preset".startswith(flag):  # argparse takes --pres (not --pre)
            value = value if given else (words[index + 1] if index + 1 < len(words) else "")
            name = value if value in PRESETS else name
    return name


def add_train_parser(commands, help_preset: str = DEFAULT_PRESET) -> None:
    description = (f"Train a GAN and write a run directory. A flag not given keeps the preset's value, shown as "
                   f"its default: here the {help_preset} preset's ('mnist-gan train --preset NAME --help' shows "
                   f"another's, 'mnist-gan presets' how they differ; a --config file's fields replace them).")
    train = commands.add_parser("train", help="train a GAN", description=description,
                                usage="mnist-gan train [--preset NAME] [--config FILE] [--out DIR | --resume DIR] [options]")
    train.add_argument("--preset", choices=list(PRESETS), help=f"named configuration (default: {DEFAULT_PRESET}, or "
                                                               f"the --config file's; the tutorial's model: seed)")
    train.add_argument("--config", metavar="FILE", help="a .json or .toml file of config fields, e.g. a run's "
                                                        "config.json; flags override it")
    train.add_argument("--out", help="run directory (default: runs/<preset>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its newest checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (notes still go to stderr)")
    add_config_flags(train, help_preset)


def add_generate_parser(commands) -> None:
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
    which = generate.add_mutually_exclusive_group()
    which.add_argument("--class", dest="class_name", metavar="NAME", help="conditional models: draw only this "
                       "class, by the data set's name for it (e.g. 7, sneaker, tsu; default: every class in turn)")
    which.add_argument("--digit", type=integer(), help="conditional models: draw only this class, by number")


def add_interpolate_parser(commands) -> None:
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


def add_evaluate_parser(commands) -> None:
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


def add_classifier_parser(commands) -> None:
    classifier = commands.add_parser(
        "classifier", help="train or inspect the feature classifier the metrics use",
        description="Train (once, then cached) or inspect the data set's feature classifier; print its accuracy "
                    "on held-out images.")
    classifier.add_argument("--retrain", action="store_true", help="train again even if a cached one matches")
    add_metric_data_flags(classifier)


def add_export_parser(commands) -> None:
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
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also answer requests addressed to this host name (repeatable), e.g. the machine's "
                            "DNS name when --host 0.0.0.0; any other name is refused (DNS rebinding)")


def add_metric_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="the real data set: mnist, fashion-mnist, kmnist, emnist-letters, "
                                       "stacked-mnist or a path (default: the run's named set, else mnist)")
    parser.add_argument("--cache-dir", help="data and classifier cache (default: $MNIST_GAN_CACHE, then "
                                            "~/.cache/mnist-gan)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


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


def add_presets_parser(commands) -> None:
    presets = commands.add_parser(
        "presets", help="list the presets and how each differs from the default one",
        description=f"List the named presets of 'mnist-gan train --preset NAME': the default ({DEFAULT_PRESET}, "
                    f"what a bare 'mnist-gan train' runs), then each other one as the flags that turn the default "
                    f"into it.")
    presets.add_argument("--json", action="store_true", help="print one JSON object instead of the list")


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "interpolate": cmd_interpolate, "evaluate": cmd_evaluate,
            "classifier": cmd_classifier, "export": cmd_export, "serve": cmd_serve, "diagnose": cmd_diagnose,
            "presets": cmd_presets, "tune": cmd_tune, "sweep": cmd_sweep}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 2 a user error, 130 interrupted).

    Every message is one line of at most MAX_MESSAGE_CHARS, and each warning (numpy's and PIL's included) is
    shown as one line too, not the file, line and source that Python prints by default. Messages go through the
    `mnist_gan` logger (see mnist_gan.errors), at the level -q/-v ask for while the command runs.
    """
    with warnings.catch_warnings():  # restores the caller's warning display (a notebook, a test) on return
        warnings.showwarning = _one_line_warning
        argv = sys.argv[1:] if argv is None else argv
        args = build_parser(named_preset(argv)).parse_args(argv)
        with _package_logger_at(args.log_level):
            try:
                return COMMANDS[args.command](args)
            except MnistGanError as error:
                _say(f"error: {error}")
                return 2
            except KeyboardInterrupt as error:  # the message says what was (not) written, where a command knows
                _say(f"interrupted {error}".rstrip())
                return 130
            except OSError as error:  # the file system said no (full disk, permissions) where no check caught it
                where = f"{error.filename}: " if error.filename else ""
                _say(f"error: {where}{error.strerror or error}")
                return 2


@contextlib.contextmanager
def _package_logger_at(level: int | None):
    """The `mnist_gan` logger at `level` (None: as it is) inside; the caller's level (a notebook's, a test's) after."""
    package_logger = logging.getLogger("mnist_gan")
    before = package_logger.level
    if level is not None:
        package_logger.setLevel(level)
    try:
        yield
    finally:
        package_logger.setLevel(before)


def _say(text: str, level: int = logging.ERROR) -> None:
    """One line, however long or multi-line `text` is (the final guard on every message), at `level`."""
    logger.log(level, shorten(text))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the CLI: `mnist-gan: warning: <the message's first line>`."""
    lines = str(message).strip().splitlines()
    _say(f"warning: {lines[0] if lines else category.__name__}", logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
