"""The one error type users see: a clear message, no traceback."""


class MnistGanError(Exception):
    """An error the user can fix (bad path, corrupt file, bad flag, incompatible checkpoint).

    The CLI prints its message on one line and exits non-zero.
    """
