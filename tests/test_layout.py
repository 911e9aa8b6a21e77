"""The layout's import directions (docs/architecture.md): cli -> experiment -> {teacher, student} ->
pipeline -> storage, teacher may import student, and no two modules import each other, directly or
round a longer circle. Imports inside functions count too: they are arrows all the same."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each folder may import the folders below it in this list, never one above.
LAYERS = ["storage", "pipeline", "student", "teacher", "experiment", "cli"]


def module_name(path: Path) -> str:
    """cpfd.pipeline.train for ROOT/pipeline/train.py; cpfd.student for ROOT/student/__init__.py."""
    parts = ["cpfd", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    paths = [ROOT / "cli.py", ROOT / "__init__.py"]
    for folder in LAYERS[:-1]:
        paths += sorted((ROOT / folder).glob("*.py"))
    return {module_name(p): p for p in paths}


def imported(path: Path, modules: dict[str, Path]) -> set[str]:
    """The cpfd modules a file imports, anywhere in it (`from cpfd.pipeline import distributed` is
    cpfd.pipeline.distributed; relative imports resolved)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    found.discard(module_name(path))
    return found


def layer(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else None
    return LAYERS.index(top) if top in LAYERS else None


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """`a -> b` for each import of a module from a folder above the importer's."""
    bad = []
    for a, targets in graph.items():
        for b in targets:
            if layer(a) is not None and layer(b) is not None and layer(b) > layer(a):
                bad.append(f"{a} -> {b}")
    return sorted(bad)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan's algorithm), sorted."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported(path, modules) for name, path in modules.items()}


def test_the_checks_catch_an_upward_arrow_and_a_circle():
    graph = {"cpfd.pipeline.train": {"cpfd.student.cpfd"}, "cpfd.student.cpfd": {"cpfd.storage.errors"},
             "cpfd.experiment.run": {"cpfd.experiment.report"}, "cpfd.experiment.report": {"cpfd.experiment.run"},
             "cpfd.teacher.dump": {"cpfd.student.xvlm"}}
    assert upward_arrows(graph) == ["cpfd.pipeline.train -> cpfd.student.cpfd"]
    assert circles(graph) == [["cpfd.experiment.report", "cpfd.experiment.run"]]


def test_the_graph_sees_imports_inside_functions_and_from_packages():
    graph = import_graph()
    assert "cpfd.teacher.crossfit" in graph["cpfd.cli"]  # imported inside the train-teacher command
    assert "cpfd.pipeline.distributed" in graph["cpfd.pipeline.train"]  # `from cpfd.pipeline import distributed`


def test_no_arrow_points_up():
    assert upward_arrows(import_graph()) == []


def test_no_modules_import_each_other():
    assert circles(import_graph()) == []


def test_pipeline_never_imports_a_stage_and_student_never_imports_teacher():
    graph = import_graph()
    def folders(targets):
        return {t.split(".")[1] for t in targets if t.count(".") >= 1}

    for module, targets in graph.items():
        if module.startswith("cpfd.pipeline."):
            assert not folders(targets) & {"teacher", "student", "experiment"}, module
        if module.startswith("cpfd.student."):
            assert not folders(targets) & {"teacher", "experiment"}, module
