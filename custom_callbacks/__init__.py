"""LiteLLM callbacks of the gateway, named in litellm_config.yaml as `custom_callbacks.<instance>`.

Instances are made on first access (PEP 562), so the wrapper can import the
small shared modules here (the seal) without loading LiteLLM itself.
"""

from __future__ import annotations

from functools import cache


@cache
def _wrapper_only_guard():
    from custom_callbacks.guard import WrapperOnlyGuard

    return WrapperOnlyGuard()


@cache
def _langfuse_traces():
    from custom_callbacks.langfuse_traces import LangfuseTraces

    return LangfuseTraces()


_INSTANCES = {"wrapper_only_guard": _wrapper_only_guard, "langfuse_traces": _langfuse_traces}


def __getattr__(name: str):
    if name in _INSTANCES:
        return _INSTANCES[name]()
    raise AttributeError(f"module 'custom_callbacks' has no attribute {name!r}")
