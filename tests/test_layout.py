"""The floors of docs/architecture.md, enforced from the source (AST; nothing is imported).

Each folder is one floor and imports only from the floors below it; files never import one
another in a circle; nothing imports the command line. A failure names the file, the line
and the import that breaks the rule.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dense_face"
FOLDERS = ("dense_face_core", "nodes", "headless", "train", "evaluation", "bench", "scripts")
# floor -> what its files may import of ours (module prefixes); a floor may always import itself
ALLOWED = {
    "dense_face_core": (),
    "nodes": ("dense_face_core",),
    "headless": ("dense_face_core",),
    "train": ("dense_face_core",),
    "evaluation": ("dense_face_core", "headless", "train.shards", "train.dataset"),
    "bench": ("dense_face_core", "nodes", "headless", "train", "evaluation"),
    "scripts": ("dense_face_core", "nodes", "headless", "train", "evaluation", "bench"),
    "__init__": ("nodes",),
    "cli": ("dense_face_core", "headless", "train", "evaluation", "bench"),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] or ["__init__"]
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    files = {"__init__": ROOT / "__init__.py", "cli": ROOT / "cli.py"}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            files[module_name(path)] = path
    return files


def _is_package(name: str, files: dict) -> bool:
    return name in files and files[name].name == "__init__.py"


def _resolve(name: str, files: dict) -> str | None:
    """The module of ours that ``name`` (dotted, from the root) lands in: itself or its longest known prefix."""
    while name:
        if name in files:
            return name
        name = name.rpartition(".")[0]
    return None


def _ours(name: str) -> str | None:
    """An absolute import name as a module path from the root, or None when it is not ours."""
    if name == PACKAGE:
        return "__init__"
    return name[len(PACKAGE) + 1:] if name.startswith(PACKAGE + ".") else None


def _relative_stem(package: str, level: int, module: str | None) -> str:
    base = package.split(".") if package and package != "__init__" else []
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def imports_of(module: str, path: Path, files: dict) -> list[tuple[int, str]]:
    """(line, our module) of every import in the file, function-level ones included."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if _is_package(module, files) else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [_ours(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            stem = _relative_stem(package, node.level, node.module)
            targets = [f"{stem}.{a.name}" if stem else a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = _ours(node.module or "")
            targets = [None] if stem is None else [f"{stem}.{a.name}" for a in node.names]
        else:
            continue
        for target in filter(None, targets):
            resolved = _resolve(target, files)
            if resolved is not None and resolved != module:
                out.append((node.lineno, resolved))
    return out


def floor_of(module: str) -> str:
    return module.split(".")[0]


@pytest.fixture(scope="module")
def graph():
    files = source_files()
    return files, {m: imports_of(m, p, files) for m, p in files.items()}


def test_every_import_points_down(graph):
    files, edges = graph
    bad = []
    for module, targets in edges.items():
        floor = floor_of(module)
        for line, target in targets:
            if floor_of(target) == floor:
                continue
            if target == "cli" or not any(target == a or target.startswith(a + ".") for a in ALLOWED[floor]):
                bad.append(f"{files[module].relative_to(ROOT)}:{line} imports {target} "
                           f"(floor {floor} may import {', '.join(ALLOWED[floor]) or 'nothing of ours'})")
    assert not bad, "imports against the floors:\n" + "\n".join(bad)


def test_no_import_circles(graph):
    files, edges = graph
    adjacency = {m: sorted({t for _, t in ts}) for m, ts in edges.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in adjacency.get(m, ()):
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in adjacency:
        if m not in state:
            visit(m, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_root_holds_only_entry_points():
    loose = sorted(p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "cli.py"))
    assert not loose, f"library modules loose at the repository root: {loose} (give them a floor)"


def test_the_checker_sees_real_violations(tmp_path):
    """The resolver is not vacuous: it finds the imports it must judge, relative and absolute."""
    files = source_files()
    found = dict(imports_of("nodes.model_nodes", files["nodes.model_nodes"], files))
    assert "dense_face_core.weight_file" in found.values()
    fake = tmp_path / "probe.py"
    fake.write_text("from ..headless import runner\nimport dense_face.nodes.face_nodes\n")
    targets = {t for _, t in imports_of("train.probe", fake, files)}
    assert targets == {"headless.runner", "nodes.face_nodes"}
