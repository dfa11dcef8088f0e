"""The package speaks through the `mnist_gan` logger: `mnist-gan -q` keeps only warnings and errors, `-v` adds
details, a program can capture, quiet or take over the messages, and no library module prints."""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import re
import sys
from pathlib import Path

import pytest

from mnist_gan.errors import STDERR_HANDLER

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_gan"
TINY = ["--preset", "dcgan", "--width", 8, "--batch-size", 16, "--limit", 32, "--iterations", 2, "--log-every", 1,
        "--sample-every", 0, "--checkpoint-every", 0, "--device", "cpu", "--seed", 3]
NOTHING_TO_DO = "mnist-gan: nothing to do: the run already has 2 iterations (pass a larger --iterations)"


@pytest.fixture(scope="module")
def verbose_run(tmp_path_factory, small_npz):
    """(run directory, stderr) of a 2-iteration run trained with `mnist-gan -v train`."""
    from conftest import invoke_cli

    run = tmp_path_factory.mktemp("logging") / "run"
    status, _, err = invoke_cli(["-v", "train", "--data", small_npz, "--out", run, *TINY])
    assert status == 0, err
    return run, err


def test_verbose_shows_the_debug_lines(verbose_run, cli, tmp_path):
    run, err = verbose_run
    assert "mnist-gan: data: 32 images from" in err, "the notes are still there"
    assert "mnist-gan: 2 iterations of 16 images (2 per epoch), seed 3\n" in err
    checkpoint = run / "checkpoints" / "iter_00000002.ckpt"
    detail = f"mnist-gan: {checkpoint}: a checkpoint of iteration 2 ("
    status, out, err = cli(["generate", run, "-n", 4, "--out", tmp_path / "plain.png"])
    assert status == 0 and out == f"{tmp_path / 'plain.png'}\n" and detail not in err
    status, out, err = cli(["generate", run, "-n", 4, "--out", tmp_path / "verbose.png", "-v"])  # after the command
    assert status == 0 and out == f"{tmp_path / 'verbose.png'}\n" and detail in err
    assert logging.getLogger("mnist_gan").level == logging.INFO, "main gives the caller's level back"


def test_quiet_keeps_results_and_warnings_and_drops_notes(verbose_run, cli):
    run, _ = verbose_run
    result = f"run directory: {run}\ncheckpoint: {run / 'checkpoints' / 'iter_00000002.ckpt'}\nsamples: "
    status, out, err = cli(["train", "--resume", run])  # today's notes: resuming ..., done: ...
    assert status == 0 and out.startswith(result)
    assert f"mnist-gan: resuming {run} from iter_00000002.ckpt at iteration 2 of 2\n" in err
    assert f"mnist-gan: done: 2 iterations; run directory {run}\n" in err and NOTHING_TO_DO in err
    for argv in (["-q", "train", "--resume", run, "--lr", "0.1"], ["train", "--resume", run, "--lr", "0.1", "--quiet"]):
        status, out, err = cli(argv)
        assert status == 0 and out.startswith(result), "results still go to stdout"
        assert "resuming" not in err and "done:" not in err, "no notes"
        assert "it/s" not in err and "2/2" not in err, "no progress bar"
        assert "mnist-gan: --resume keeps the run's own settings; ignoring lr\n" in err and NOTHING_TO_DO in err
    status, _, err = cli(["-q", "train", "--resume", run / "missing"])
    assert status == 2 and err.startswith("mnist-gan: error: ") and err.count("\n") == 1, "errors still show"
    assert logging.getLogger("mnist_gan").level == logging.INFO


class KeepRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_program_captures_quiets_and_takes_over_the_messages(tmp_path, small_npz, monkeypatch, caplog):
    from mnist_gan import preset, resume, train

    config = preset("dcgan")
    config.data.data, config.data.limit = str(small_npz), 32
    config.model.width, config.train.batch_size, config.train.device = 8, 16, "cpu"
    config.train.iterations, config.train.sample_every, config.train.checkpoint_every = 2, 0, 0
    package, kept = logging.getLogger("mnist_gan"), KeepRecords()
    monkeypatch.setattr(package, "handlers", [kept])  # its own handler in place of STDERR_HANDLER
    with contextlib.redirect_stderr(io.StringIO()) as err:
        train(config, tmp_path / "run", progress=False)
    assert "mnist-gan" not in err.getvalue(), "the program's handler took the messages; none went to stderr"
    said = {(record.name, record.levelno, record.getMessage()) for record in kept.records}
    assert ("mnist_gan.training.loop", logging.INFO, f"done: 2 iterations; run directory {tmp_path / 'run'}") in said
    assert any(name == "mnist_gan.training.recorder" and level == logging.INFO and message.startswith("epoch 1: ")
               for name, level, message in said), "the epoch summary is a message too"

    # Quieted to warnings and handed to the program's logging configuration (here pytest's caplog, on the root).
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(package, "propagate", True)
    with caplog.at_level(logging.WARNING, logger="mnist_gan"):
        resume(tmp_path / "run", progress=False)  # "resuming ..." is a note; "nothing to do" a warning
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("mnist_gan")] == \
        [(logging.WARNING, NOTHING_TO_DO.removeprefix("mnist-gan: "))]


def test_the_default_handler_writes_to_the_current_stderr_and_around_a_progress_bar():
    from tqdm import tqdm

    assert STDERR_HANDLER in logging.getLogger("mnist_gan").handlers
    with contextlib.redirect_stderr(io.StringIO()) as err:  # replaced after the import, as a test or notebook does
        bar = tqdm(total=3, file=sys.stderr)
        bar.update(1)
        logging.getLogger("mnist_gan.test").warning("warning: a message")
        bar.close()
    text = err.getvalue()
    # tqdm.write clears the bar first, so the message starts its own line and the bar is drawn again after it.
    assert re.search(r"(^|\r)mnist-gan: warning: a message\n\r.*1/3", text), repr(text)


def _prints(tree: ast.Module) -> list[tuple[str, ast.Call]]:
    """(enclosing function, call) of every print() call in `tree`."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print":
                found.append((function, child))
            visit(child, child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function)

    visit(tree, "")
    return found


def _stream_writes(tree: ast.Module) -> list[int]:
    """Lines that call sys.stdout.write or sys.stderr.write."""
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "write"
            and isinstance(node.func.value, ast.Attribute) and node.func.value.attr in ("stdout", "stderr")
            and isinstance(node.func.value.value, ast.Name) and node.func.value.value.id == "sys"]


def test_library_code_never_prints():
    """Messages go through the logger; only the CLI prints (its results), and serve() its URL on stdout."""
    allowed = {("serve/app.py", "serve")}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith("cli/"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function, call in _prints(tree):
            to_stdout = not any(keyword.arg == "file" for keyword in call.keywords)
            if not ((name, function) in allowed and to_stdout):
                offenders.append(f"{name}:{call.lineno} print() in {function or 'the module'}")
        if name != "errors.py":  # the logger's own handler writes the lines
            offenders += [f"{name}:{line} writes to sys.stdout/stderr" for line in _stream_writes(tree)]
    assert not offenders, "library code speaks through logging.getLogger(__name__): " + "; ".join(offenders)
    serve_app = ast.parse((PACKAGE / "serve" / "app.py").read_text(encoding="utf-8"))
    assert len(_prints(serve_app)) == 1, "serve() prints its URL and nothing else"
