"""`gateway up`'s log: each child's output as JSON lines, with what is noise for this gateway left out.

LiteLLM prints an ASCII banner and a feedback box at start (whatever its settings), colours some lines,
and warns about features this design does not use (its Admin UI's sign-in throttle, virtual-key checks
that custom auth skips). Each line is kept as one JSON object with `process` (litellm, wrapper) added:
a JSON line as it is, any other line as {"time", "level", "process", "message"} without its colour
codes; blank lines, the banner and the lines of IRRELEVANT are dropped (GATEWAY_LOG_REQUESTS keeps
everything, for debugging).
"""

from __future__ import annotations

import json
import re
import time

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DECORATION = re.compile(r"^[\s#\-=█╗╔╝╚═║'.]*$")  # the banner's and the feedback box's lines
_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
# What LiteLLM says that does not apply to this gateway (each line contains one of these).
IRRELEVANT = (
    "trusted_proxy_ranges is not set",  # the Admin UI's sign-in throttle: no Admin UI here
    "custom_auth_run_common_checks",  # DB teams' budgets: no LiteLLM database here (the gateway's limits are its own)
    "warm-up call: stopped before any provider",  # the gateway's own warm-up, stopped by its guard on purpose
    "Thank you for using LiteLLM",
    "The worst thing about this product is",
    "github.com/BerriAI/litellm/issues/new",
    "Using log_config:",
)


def log_line(process: str, raw: bytes, keep_all: bool = False) -> bytes | None:
    """The line as the gateway's log has it, or None to drop it."""
    text = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
    if not keep_all and (not text.strip() or _DECORATION.fullmatch(text) or any(p in text for p in IRRELEVANT)):
        return None
    if text.startswith("{"):
        try:
            entry = json.loads(text)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            return (json.dumps({**entry, "process": process}, ensure_ascii=False) + "\n").encode()
    level = _LEVEL.search(text[:60])
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()), "level": (level.group(1) if level else "INFO").lower(),
             "process": process, "message": text.strip()}
    return (json.dumps(entry, ensure_ascii=False) + "\n").encode()
