"""What the user is told: the one error type (a clear message, no traceback), notes on stderr, and the helpers
that keep every message short whatever untrusted value or library error it quotes."""

from __future__ import annotations

import sys

MAX_QUOTED_CHARS = 80  # a value quoted in a message is there to be recognised, not read: a path or number fits
MAX_QUOTED_BITS = 256  # an integer wider than this (77+ digits) is described by its size, never spelled out
MAX_CLIPPED_CHARS = 300  # a library's error quoted in ours: its first line, enough to recognise the cause
MAX_MESSAGE_CHARS = 1000  # the CLI's last guard on one message: room for two long paths and a reason, not a file


class MnistGanError(Exception):
    """An error the user can fix (bad path, corrupt file, bad flag, incompatible checkpoint).

    The CLI prints its message on one line and exits non-zero.
    """


def note(message: str) -> None:
    """One line of information for the user, on stderr."""
    print(f"mnist-gan: {message}", file=sys.stderr)


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
