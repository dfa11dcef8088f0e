"""Execute the tutorial notebook and render it, with its figures, into docs/tutorial.md and docs/tutorial.zh-CN.md.

    python notebooks/render.py                                   # full size: about 35 minutes on 2 CPU cores
    python notebooks/render.py --data ../shared/data/mnist       # train on another data set (default: mnist)
    python notebooks/render.py --scale small                     # a quick check of the renderer (noise pictures)

The English notebook runs once in a fresh kernel (its runs go to --workdir, git-ignored under runs/); both pages
take its outputs, each with its own edition's text (build.py keeps their code cells identical). Figures are
written as PNG files to docs/images/tutorial/. Needs nbclient, nbformat and ipykernel (the `test` extra).
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import re
import sys
import time
from datetime import date
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from build import EDITIONS, notebook  # noqa: E402  (beside this file)

DOCS = REPO / "docs"
PAGES = {"en": DOCS / "tutorial.md", "zh-CN": DOCS / "tutorial.zh-CN.md"}
IMAGES = DOCS / "images" / "tutorial"
FIGURE_NAME = re.compile(r"cell-\d+-\d+\.png")  # the files this script writes (and may replace) in IMAGES
CELL_TIMEOUT_S = 1800  # the longest full-size cell trains for a few minutes; this only stops a hung kernel
ANSI = re.compile(r"\x1b\[[0-9;]*m")
HEADER = {
    "en": ("*Rendered by `python notebooks/render.py` on {date} from "
           "[notebooks/gan_tutorial.ipynb](../notebooks/gan_tutorial.ipynb) at {scale} size, in {minutes:.0f} "
           "minutes on {machine}, torch {torch}, data: {data}. Regenerate it rather than edit it.*"),
    "zh-CN": ("*本页由 `python notebooks/render.py` 于 {date} 从 "
              "[notebooks/gan_tutorial.zh-CN.ipynb](../notebooks/gan_tutorial.zh-CN.ipynb) 生成：{scale} 规模，"
              "在 {machine} 上用时 {minutes:.0f} 分钟，torch {torch}，数据：{data}。请重新生成，不要手工编辑。*"),
}
SMALL_WARNING = {
    "en": "**Small size: every training ran a few iterations only, so the pictures are noise.**",
    "zh-CN": "**小规模运行：每次训练只有几次迭代，所以图像只是噪声。**",
}


def execute(scale: str, data: str, workdir: Path):
    """Run the English notebook in a fresh kernel in `workdir`; return (executed notebook, minutes)."""
    import nbformat
    from nbclient import NotebookClient

    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.update(MNIST_GAN_TUTORIAL_SCALE=scale, MNIST_GAN_TUTORIAL_DATA=data,
                      PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures
    executed = nbformat.read(EDITIONS["en"], as_version=4)
    started = time.perf_counter()
    NotebookClient(executed, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    nbformat.write(executed, workdir / "gan_tutorial.executed.ipynb")
    return executed, (time.perf_counter() - started) / 60


def output_blocks(index: int, outputs: list) -> list[str]:
    """Markdown for one code cell's outputs: text in ```text blocks, figures written to IMAGES and linked."""
    blocks, text, figures = [], [], 0
    for output in outputs:
        data = output.get("data", {})
        if output.get("output_type") == "stream":
            text.append(ANSI.sub("", output.get("text", "")))
        elif "image/png" in data:
            if text:
                blocks.append("```text\n" + "".join(text).rstrip("\n") + "\n```")
                text = []
            name = f"cell-{index:02d}-{figures}.png"
            (IMAGES / name).write_bytes(base64.b64decode(data["image/png"]))
            blocks.append(f"![figure](images/tutorial/{name})")
            figures += 1
        elif "text/plain" in data:
            text.append(ANSI.sub("", data["text/plain"]) + "\n")
    if text:
        blocks.append("```text\n" + "".join(text).rstrip("\n") + "\n```")
    return blocks


def page(language: str, executed, header: str) -> str:
    """The Markdown page: each text cell of `language`'s edition, each code cell with the run's outputs.

    Code is fenced `py`, not `python`: the cells depend on one another, and tests/test_docs.py runs each
    ```python block of docs/ on its own; the notebook test executes them in order instead.
    """
    parts = [header]
    for index, (cell, run) in enumerate(zip(notebook(language)["cells"], executed.cells, strict=True)):
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            parts.append(source)
        else:
            parts.append("```py\n" + source + "\n```")
            parts.extend(output_blocks(index, run.get("outputs", [])))
    return "\n\n".join(parts) + "\n"


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    return f"{model}, {device}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=["full", "small"], default="full")
    parser.add_argument("--data", default=os.environ.get("MNIST_GAN_TUTORIAL_DATA", "mnist"),
                        help="the data set the notebook trains on (default: mnist)")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "tutorial-render",
                        help="where the notebook runs and writes its runs (default: runs/tutorial-render)")
    args = parser.parse_args(argv)
    data = str(Path(args.data).resolve()) if Path(args.data).exists() else args.data  # the kernel runs elsewhere
    executed, minutes = execute(args.scale, data, args.workdir.resolve())
    IMAGES.mkdir(parents=True, exist_ok=True)
    for old in IMAGES.iterdir():
        if FIGURE_NAME.fullmatch(old.name):  # figures of an earlier rendering; nothing else is touched
            old.unlink()
    for language, path in PAGES.items():
        header = HEADER[language].format(date=date.today().isoformat(), scale=args.scale, minutes=minutes,
                                         machine=machine(), torch=torch.__version__, data=args.data)
        if args.scale == "small":
            header += "\n\n" + SMALL_WARNING[language]
        path.write_text(page(language, executed, header), encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
