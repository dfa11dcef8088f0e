"""Write the tutorial notebook in English and in Chinese from one source, so their code cells stay identical.

    python notebooks/build.py          # writes gan_tutorial.ipynb and gan_tutorial.zh-CN.ipynb
    python notebooks/build.py --check  # exit 1 if either file differs from what this source makes

Edit the cells in cells.py (text in both languages beside the code), never the .ipynb files: they are written
without outputs, and tests/test_notebooks.py checks they are up to date. Needs only the standard library.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cells import CELLS  # noqa: E402  (beside this file, not an installed module)

EDITIONS = {"en": HERE / "gan_tutorial.ipynb", "zh-CN": HERE / "gan_tutorial.zh-CN.ipynb"}
METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def _lines(text: str) -> list[str]:
    """Jupyter's on-disk form of a cell's source: lines that keep their newline, the last without one."""
    text = text.strip("\n")
    return [line + "\n" for line in text.split("\n")[:-1]] + [text.split("\n")[-1]]


def notebook(language: str) -> dict:
    """The notebook (nbformat 4.5, no outputs) in `language`: 'en' or 'zh-CN'."""
    cells = []
    for index, cell in enumerate(CELLS):
        common = {"id": f"cell-{index:02d}", "metadata": {}}
        if cell.kind == "markdown":
            cells.append({"cell_type": "markdown", **common, "source": _lines(cell.text[language])})
        else:
            cells.append({"cell_type": "code", "execution_count": None, **common, "outputs": [],
                          "source": _lines(cell.code)})
    return {"cells": cells, "metadata": {**METADATA, "language": language}, "nbformat": 4, "nbformat_minor": 5}


def serialise(nb: dict) -> str:
    """The file's text, as Jupyter writes it (one-space indent, UTF-8 kept readable, a final newline)."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def stale() -> list[Path]:
    """The editions whose file differs from what the source makes (or is missing)."""
    return [path for language, path in EDITIONS.items()
            if not path.is_file() or path.read_text(encoding="utf-8") != serialise(notebook(language))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the notebooks are up to date")
    args = parser.parse_args(argv)
    if args.check:
        for path in stale():
            print(f"{path}: out of date; run python notebooks/build.py", file=sys.stderr)
        return 1 if stale() else 0
    for language, path in EDITIONS.items():
        path.write_text(serialise(notebook(language)), encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
