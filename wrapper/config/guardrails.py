"""The guardrails policy in gateway.yaml: ordered input and output checks, each with an action and a mode.

    guardrails:
      mode: enforce                 # the stack's mode; a check may set its own
      input:
        - {check: prompt_injection, action: block}
        - {check: banned_terms, terms: [project falcon], action: block}
      output:
        - {check: secrets, action: redact}
        - {check: python, name: refund_limit, path: "wrapper.guardrails.examples.refund_limit:RefundLimit",
           options: {max_usd: 100}}

An endpoint's `guardrails` replaces the named settings of its tenant's (an endpoint that gives `output:` has
exactly that output stack). What each check does and holds back is in wrapper/guardrails/checks.py.
"""

from __future__ import annotations

import importlib
import re
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from wrapper.config.base import Mode, _Strict

MAX_TERM_CHARS = 64  # a term list's hold-back on streams is its longest term: bounded
MAX_HOLD_CHARS = 256  # no check may hold back more of a stream than this

CHECKS_IN = frozenset({"banned_terms", "profanity", "regex", "secrets", "size", "prompt_injection", "python"})
CHECKS_OUT = frozenset({"banned_terms", "profanity", "regex", "secrets", "size", "json", "must_match", "python"})
_MASKABLE = frozenset({"banned_terms", "profanity", "regex", "secrets", "python"})


class GuardrailCheck(_Strict):
    check: Literal["banned_terms", "profanity", "regex", "secrets", "size", "prompt_injection", "json", "must_match",
                   "python"]
    name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")  # the error code and record's name
    action: Literal["block", "redact", "annotate"] = "block"
    mode: Mode | None = None  # None: the stack's
    terms: tuple[str, ...] = ()  # banned_terms
    patterns: tuple[str, ...] = ()  # regex (any may match), must_match (the whole answer must match one)
    max_match: int = Field(64, ge=1, le=MAX_HOLD_CHARS)  # regex: the longest text a pattern can match (hold-back)
    max_chars: int | None = Field(None, ge=1)  # size
    threshold: float | None = Field(None, gt=0, le=1)  # prompt_injection (None: its default)
    path: str | None = Field(None, pattern=r"^[\w.]+:\w+$")  # python: module:Class
    options: dict = Field(default_factory=dict)  # python: the class's keyword arguments

    @property
    def label(self) -> str:
        return self.name or self.check

    @model_validator(mode="after")
    def _complete(self) -> GuardrailCheck:
        kind = self.check
        if kind == "banned_terms":
            if not self.terms:
                raise ValueError("banned_terms needs `terms`")
            long = [t for t in self.terms if len(t) > MAX_TERM_CHARS or not t.strip()]
            if long:
                raise ValueError(f"banned_terms: terms must be 1-{MAX_TERM_CHARS} characters: {long[0][:80]!r}")
        if kind in ("regex", "must_match"):
            if not self.patterns:
                raise ValueError(f"{kind} needs `patterns`")
            for pattern in self.patterns:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{kind}: {pattern!r} is not a regular expression: {exc}") from None
        if kind == "size" and self.max_chars is None:
            raise ValueError("size needs `max_chars`")
        if kind == "python":
            if not self.path:
                raise ValueError("python needs `path` (module:Class)")
            module, _, name = self.path.partition(":")
            try:
                getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"python: cannot import {self.path}: {exc}") from None
        if self.action == "redact" and kind not in _MASKABLE:
            raise ValueError(f"{kind} can block or annotate, not redact")
        return self


class GuardrailsPolicy(_Strict):
    mode: Mode = Mode.off
    input: tuple[GuardrailCheck, ...] = ()
    output: tuple[GuardrailCheck, ...] = ()
    _stack: object = PrivateAttr(default=None)  # the checks compiled (wrapper/guardrails/stack.py), once

    @model_validator(mode="after")
    def _stages(self) -> GuardrailsPolicy:
        for stage, allowed, checks in (("input", CHECKS_IN, self.input), ("output", CHECKS_OUT, self.output)):
            names = [check.label for check in checks]
            for check in checks:
                if check.check not in allowed:
                    raise ValueError(f"{check.check} is not an {stage} check")
            if len(set(names)) != len(names):
                raise ValueError(f"{stage} checks need distinct names (`name`): {names}")
        return self

    def mode_of(self, check: GuardrailCheck) -> Mode:
        return Mode.off if self.mode is Mode.off else (check.mode or self.mode)
