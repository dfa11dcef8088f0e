"""Evaluation: the feature classifier, the metrics' maths, the evaluator and its table."""


def __getattr__(name: str):
    """The names of the module this room replaced (mnist_gan.evaluation, now mnist_gan.evaluation.evaluator), with a DeprecationWarning."""
    import importlib
    import warnings

    module = importlib.import_module("mnist_gan.evaluation.evaluator")
    if name.startswith("__") or not hasattr(module, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"mnist_gan.evaluation.{name} moved to mnist_gan.evaluation.evaluator.{name}", DeprecationWarning, stacklevel=2)
    return getattr(module, name)
