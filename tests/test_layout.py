"""The package's layout stays what docs/architecture.md draws.

- Rooms in one order, bottom to top: each subpackage imports only from the rooms below it (and the package's
  own errors module), at module level or inside a function; within a room, module-level imports have no cycle.
- settings/ imports no torch or numpy: a config can be read, checked and printed without them.
- run/ is the only place a run file's name appears in code (docstrings may describe the files).
- No module past MAX_MODULE_LINES, no function past MAX_FUNCTION_LINES.

Run as a script (`python tests/test_layout.py`) it prints every module's line count and its longest function.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_gan"
MAX_MODULE_LINES = 350  # past this a module usually holds two concepts
MAX_FUNCTION_LINES = 60  # a screen: a function longer than that is usually two
# Bottom to top; rooms on one line sit side by side and import neither each other nor anything above.
ROOMS = [("settings", "io"), ("data",), ("gan",), ("run",), ("sampling",), ("evaluation",), ("diagnosis",),
         ("training",), ("serve",), ("cli",)]
LEVEL = {room: level for level, rooms in enumerate(ROOMS) for room in rooms}
BASE = {"errors"}  # beneath every room: any module may import it
TOP = {"__init__", "__main__"}  # the public API and `python -m mnist_gan`: above every room
RUN_FILE_NAMES = ("config.json", "metrics.jsonl", "evaluations.jsonl", "losses.png", "generator.safetensors",
                  "last.ckpt", "progress.gif", "checkpoints", "samples", "tensorboard", "diagnosis", "iter_")
# A name alone or as a relative path ("samples", "samples/iter_", "iter_"); URL routes ("/api/samples") and
# sentences that mention a file are not paths into a run.
RUN_FILE_LITERAL = re.compile(r"^(?:[\w.-]+/)*(?:" + "|".join(re.escape(name) for name in RUN_FILE_NAMES)
                              + r")(?:/[\w.-]*)*$")


def module_name(path: Path) -> str:
    """'gan.step' for mnist_gan/gan/step.py, 'gan' for its __init__.py, 'errors' for mnist_gan/errors.py."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def modules() -> dict[str, ast.Module]:
    """{module name: its syntax tree} for every .py file of the package."""
    return {module_name(path): ast.parse(path.read_text(encoding="utf-8"), str(path))
            for path in sorted(PACKAGE.rglob("*.py"))}


def room(name: str) -> str:
    return name.split(".")[0]


