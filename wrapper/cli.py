"""The `gateway` command."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from wrapper.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="An organisation's LLM gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start LiteLLM and the wrapper together")
    up.add_argument("--config", type=Path, help="gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    up.add_argument("--litellm-config", type=Path, help="LiteLLM config (default: $GATEWAY_LITELLM_CONFIG or ./litellm_config.yaml)")

    args = parser.parse_args(argv)
    if args.command == "up":
        from wrapper.supervisor import run_pair

        overrides = {k: v for k, v in (("config", args.config), ("litellm_config", args.litellm_config)) if v}
        settings = Settings(**overrides)
        return asyncio.run(run_pair(settings))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
