"""The `mnist-gan` command: its parser and commands, the only code that reads argv."""

from mnist_gan.cli.parser import main

__all__ = ["main"]
