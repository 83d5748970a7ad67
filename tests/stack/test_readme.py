"""The README's runnable blocks (marked `<!-- runs -->`) work as written, against a gateway set up as `make run` does.

A folder stands in for the repository: the venv, `litellm_config.yaml`, and `var/gateway.yaml` with the demo
tenant and `var/demo.key` made by the Makefile's own commands; `gateway up` runs there. The one change to what
the README says is the port: the test's own free port in place of 8080. Blocks run in order, each in a new
`bash -e` (shell) or `python` (Python) in that folder, as a reader would paste them in a terminal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.support.processes import BIN, ROOT, free_port, stop, wait_until

RUNNABLE = re.compile(r"<!-- runs -->\n```(sh|python)\n(.*?)```", re.DOTALL)
DEMO_PRICES = (0.000001, 0.000002)  # litellm_config.yaml's demo model, made up


def readme_blocks() -> list[tuple[str, str]]:
    return RUNNABLE.findall((ROOT / "README.md").read_text())


def test_the_readme_marks_the_blocks_a_newcomer_runs():
    kinds = [kind for kind, _ in readme_blocks()]
    assert kinds.count("sh") >= 3 and kinds.count("python") >= 1


def test_every_runnable_readme_block_works_as_written(tmp_path):
    work = tmp_path / "repo"
    (work / "var").mkdir(parents=True)
    (work / ".venv").symlink_to(ROOT / ".venv")
    (work / "litellm_config.yaml").write_text((ROOT / "litellm_config.yaml").read_text())
    makefile = (ROOT / "Makefile").read_text()
    # The Makefile's own recipe for var/gateway.yaml, so that the README is tried on what `make run` serves.
    recipe = re.search(r"^\$\(DEMO_CONFIG\):\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    script = recipe.replace("$(VENV)", ".venv").replace("$@", "var/gateway.yaml").replace("\t@", "\t")
    subprocess.run(["bash", "-e", "-c", script.replace("\t", "")], cwd=work, check=True, capture_output=True)

    port = free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "GATEWAY_LITELLM_PORT": str(free_port())}
    env.pop("GATEWAY_CONFIG", None)
    env.pop("GATEWAY_VAR_DIR", None)
    with open(tmp_path / "gateway.log", "ab") as log:  # as `make run` starts it, in the stand-in's folder
        gateway = subprocess.Popen([str(BIN / "gateway"), "up"], cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                   env={**env, "GATEWAY_CONFIG": "var/gateway.yaml"}, start_new_session=True)
    try:
        wait_until(f"http://127.0.0.1:{port}/readyz", 120, gateway, tmp_path / "gateway.log")
        outputs = []
        for kind, block in readme_blocks():
            text = block.replace("localhost:8080", f"localhost:{port}").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            command = ["bash", "-e", "-c", text] if kind == "sh" else [sys.executable, "-c", text]
            done = subprocess.run(command, cwd=work, env={**env, "PATH": f"{BIN}:{env['PATH']}"},
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"README block failed:\n{text}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            outputs.append(done.stdout)
    finally:
        stop(gateway)

    # The cost query's answer: the demo's calls, priced as litellm_config.yaml prices them.
    costs = next(json.loads(out) for out in outputs if '"total"' in out)
    total = costs["total"]
    assert total["requests"] >= 3 and total["cost"] > 0
    expected = total["tokens_in"] * DEMO_PRICES[0] + total["tokens_out"] * DEMO_PRICES[1]
    assert abs(total["cost"] - expected) < 1e-9, (total, expected)
    assert "Hello from the gateway's demo model" in "".join(outputs)
    assert "x-gateway-route: tier=frontier; score=" in "".join(outputs).lower()  # model: auto, on the demo's tiers
    assert (work / "var" / "demo-audit.ndjson").stat().st_size > 0
