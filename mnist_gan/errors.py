"""What the user is told: the one error type (a clear message, no traceback), the package's logger, and the
helpers that keep every message short whatever untrusted value or library error it quotes.

Every message (warnings, notes, details) goes through the `mnist_gan` logger: each module logs with
`logging.getLogger(__name__)`, a child of it, at WARNING (something the user should act on or know went
wrong), INFO (what a command is doing) or DEBUG (details, shown by `mnist-gan -v`). Results are never logged:
the CLI prints them on stdout.

Out of the box the logger is at INFO and carries one handler, STDERR_HANDLER, that writes `mnist-gan: <message>`
to whatever sys.stderr is when the message is emitted (through tqdm while a progress bar shows, so the bar is
redrawn below the line), and does not propagate, so no message is printed twice. A program or notebook may:

- quiet it: `logging.getLogger("mnist_gan").setLevel(logging.WARNING)` (what `mnist-gan -q` does);
- add its own handler to that logger (messages then go to both);
- take it over: `logger.removeHandler(STDERR_HANDLER)` and `logger.propagate = True`, so its own logging
  configuration decides where the messages go.

A program that gave the `mnist_gan` logger a handler before importing the package keeps its configuration.
"""

from __future__ import annotations

import logging
import sys

MAX_QUOTED_CHARS = 80  # a value quoted in a message is there to be recognised, not read: a path or number fits
MAX_QUOTED_BITS = 256  # an integer wider than this (77+ digits) is described by its size, never spelled out
MAX_CLIPPED_CHARS = 300  # a library's error quoted in ours: its first line, enough to recognise the cause
MAX_MESSAGE_CHARS = 1000  # the CLI's last guard on one message: room for two long paths and a reason, not a file


class MnistGanError(Exception):
    """An error the user can fix (bad path, corrupt file, bad flag, incompatible checkpoint).

    The CLI prints its message on one line and exits non-zero.
    """


class StderrHandler(logging.Handler):
    """Writes each record as one formatted line on the sys.stderr of the moment it is emitted (a test or a
    notebook may replace sys.stderr after the import), through tqdm once tqdm is loaded: tqdm.write clears the
    progress bars on the terminal, writes the line and draws them again below it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line, stream = self.format(record), sys.stderr
            if stream is None:  # pythonw: no console to write to
                return
            tqdm = sys.modules.get("tqdm")  # never imported here: `import mnist_gan` stays quick
            if tqdm is not None:
                tqdm.tqdm.write(line, file=stream)
            else:
                stream.write(line + "\n")
            stream.flush()
        except RecursionError:  # as logging.StreamHandler: a recursion is a bug to see, not a message to lose
            raise
        except Exception:
            self.handleError(record)


STDERR_HANDLER = StderrHandler()
STDERR_HANDLER.setFormatter(logging.Formatter("mnist-gan: %(message)s"))


def _install_default_handler(logger: logging.Logger) -> None:
    """STDERR_HANDLER on `logger` at INFO, unless the program configured the logger before importing us."""
    if logger.handlers:
        return
    logger.addHandler(STDERR_HANDLER)
    logger.propagate = False  # the root logger's handlers, if any, would print each message a second time
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


_install_default_handler(logging.getLogger("mnist_gan"))


def quote(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """A short one-line rendering of an untrusted value for a message, e.g. `'abc'`, `12`, `a list of 3 items`.

    Only scalars are spelled out, and at most `limit` characters of them; containers are described by their
    type and length, tensors and arrays by their shape, without looking inside, so a deeply nested or shared
    structure costs nothing to quote.
    """
    if isinstance(value, (str, bytes, bytearray)):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value):,} {'characters' if isinstance(value, str) else 'bytes'})"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_QUOTED_BITS:
        return f"an integer of {value.bit_length():,} bits"
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, float):
        return repr(float(value))  # numpy's float64 is a float whose own repr names its type
    if isinstance(value, int):
        return repr(int(value))
    kind = type(value).__name__
    shape = getattr(value, "shape", None)
    if kind in ("Tensor", "Parameter", "ndarray") and shape is not None:
        return f"a {kind} of shape {tuple(shape)}"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        noun = "key" if isinstance(value, dict) else "item"
        return f"a {kind} of {len(value):,} {noun}{'' if len(value) == 1 else 's'}"
    return f"a {kind}"


def clip(text: object, limit: int = MAX_CLIPPED_CHARS) -> str:
    """The first line of text, at most `limit` characters: for quoting an error from a library in ours."""
    lines = [line.strip() for line in str(text)[: 4 * limit].splitlines() if line.strip()]
    line = lines[0] if lines else "no detail"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line (line breaks become ' | ') and at most `limit` characters: the middle is cut, so the
    start (usually the path) and the end (usually the reason) both survive."""
    text = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    if len(text) <= limit:
        return text
    room = max(0, limit - len(f" [... {len(text):,} characters cut ...] "))  # the marker is never longer
    head, tail = room * 2 // 3, room - room * 2 // 3
    return f"{text[:head]} [... {len(text) - head - tail:,} characters cut ...] {text[len(text) - tail:]}"
