"""`gateway up` runs the pair as one unit: a signal stops both, a death of either stops the other."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
import uuid

import httpx

from tests.support.identity import gateway_cli
from tests.support.processes import BIN, ROOT, free_port, start, stop, wait_until, write_litellm_config
from tests.support.wrapper import write_tenants


def start_pair(tmp_path) -> tuple[subprocess.Popen, int, int]:
    port, litellm_port = free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    gateway_cli(config, "tenants", "add", "demo")
    (tmp_path / "key").write_text(gateway_cli(config, "keys", "create", "--tenant", "demo", "--name", "k"))
    process = start(
        [str(BIN / "gateway"), "up", "--config", str(config), "--litellm-config", str(ROOT / "litellm_config.yaml")],
        tmp_path / "gateway.log",
        env={"GATEWAY_PORT": str(port), "GATEWAY_LITELLM_PORT": str(litellm_port), "GATEWAY_VAR_DIR": str(tmp_path / "var")},
    )
    wait_until(f"http://127.0.0.1:{port}/readyz", 90, process, tmp_path / "gateway.log")
    return process, port, litellm_port


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def is_listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except httpx.ConnectError:
        return False


def test_demo_model_answers_and_sigterm_stops_both(tmp_path):
    process, port, litellm_port = start_pair(tmp_path)
    try:
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {(tmp_path / 'key').read_text()}"},
            timeout=30,
        )
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == "Hello from the gateway's demo model."
        log = (tmp_path / "gateway.log").read_text()
        assert "[litellm]" in log and f"ready: http://127.0.0.1:{port}/v1" in log

        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(30) == 0
        assert not is_listening(port) and not is_listening(litellm_port)
        # By default the audit log is the per-request record: LiteLLM writes no line per request.
        log = (tmp_path / "gateway.log").read_text()
        assert "POST /v1/chat/completions" not in log and "gateway_request" not in log
    finally:
        stop(process)
    # The embedded default: the answer's record is in the SQLite file under var/, signed at shutdown.
    verify = subprocess.run([str(BIN / "gateway"), "audit", "verify"], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "GATEWAY_VAR_DIR": str(tmp_path / "var")})
    assert verify.returncode == 0 and "demo: intact, 1 records" in verify.stdout, verify.stdout + verify.stderr
    with sqlite3.connect(tmp_path / "var" / "gateway.db") as db:
        assert db.execute("SELECT count(*) FROM audit_checkpoints WHERE tenant = 'demo' AND seq = 1").fetchone() == (1,)


def test_when_litellm_dies_the_wrapper_stops_and_the_exit_is_nonzero(tmp_path):
    process, port, litellm_port = start_pair(tmp_path)
    try:
        litellm_pid = next(pid for pid in children_of(process.pid) if "litellm" in open(f"/proc/{pid}/cmdline").read())
        os.kill(litellm_pid, signal.SIGKILL)
        assert process.wait(30) != 0
        time.sleep(0.2)
        assert not is_listening(port)
        assert "litellm exited; stopping the other" in (tmp_path / "gateway.log").read_text()
    finally:
        stop(process)


def test_litellm_is_warmed_up_before_ready_and_no_provider_sees_it(tmp_path, fake_provider):
    """LiteLLM's first stream used to arrive in one piece (~150 ms late, its set-up): the wrapper warms it up first."""
    config = tmp_path / "gateway.yaml"
    key = write_tenants(config, {"solo": {"models": ["paced"]}})["solo"]
    models = write_litellm_config(tmp_path / "litellm_config.yaml", fake_provider.url, {"paced": {}})
    port = free_port()
    process = start([str(BIN / "gateway"), "up", "--config", str(config), "--litellm-config", str(models)],
                    tmp_path / "gateway.log", env={"GATEWAY_PORT": str(port), "GATEWAY_LITELLM_PORT": str(free_port()),
                                                   "GATEWAY_VAR_DIR": str(tmp_path / "var")})
    try:
        wait_until(f"http://127.0.0.1:{port}/readyz", 90, process, tmp_path / "gateway.log")
        marker = f"first-{uuid.uuid4().hex}"
        arrivals = []
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {key}"},
                          json={"model": "paced", "stream": True, "messages": [{"role": "user", "content": marker}]}) as reply:
            for line in reply.iter_lines():
                if '"content"' in line:
                    arrivals.append(time.monotonic())
        [sent] = fake_provider.requests_containing(marker)
        times = sent["chunk_times"]
        assert len(arrivals) == len(times) == 5
        for index, arrived in enumerate(arrivals[:-1]):  # each chunk before the provider sent the next (50 ms on)
            assert times[index] <= arrived < times[index + 1] + 0.04, (index, arrivals, times)
        assert fake_provider.requests_containing("warm-up") == []
        assert "did not come through the wrapper" not in (tmp_path / "gateway.log").read_text()
    finally:
        stop(process)
