"""The routes the README's Contract table documents, and the routes a wrong path's 404 names, comparable as sets."""

from __future__ import annotations

import re

from tests.support.processes import ROOT

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_ROUTE = re.compile(rf"\b({'|'.join(METHODS)}) (/[^\s`,]*)")
_PARAMETER = re.compile(r"\{[^}]*\}")


def route_key(method: str, path: str) -> str:
    """`METHOD /path`, each path parameter as `{}`: the README, FastAPI and the 404 each name parameters their way
    (`{id}`, `{response_id}`, `{model:path}`)."""
    return f"{method.upper()} {_PARAMETER.sub('{}', path)}"


def contract_routes() -> set[str]:
    """The routes in the first column of the README's Contract table (HTTP, wrapper)."""
    section = (ROOT / "README.md").read_text().split("\n## Contract\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n| route |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows, "the Contract table has no routes"
    return {route_key(method, path) for row in rows for method, path in _ROUTE.findall(row.split(" | ", 1)[0])}


def routes_named(message: str) -> list[str]:
    """The routes a wrong path's 404 message lists ("... The gateway serves: GET /a, POST /b."), in its order."""
    served = message.split("The gateway serves:", 1)[1]
    return [route_key(method, path.rstrip(".")) for method, path in _ROUTE.findall(served)]
