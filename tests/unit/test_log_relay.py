"""`gateway up`'s log relay (wrapper/cli/relay.py): JSON lines per process, LiteLLM's noise left out."""

from __future__ import annotations

import json

from wrapper.cli.relay import log_line


def test_plain_lines_become_json_without_colour_codes():
    line = json.loads(log_line("litellm", b"\x1b[32mLiteLLM: Proxy initialized with Config\x1b[0m\n"))
    assert line["process"] == "litellm" and line["message"] == "LiteLLM: Proxy initialized with Config"
    assert json.loads(log_line("litellm", b"12:00:00 - LiteLLM Proxy:ERROR: x.py:1 - it broke\n"))["level"] == "error"


def test_json_lines_keep_their_fields_and_gain_the_process():
    line = json.loads(log_line("wrapper", b'{"level": "warning", "message": "m", "tenant": "acme"}\n'))
    assert line == {"level": "warning", "message": "m", "tenant": "acme", "process": "wrapper"}


def test_the_banner_blank_lines_and_irrelevant_warnings_are_dropped_unless_everything_is_kept():
    noise = [b"\n", "   ██╗     ██╗████████╗\n".encode(), b"\x1b[1;37m#----------#\x1b[0m\n",
             b" Thank you for using LiteLLM! - Krrish & Ishaan\n",
             b"WARNING: trusted_proxy_ranges is not set or not a valid list\n"]
    assert [log_line("litellm", raw) for raw in noise] == [None] * len(noise)
    assert log_line("litellm", noise[-1], keep_all=True) is not None


def test_a_line_that_is_not_utf8_or_not_json_is_still_one_json_line():
    assert json.loads(log_line("litellm", b"\xff\xfe broken\n"))["message"].endswith("broken")
    assert json.loads(log_line("litellm", b"{not json\n"))["message"] == "{not json"
