"""The tutorial notebook: built from its one source in both languages, committed without outputs, and executed end
to end at small size (MNIST_GAN_TUTORIAL_SCALE=small), failing on any error."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import torch
from helpers import REPO, quick_recipe

NOTEBOOKS = REPO / "notebooks"
EDITIONS = {"en": NOTEBOOKS / "gan_tutorial.ipynb", "zh-CN": NOTEBOOKS / "gan_tutorial.zh-CN.ipynb"}
CELL_TIMEOUT_S = 600  # one cell at small size takes seconds; this only stops a hung kernel
# The test's only change to the notebook, run before its first cell: the quick feature classifier the other tests
# use (helpers.quick_recipe), so that the evaluation cells take seconds rather than a minute on 2 cores.
QUICK_CLASSIFIER = f"import mnist_gan.evaluation.classifier as classifier\nclassifier.RECIPE = {quick_recipe()!r}"
RUN_NAMES = ("seed-short", "seed", "seed-relu", "recommended", "conditional", "fashion", "my-images")  # it trains


def load_build():
    spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def cells(path: Path, kind: str) -> list[str]:
    return ["".join(cell["source"]) for cell in read(path)["cells"] if cell["cell_type"] == kind]


def test_notebooks_are_built_from_their_source():
    assert load_build().stale() == [], "run python notebooks/build.py"


def test_editions_have_identical_code_and_translated_text():
    english, chinese = (EDITIONS[language] for language in ("en", "zh-CN"))
    assert cells(english, "code") == cells(chinese, "code")
    assert len(cells(english, "code")) >= 15
    text_en, text_zh = cells(english, "markdown"), cells(chinese, "markdown")
    assert len(text_en) == len(text_zh)
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for en, zh in zip(text_en, text_zh, strict=True):
        assert not cjk.search(en) and cjk.search(zh), en[:60]
        assert re.findall(r"^#+ ", en, flags=re.M) == re.findall(r"^#+ ", zh, flags=re.M), "the same sections"


def test_notebooks_are_committed_without_outputs():
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert set(EDITIONS.values()) <= set(notebooks)
    for path in notebooks:
        for cell in read(path)["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: clear its outputs"


def imports(source: str) -> tuple[set[str], set[str]]:
    """(modules imported, names imported from the module mnist_gan) by some Python source."""
    modules, names = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
            names |= {alias.name for alias in node.names} if node.module == "mnist_gan" else set()
    return modules, names


def test_the_tutorial_calls_only_the_public_api():
    """The notebook imports mnist_gan's public names, its helpers module and the example, and defines no function
    of its own (they live in notebooks/tutorial_helpers.py, where ruff and the tests see them); the helpers, too,
    import only public names, and each of them resolves."""
    import mnist_gan

    source = "\n".join(cells(EDITIONS["en"], "code"))
    modules, names = imports(source)
    assert {module for module in modules if module.startswith("mnist_gan")} == {"mnist_gan"}, modules
    assert {"tutorial_helpers", "seed_from_scratch"} <= modules, modules
    assert not re.findall(r"^\s*def \w+", source, flags=re.M), "move the notebook's functions into its helpers"

    helper_modules, helper_names = imports((NOTEBOOKS / "tutorial_helpers.py").read_text(encoding="utf-8"))
    assert {module for module in helper_modules if module.startswith("mnist_gan")} == {"mnist_gan"}, helper_modules
    used = names | helper_names
    assert used <= set(mnist_gan.__all__), sorted(used - set(mnist_gan.__all__))
    assert all(hasattr(mnist_gan, name) for name in used), [name for name in used if not hasattr(mnist_gan, name)]


def bash_commands(markdown: str) -> list[list[str]]:
    """The `mnist-gan ...` lines of the ```bash blocks of some Markdown, as argv."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", markdown, flags=re.S | re.M):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["mnist-gan"]:
                commands.append(words[1:])
    return commands


@pytest.mark.parametrize("path", [*EDITIONS.values(), REPO / "README.zh-CN.md"], ids=lambda p: p.name)
def test_commands_shown_parse(path):
    from mnist_gan.cli.parser import build_parser

    text = "\n".join(cells(path, "markdown")) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    commands = bash_commands(text)
    assert len(commands) >= 5
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit as error:
            pytest.fail(f"{path.name}: `mnist-gan {' '.join(argv)}` does not parse (exit {error.code})")


def execute(path: Path, workdir: Path) -> dict:
    """Run the notebook at small size in a fresh kernel, in `workdir`; return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(QUICK_CLASSIFIER))
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    return notebook


@pytest.mark.parametrize("language", [
    "en", pytest.param("zh-CN", marks=pytest.mark.slow),  # the same code cells (checked above): slow suite only
])
def test_the_tutorial_runs(language, tmp_path, monkeypatch):
    pytest.importorskip("nbclient", reason="pip install -e '.[test]' installs nbclient, nbformat and ipykernel")
    monkeypatch.setenv("MNIST_GAN_TUTORIAL_SCALE", "small")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend draws the figures
    notebook = execute(EDITIONS[language], tmp_path)

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert "small size" in text, text[:500]
    gap = re.search(r"largest gap between V\(D\*, G\) and -log 4 \+ 2 JS: (\S+)", text)
    assert gap and float(gap.group(1)) < 1e-6, "V(D*, G) = -log 4 + 2 JS, numerically"
    assert "for the 16 kept of 320" in text, f"the last cell ran: {text[-500:]}"
    assert re.search(r"one column per class: \S+", text), f"part 6 ran to its end: {text[-500:]}"
    shares = re.search(r"share of each class:\n(.*)\n", text)
    assert shares and len(re.findall(r"\d+\.\d%", shares.group(1))) == 10, "part 6 printed ten class shares"
    folder = tmp_path / "runs" / "tutorial" / "my_images"
    assert len([sub for sub in folder.iterdir() if sub.is_dir()]) == 10, "one sub-folder per class"
    assert all(len(list(sub.glob("*.png"))) == 20 for sub in folder.iterdir()), "20 images of each class (small)"
    assert len(figures) >= 14, f"every figure was drawn: {len(figures)}"
    for name in RUN_NAMES:
        assert (tmp_path / "runs" / "tutorial" / name / "generator.safetensors").is_file(), name


def test_the_readme_links_both_editions_and_the_rendered_tutorial():
    links = re.findall(r"\]\(([^)\s]+)\)", (REPO / "README.md").read_text(encoding="utf-8"))
    for target in ("notebooks/gan_tutorial.ipynb", "notebooks/gan_tutorial.zh-CN.ipynb", "docs/tutorial.md",
                   "README.zh-CN.md"):
        assert target in links and (REPO / target).is_file(), target


@pytest.mark.parametrize("page", ["README.zh-CN.md", "docs/tutorial.md", "docs/tutorial.zh-CN.md"])
def test_links_and_figures_resolve(page):
    """Every relative link and image of the pages that lead to the tutorial points at a committed file."""
    path = REPO / page
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, page
    missing = [t for t in local if not (path.parent / t).exists()]
    assert not missing, f"{page}: {missing}"
    if page.startswith("docs/tutorial"):
        assert sum(t.startswith("images/tutorial/") for t in local) >= 14, "the rendered figures"


def test_part_six_goes_on_with_the_digits_where_fashion_mnist_is_missing(tmp_path, monkeypatch, capsys):
    """Offline without Debian's dataset-fashion-mnist, part 6 says why and runs on the digits it already has."""
    monkeypatch.setenv("MNIST_GAN_TUTORIAL_FASHION", str(tmp_path / "no-such-set"))
    monkeypatch.syspath_prepend(str(NOTEBOOKS))
    spec = importlib.util.spec_from_file_location("tutorial_helpers_offline", NOTEBOOKS / "tutorial_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    digits = object()
    name, dataset = helpers.fashion_or_digits(digits)
    assert (name, dataset) == (helpers.DATA, digits)
    assert "no-such-set: no such data set or path" in capsys.readouterr().out


def test_part_six_writes_a_folder_the_image_folder_reader_takes_back(tmp_path):
    """write_image_folder's layout (a sub-folder per class, "/" in a name kept out of the path) loads as the same
    images, labels and class names."""
    from mnist_gan import DataConfig, load_dataset
    from mnist_gan.data.images import ImageDataset

    spec = importlib.util.spec_from_file_location("tutorial_helpers_folder", NOTEBOOKS / "tutorial_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (9, 28, 28), dtype=torch.uint8, generator=generator)
    source = ImageDataset(images, torch.tensor([0, 1, 2] * 3), "toy", "test", class_names=("T-shirt/top", "Bag", "x"))
    folder = helpers.write_image_folder(source, tmp_path / "mine", per_class=2)
    assert sorted(p.name for p in folder.iterdir()) == ["Bag", "T-shirt-top", "x"]
    back = load_dataset(DataConfig(data=str(folder)))
    assert back.class_names == ("Bag", "T-shirt-top", "x")
    assert sorted(back.labels.tolist()) == [0, 0, 1, 1, 2, 2]  # the reader mixes the classes: compare as sets
    for label, wanted in enumerate([[1, 4], [0, 3], [2, 5]]):  # "Bag" (source label 1) sorts first
        read = {bytes(image.numpy()) for image in back.images[back.labels == label]}
        assert read == {bytes(images[i].numpy()) for i in wanted}, back.class_names[label]
