"""The tree shows the flow: no import circles among the gateway's modules, and the README's layout names real files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("wrapper", "custom_callbacks")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Every gateway module a file imports, at any level of the file (a function's own imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from a import b` imports module a.b when there is one, else a
                names.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
    return {name for name in names if name in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_no_module_imports_one_that_imports_it_back():
    known = modules()
    graph = {name: imports_of(path, known) - {name} for name, path in known.items()}
    assert cycles(graph) == []


def test_the_readme_layout_names_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## How it is put together", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`((?:wrapper|custom_callbacks|tests|bench|helm)/[\w/.]*)`", section))
    assert named, "the layout section names no files"
    assert sorted(path for path in named if not (ROOT / path).exists()) == []
    # Every module and package of the wrapper is in it, so the tree and the text cannot drift apart.
    listed = {path.rstrip("/") for path in named}
    missing = [f"{path.relative_to(ROOT)}" for path in sorted((ROOT / "wrapper").iterdir())
               if path.name not in ("__init__.py", "__pycache__") and f"{path.relative_to(ROOT)}" not in listed]
    assert missing == []