def line_count(name: str) -> int:
    path = PACKAGE / (name.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / name.replace(".", "/") / "__init__.py"
    return len(path.read_text(encoding="utf-8").splitlines())


def function_lengths(tree: ast.Module) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length in lines) of every function and method, nested ones included."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    found.append((name, child.lineno, child.end_lineno - child.lineno + 1))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def imported_modules(tree: ast.Module, *, module_level_only: bool) -> set[str]:
    """Dotted names below mnist_gan that `tree` imports ('gan.step', 'errors', '' for the package itself)."""
    nodes = _module_level_nodes(tree) if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name[len("mnist_gan."):] for alias in node.names if alias.name.startswith("mnist_gan.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "mnist_gan":
                found |= {alias.name if alias.name == "__version__" else "" for alias in node.names}
            elif node.module.startswith("mnist_gan."):
                found.add(node.module[len("mnist_gan."):])
    return found


def _module_level_nodes(tree: ast.Module) -> list[ast.AST]:
    """Every node run when the module is imported: `try: import x except ImportError` and `if ...: import` count,
    function and class bodies do not."""
    found, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        found.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            pending.extend(ast.iter_child_nodes(node))
    return found


def layer_violations(imports: dict[str, set[str]]) -> list[str]:
    """'importer -> imported' for every import that goes up, sideways between rooms, or into the public API."""
    bad = []
    for importer, targets in imports.items():
        for target in targets:
            if target == "__version__" or room(target) in BASE or room(importer) in TOP:
                continue
            if room(importer) in BASE or target == "" or room(target) in TOP:
                bad.append(f"{importer} -> {target or 'mnist_gan'}")
            elif room(target) != room(importer) and LEVEL[room(target)] >= LEVEL[room(importer)]:
                bad.append(f"{importer} -> {target}")
    return sorted(bad)


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (as a path that returns to its start), or None when it has none."""
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target, [*path, target])
                if found:
                    return found
        state[name] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def run_file_literals(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of every string in code, docstrings aside, that names a run file or folder."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and RUN_FILE_LITERAL.match(node.value.strip())]


def test_every_module_sits_in_a_room():
    loose = [name for name in modules() if room(name) not in LEVEL | dict.fromkeys(BASE | TOP)]
    assert not loose, f"modules outside the rooms of docs/architecture.md: {loose}"


def test_each_room_imports_only_from_the_rooms_below_it():
    imports = {name: imported_modules(tree, module_level_only=False) for name, tree in modules().items()}
    assert layer_violations(imports) == []


def test_no_import_cycle_at_module_level():
    trees = modules()
    graph = {name: {target for target in imported_modules(tree, module_level_only=True) if target in trees} - {name}
             for name, tree in trees.items()}
    cycle = import_cycle(graph)
    assert cycle is None, f"import cycle among mnist_gan modules: {' -> '.join(cycle)}"


def test_settings_import_no_torch():
    for name, tree in modules().items():
        if room(name) == "settings":
            heavy = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                                  if isinstance(node, ast.ImportFrom) and node.module}
            assert not heavy & {"torch", "numpy"}, f"{name} imports {heavy & {'torch', 'numpy'}}"


def test_run_file_names_appear_only_in_run():
    found = [f"{name}:{line} {text!r}" for name, tree in modules().items() if room(name) != "run"
             for line, text in run_file_literals(tree)]
    assert not found, f"run-file names outside mnist_gan/run/ (ask run.directory.RunDir for the path): {found}"


def test_no_module_is_too_long():
    long = {name: line_count(name) for name in modules() if line_count(name) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them where they hold two things): {long}"


def test_no_function_is_too_long():
    long = [f"{name}:{line} {function} ({length} lines)" for name, tree in modules().items()
            for function, line, length in function_lengths(tree) if length > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_checks_see_what_they_check():
    """Each check above fails when its rule is broken: shown on small made-up trees."""
    tree = ast.parse("def f():\n" + "    x = 1\n" * 70 + "\nclass C:\n    def g(self):\n        pass\n")
    assert [(name, length) for name, _, length in function_lengths(tree)] == [("f", 71), ("C.g", 2)]
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": set()}) is None
    code = ast.parse("import mnist_gan.settings.config\nfrom mnist_gan.data import images\n"
                     "try:\n    from mnist_gan.gan import step\nexcept ImportError:\n    pass\n"
                     "def f():\n    from mnist_gan.cli import parser\n")
    assert imported_modules(code, module_level_only=True) == {"settings.config", "data", "gan"}
    assert imported_modules(code, module_level_only=False) == {"settings.config", "data", "gan", "cli"}
    assert layer_violations({"gan.step": {"data.images", "errors", "settings.config"}}) == []
    assert layer_violations({"gan.step": {"run.checkpoint"}, "io.files": {"settings.config"},
                             "data.images": {""}, "errors": {"io.files"}}) == [
        "data.images -> mnist_gan", "errors -> io.files", "gan.step -> run.checkpoint", "io.files -> settings.config"]
    named = ast.parse('"""Writes metrics.jsonl."""\nA = "metrics.jsonl"\nB = f"iter_{1:08d}.png"\n'
                      'C = "a run\'s config.json, as a sentence"\nD = run / "samples"\nE = "/api/samples"\n'
                      'F = "samples/iter_"\n')
    assert sorted(line for line, _ in run_file_literals(named)) == [2, 3, 5, 7]


if __name__ == "__main__":
    for name, tree in modules().items():
        lengths = function_lengths(tree)
        longest = max(lengths, key=lambda item: item[2], default=("-", 0, 0))
        flag = "  <- over the limit" if line_count(name) > MAX_MODULE_LINES else ""
        print(f"{line_count(name):5d}  {name:<24} longest function: {longest[0]} ({longest[2]} lines){flag}")
    imports = {name: imported_modules(tree, module_level_only=False) for name, tree in modules().items()}
    print("imports against the layer order:", layer_violations(imports) or "none")
