"""The tree shows the flow: no import circles among the gateway's modules, the README's layout names real files, and
its Contract table every route the app serves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support.contract import contract_routes, route_key, routes_named

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


def fastapi_routes(routes) -> set[str]:
    """Every route of the app's FastAPI part, included routers' too, as `METHOD /path` (HEAD aside: it follows GET)."""
    found = set()
    for route in routes:
        if hasattr(route, "original_router"):  # an included router (FastAPI 0.165)
            found |= fastapi_routes(route.original_router.routes)
        elif hasattr(route, "routes") and not hasattr(route, "methods"):  # a mount, or an older FastAPI's router
            found |= fastapi_routes(route.routes)
        else:
            assert getattr(route, "methods", None), f"a route of an unknown kind: {route!r}"
            found |= {route_key(method, route.path) for method in route.methods if method != "HEAD"}
    return found


async def test_the_readme_contract_lists_every_route_the_app_serves_and_only_those(gateway):
    """A new route cannot go undocumented, and the table names no route that is not there."""
    documented = contract_routes()
    wrong = await gateway.client.get("/v1/no-such-route")
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "route_not_found"
    named = set(routes_named(wrong.json()["error"]["message"]))  # the model routes and FastAPI's, as a client is told
    served = named | fastapi_routes(gateway.app.api.routes)  # FastAPI's own list too: one left out of its schema
    assert sorted(served - documented) == []  # served, not in the README's table
    assert sorted(documented - served) == []  # in the table, not served
    assert named == documented  # and the 404 names each of them
    for route in sorted(documented):  # each answers (without credentials: refused), none as a wrong path
        method, path = route.split(" ", 1)
        reply = await gateway.client.request(method, path.replace("{}", "x"))
        assert not (reply.status_code == 404 and reply.json()["error"]["code"] == "route_not_found"), route
