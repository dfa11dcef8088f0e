"""The plots: a training run's loss plot leaves a notebook's pyplot backend and open figures alone."""

from __future__ import annotations

from PIL import Image


def test_loss_plot_leaves_pyplot_alone(tmp_path):
    """A notebook's backend and open figures survive a training run's plot."""
    import matplotlib.pyplot as plt

    from mnist_gan.diagnosis.loss_plot import plot_losses

    previous = plt.get_backend()
    plt.switch_backend("svg")
    try:
        figure = plt.figure()
        history = [{"iteration": i, "d_loss": 1 / i, "g_loss": i / 10, "d_x": 0.6, "d_g_z": 0.4} for i in (1, 2, 3)]
        plot_losses(history, tmp_path / "losses.png")
        assert plt.get_backend() == "svg" and plt.fignum_exists(figure.number)
        with Image.open(tmp_path / "losses.png") as image:
            assert image.format == "PNG"
    finally:
        plt.close("all")
        plt.switch_backend(previous)
