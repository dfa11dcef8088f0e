"""What a new user meets first: the README's commands and set-up, the notebook, `--help`, a typo'd flag, a wrong
file handed to evaluate, and D's scores in `mnist-gan serve`."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import tomllib
import torch
from helpers import one_error_line

from mnist_gan.cli.parser import build_parser, main

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def _command_lines(text: str) -> list[list[str]]:
    """The mnist-gan command lines of a page's fenced bash blocks, as argv after `mnist-gan`."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [shlex.split(line, comments=True)[1:] for block in blocks for line in block.splitlines()
            if line.startswith("mnist-gan ")]


@pytest.mark.parametrize("page", ["README.md", "docs/guide.md"])
def test_example_outputs_go_under_runs(page):
    """A clone's tree stays clean: every example writes under runs/ (git-ignored), never the repository root."""
    outs = [argv[argv.index("--out") + 1] for argv in _command_lines((REPO / page).read_text()) if "--out" in argv]
    assert len(outs) >= 2
    assert [out for out in outs if not out.startswith("runs/")] == []
    assert "runs/" in (REPO / ".gitignore").read_text().split()


def test_readme_says_how_to_open_the_notebook_at_either_size():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(requirement.startswith(("notebook", "jupyterlab")) for requirement in extras["notebook"])
    assert 'pip install -e ".[notebook]"' in README and "jupyter notebook notebooks/gan_tutorial.ipynb" in README
    assert "MNIST_GAN_TUTORIAL_SCALE=small" in README
    assert 'os.environ.get("MNIST_GAN_TUTORIAL_SCALE", "full") == "small"' in \
        (REPO / "notebooks" / "tutorial_helpers.py").read_text()
    # The full size's time is the rendered run's, as docs/tutorial.md states it.
    full = re.search(r"rendered in (\d+) minutes", README).group(1)
    assert f"in {full} minutes on" in (REPO / "docs" / "tutorial.md").read_text().splitlines()[0]


def test_readme_says_how_linux_gets_the_cpu_build_of_torch():
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in README
    # The set-up lines themselves still install what an offline mirror serves.
    assert README.count("pip install torch==2.13.0 && pip install -e") == 2


def test_top_level_help_speaks_to_users():
    text = build_parser().format_help()
    assert "thin layer" not in text and "argv" not in text and "module" not in text
    assert "Train GANs on MNIST-like images" in text and "'mnist-gan COMMAND --help'" in text


@pytest.mark.parametrize("argv, command, unknown", [
    (["train", "--lrr", "1"], "mnist-gan train", "--lrr 1"),
    (["evaluate", "runs/x", "--inceptoin"], "mnist-gan evaluate", "--inceptoin"),
    (["generate", "runs/x", "-n", "4", "--nicee"], "mnist-gan generate", "--nicee"),
])
def test_a_typod_flag_points_at_its_commands_help(capsys, argv, command, unknown):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line == f"{command}: error: unrecognized arguments: {unknown}; see {command} --help"


def test_evaluate_says_what_it_reads_when_given_a_picture(tmp_path, capsys):
    from PIL import Image

    grid = tmp_path / "grid.png"
    Image.new("L", (28, 28)).save(grid)
    assert main(["evaluate", str(grid)]) == 2
    err = capsys.readouterr().err
    assert err == (f"mnist-gan: error: {grid}: evaluate reads a .ckpt, a run directory, a generator.safetensors, "
                   f"or an .npz/.npy of images (N, 28, 28)\n")


@pytest.fixture(scope="module")
def recommended_run(tmp_path_factory, mnist_5k) -> Path:
    """A short run of the default preset (LSGAN), tiny: width 8, 12 iterations of 16 on 160 real digits."""
    import numpy as np

    root = tmp_path_factory.mktemp("recommended")
    np.savez(root / "digits.npz", x_train=mnist_5k.images[:160].numpy(), y_train=mnist_5k.labels[:160].numpy())
    assert main(["train", "--data", str(root / "digits.npz"), "--out", str(root / "run"), "--width", "8",
                 "--batch-size", "16", "--iterations", "12", "--self-condition", "4", "--sample-every", "0",
                 "--device", "cpu", "--no-progress"]) == 0
    return root / "run"


def test_lsgan_scores_in_serve_order_the_samples(recommended_run):
    """LSGAN's D aims fakes at 0 and lands on either side of it; the reading clipped to [0, 1] showed 0.00 on every
    sample D puts below 0 (/api/samples: all zeros), and the nice view ranked ties."""
    from mnist_gan.run.checkpoint import load_generator
    from mnist_gan.sampling.sample import nicest
    from mnist_gan.serve.explorer import View
    from mnist_gan.serve.webapi import load_explorer

    explorer = load_explorer(recommended_run)
    assert "lsgan" in explorer.score_note
    with torch.no_grad():  # a D that puts every sample below 0, as a longer LSGAN run's does
        explorer.D.classify.bias -= 2
    grid = explorer.render(View(seed=4, n=16))
    scores = [round(float(s), 6) for s in grid.scores]  # what /api/samples sends
    assert len(set(scores)) == 16
    nice = explorer.nice(View(seed=4, n=8))
    assert torch.all(nice.scores[:-1] >= nice.scores[1:]) and len(set(nice.scores.tolist())) == 8
    model_config, G, _ = load_generator(recommended_run)
    _, outputs = nicest(G, explorer.D, model_config, 8, seed=4)
    assert outputs.max() < 0
    assert torch.equal(nice.scores, outputs)  # D's own output, unclipped


def test_readme_first_command_is_the_one_timed_and_says_how_long_it_takes():
    """The set-up line ends in the command benchmarks/first_command.py ran and timed; the section cites that log,
    and the times it gives are the log's (2 idle cores' wall time, start-up included, on the machines it names)."""
    from benchmarks.first_command import readme_first_command

    argv = readme_first_command()
    assert argv == ["train", "--iterations", "600", "--sample-every", "50", "--out", "runs/first", "--overwrite"]
    section = re.search(r"## Set up\n(.*?)```bash", README, flags=re.S).group(1)
    log = (REPO / re.search(r"benchmarks/results/first_command_cpu_[\d-]+\.txt", section).group(0)).read_text()
    assert f"\ncommand: mnist-gan {shlex.join(argv)}\n" in log and "--threads" not in log.splitlines()[0]
    fastest, slowest = map(int, re.search(r"(\d+) to (\d+) seconds on 2 idle CPU cores", section).groups())
    for seconds in (fastest, slowest):
        assert f"first command: {seconds} seconds wall" in log
    assert fastest < slowest < 120
    assert "classes covered 10 of 10" in log and "(13 grids)" in log  # a grid every 50 iterations, 0 to 600
    # The Chinese README's set-up line runs the same command and gives the same time and log.
    chinese = (REPO / "README.zh-CN.md").read_text()
    assert f"&& mnist-gan {shlex.join(argv)}\n" in chinese
    assert f"2 个空闲 CPU 核心上需 {fastest} 到 {slowest} 秒" in chinese and re.search(r"first_command_cpu_[\d-]+\.txt", section).group(0) in chinese
