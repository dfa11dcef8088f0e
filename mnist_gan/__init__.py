"""mnist-gan: train, watch, diagnose, sample and evaluate GANs on MNIST-like images.

>>> from mnist_gan import preset, train, resume, load_generator, generate
>>> config = preset("recommended")
>>> config.train.iterations = 300
>>> result = train(config, "runs/demo", progress=False)
>>> model_config, G, D = load_generator(result.checkpoint)
>>> generate(G, model_config, 16, seed=0).shape
torch.Size([16, 1, 28, 28])
>>> more = resume("runs/demo", iterations=2 * result.iteration, progress=False)  # the same run, continued
>>> more.iteration == 2 * result.iteration
True

`import mnist_gan` stays quick: torch-heavy names load on first use.
"""

from mnist_gan.errors import MnistGanError
from mnist_gan.settings.config import PRESETS, DataConfig, ModelConfig, RunConfig, TrainConfig, preset

_LAZY = {
    "train": "mnist_gan.training.loop",
    "resume": "mnist_gan.training.loop",
    "train_runs_together": "mnist_gan.training.sweep",
    "load_dataset": "mnist_gan.data.datasets",
    "build_generator": "mnist_gan.gan.models",
    "build_discriminator": "mnist_gan.gan.models",
    "sample_z": "mnist_gan.gan.models",
    "load_generator": "mnist_gan.run.checkpoint",
    "generate": "mnist_gan.sampling.sample",
    "generate_nice": "mnist_gan.sampling.sample",
    "interpolate": "mnist_gan.sampling.sample",
    "save_images": "mnist_gan.sampling.sample",
    "grid_image": "mnist_gan.sampling.grids",
    "evaluate_images": "mnist_gan.evaluation.evaluator",
    "evaluate_generator": "mnist_gan.evaluation.evaluator",
    "sample_problems": "mnist_gan.diagnosis.detectors",
    "record_problems": "mnist_gan.diagnosis.detectors",
    "plot_losses": "mnist_gan.diagnosis.loss_plot",
}

__all__ = ["PRESETS", "DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "preset", "MnistGanError", *_LAZY]


# The flat package's modules before they moved into rooms (docs/architecture.md), still importable under their
# old names, with a DeprecationWarning: `import mnist_gan.models` gives mnist_gan.gan.models itself. `data` and
# `evaluation` are rooms now; their packages forward the old modules' names (data.datasets, evaluation.evaluator).
_MOVED = {
    "config": "settings.config", "fieldtypes": "settings.fieldtypes", "configfile": "settings.config_file",
    "configflags": "settings.flags", "files": "io.files", "dirswap": "io.dirswap", "untrusted": "io.untrusted",
    "headers": "io.headers", "images": "data.images", "idx": "data.idx", "image_folder": "data.image_folder",
    "arrays": "data.arrays", "models": "gan.models", "losses": "gan.losses", "step": "gan.step",
    "clusters": "gan.clusters", "device": "gan.device", "distributed": "gan.distributed", "flops": "gan.flops",
    "weights": "gan.weights", "rundir": "run.directory", "checkpoint": "run.checkpoint",
    "generator_file": "run.generator_file", "history": "run.history", "watch": "run.watch",
    "sample": "sampling.sample", "export": "sampling.export", "classifier": "evaluation.classifier",
    "inception": "evaluation.inception", "metrics": "evaluation.metrics", "diagnose": "diagnosis.detectors",
    "probes": "diagnosis.probes", "doctor": "diagnosis.report", "doctor_plots": "diagnosis.plots",
    "plots": "diagnosis.loss_plot", "recorder": "training.recorder", "tensorboard_log": "training.tensorboard",
    "explore": "serve.explorer", "webapi": "serve.webapi", "commands": "cli.commands",
}


class _MovedModules:
    """A finder and loader of the old module names: the module imported is the one at its new place."""

    @staticmethod
    def find_spec(fullname: str, path=None, target=None):
        package, _, old = fullname.partition(".")
        if package != __name__ or old not in _MOVED:
            return None
        from importlib.machinery import ModuleSpec

        return ModuleSpec(fullname, _MovedModules)

    @staticmethod
    def create_module(spec):
        import importlib
        import warnings

        new = f"{__name__}.{_MOVED[spec.name.partition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    @staticmethod
    def exec_module(module) -> None:  # already executed under its new name
        pass


def _install_moved_modules() -> None:
    import sys

    if not any(finder is _MovedModules for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules)


_install_moved_modules()


def _version() -> str:
    """This package's version, as installed (pyproject.toml is its one source)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("mnist-gan")
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":  # looked up on demand: reading package metadata costs an import's time
        return _version()
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mnist_gan' has no attribute {name!r}")
