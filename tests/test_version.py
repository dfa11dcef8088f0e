"""One version number: pyproject.toml's, read back from the installed package's metadata."""

from __future__ import annotations

import importlib.metadata

import pytest
from helpers import REPO

import mnist_gan


def test_version_flag_prints_the_installed_version(cli):
    try:
        expected = importlib.metadata.version("mnist-gan")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("mnist-gan is not installed (pip install -e .)")
    assert mnist_gan.__version__ == expected
    status, out, err = cli(["--version"])
    assert (status, out, err) == (0, f"mnist-gan {expected}\n", "")


def test_an_uninstalled_source_tree_says_so(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert mnist_gan.__version__ == "0+unknown"


def test_pyproject_holds_the_only_version_number():
    import re

    pyproject = (REPO / "pyproject.toml").read_text()
    assert len(re.findall(r"^version = ", pyproject, flags=re.M)) == 1
    assert not re.search(r"__version__\s*=", (REPO / "mnist_gan" / "__init__.py").read_text())
