"""The package's layout stays readable: no module past MAX_MODULE_LINES, no function past MAX_FUNCTION_LINES, and
imports between mnist_gan's modules flowing one way (no cycle among their module-level imports).

Run as a script (`python tests/test_layout.py`) it prints every module's line count, its longest function, and
every function over the limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_gan"
MAX_MODULE_LINES = 380  # the house's ~350, with room for a docstring or a constant; past it a module holds two things
MAX_FUNCTION_LINES = 60  # a screen: a function longer than that is usually two


def modules() -> dict[str, ast.Module]:
    """{module name: its syntax tree} for every .py file of the package (the package itself is "__init__")."""
    return {path.stem: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def line_count(name: str) -> int:
    return len((PACKAGE / f"{name}.py").read_text(encoding="utf-8").splitlines())


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


def module_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules that `tree` imports when it is imported: at module level, not inside functions."""
    imported = set()
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.If, ast.Try)):  # e.g. `try: import x except ImportError`, still module level
            pending.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            pending.extend(node.body)
        elif isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("mnist_gan.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] == "mnist_gan" and len(parts) > 1:
                imported.add(parts[1])
            elif node.module == "mnist_gan":  # `from mnist_gan import distributed`: a module, or a name of __init__
                imported |= {alias.name if alias.name in known else "__init__" for alias in node.names}
    return imported & known


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (as a path that returns to its start), or None when it has none."""
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for target in sorted(graph[name]):
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


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    graph = {name: module_imports(tree, set(trees)) - {name} for name, tree in trees.items()}
    graph.pop("__main__", None)  # `python -m mnist_gan` runs the CLI; nothing imports it
    for targets in graph.values():
        targets.discard("__main__")
    return graph


def test_no_module_is_too_long():
    long = {name: line_count(name) for name in modules() if line_count(name) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them where they hold two things): {long}"


def test_no_function_is_too_long():
    long = [f"{name}.py:{line} {function} ({length} lines)" for name, tree in modules().items()
            for function, line, length in function_lengths(tree) if length > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_imports_flow_one_way():
    graph = import_graph()
    assert graph["config"] <= {"errors", "fieldtypes"}, "config is the bottom layer: it imports no torch code"
    assert "cli" not in set().union(*graph.values()), "nothing imports the CLI: it is the top"
    cycle = import_cycle(graph)
    assert cycle is None, f"import cycle among mnist_gan modules: {' -> '.join(cycle)}"


def test_the_checks_see_what_they_check():
    """The checks above would fail if the layout broke: a long function and a cycle are found when present."""
    tree = ast.parse("def f():\n" + "    x = 1\n" * 70 + "\nclass C:\n    def g(self):\n        pass\n")
    assert [(name, length) for name, _, length in function_lengths(tree)] == [("f", 71), ("C.g", 2)]
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": set()}) is None
    local = ast.parse("import mnist_gan.config\nfrom mnist_gan import data\ndef f():\n    from mnist_gan import cli\n")
    assert module_imports(local, {"config", "data", "cli"}) == {"config", "data"}


if __name__ == "__main__":
    for name, tree in modules().items():
        lengths = function_lengths(tree)
        longest = max(lengths, key=lambda item: item[2], default=("-", 0, 0))
        flag = "  <- over the limit" if line_count(name) > MAX_MODULE_LINES else ""
        print(f"{line_count(name):5d}  {name + '.py':<18} longest function: {longest[0]} ({longest[2]} lines){flag}")
        for function, line, length in lengths:
            if length > MAX_FUNCTION_LINES:
                print(f"       {name}.py:{line} {function}: {length} lines  <- over the limit")
    cycle = import_cycle(import_graph())
    print("import cycle: " + (" -> ".join(cycle) if cycle else "none"))
