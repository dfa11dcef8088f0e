"""The one error type users see: a clear message, no traceback; and the helpers that keep messages short."""

from __future__ import annotations

MAX_QUOTED_CHARS = 80  # a value quoted in a message is there to be recognised, not read: a path or number fits
MAX_QUOTED_BITS = 256  # an integer wider than this (77+ digits) is described by its size, never spelled out
MAX_MESSAGE_CHARS = 1000  # the CLI's last guard on one message: room for two long paths and a reason, not a file


class MnistGanError(Exception):
    """An error the user can fix (bad path, corrupt file, bad flag, incompatible checkpoint).

    The CLI prints its message on one line and exits non-zero.
    """


def quote(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """A short one-line rendering of an untrusted value for a message, e.g. `'abc'`, `12`, `a list of 3 items`.

    Only scalars are spelled out, and at most `limit` characters of them; containers are described by their
    type and length without looking inside, so a deeply nested or shared structure costs nothing to quote.
    """
    if isinstance(value, (str, bytes, bytearray)):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value):,} {'characters' if isinstance(value, str) else 'bytes'})"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_QUOTED_BITS:
        return f"an integer of {value.bit_length():,} bits"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        noun = "key" if isinstance(value, dict) else "item"
        return f"a {type(value).__name__} of {len(value):,} {noun}{'' if len(value) == 1 else 's'}"
    return f"a {type(value).__name__}"


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line (line breaks become ' | ') and at most `limit` characters: the middle is cut, so the
    start (usually the path) and the end (usually the reason) both survive."""
    text = " | ".join(line.strip() for line in str(text).splitlines() if line.strip())
    if len(text) <= limit:
        return text
    room = max(0, limit - len(f" [... {len(text):,} characters cut ...] "))  # the marker is never longer
    head, tail = room * 2 // 3, room - room * 2 // 3
    return f"{text[:head]} [... {len(text) - head - tail:,} characters cut ...] {text[len(text) - tail:]}"
