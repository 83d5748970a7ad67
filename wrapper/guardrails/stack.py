"""An endpoint's guardrails compiled once (term automata, patterns, domain classes), and the record they leave."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wrapper.config import Mode
from wrapper.config.guardrails import GuardrailCheck, GuardrailsPolicy
from wrapper.guardrails.checks import Finding, SpanCheck, span_check

MAX_FINDINGS_KEPT = 10  # per check in a record: the count says how many more


@dataclass
class Stage:
    """The checks of one stage (input or output) in one mode."""

    spans: list[SpanCheck] = field(default_factory=list)
    others: list[GuardrailCheck] = field(default_factory=list)  # size, prompt_injection, json, must_match

    def __bool__(self) -> bool:
        return bool(self.spans or self.others)


@dataclass
class Stack:
    input: dict[Mode, Stage]
    output: dict[Mode, Stage]
    must_match: dict[str, list[re.Pattern]]  # check name -> its patterns

    @property
    def checks_output(self) -> bool:
        return bool(self.output[Mode.enforce] or self.output[Mode.shadow])


def compiled(policy: GuardrailsPolicy) -> Stack:
    """The policy's checks built once (kept on the policy object, which lives as long as its config)."""
    if policy._stack is None:
        policy._stack = _build(policy)  # a private attribute: set once on the frozen model, rebuilt with a new config
    return policy._stack


def _build(policy: GuardrailsPolicy) -> Stack:
    stages = {}
    for name, checks in (("input", policy.input), ("output", policy.output)):
        by_mode = {Mode.enforce: Stage(), Mode.shadow: Stage()}
        for check in checks:
            mode = policy.mode_of(check)
            if mode is Mode.off:
                continue
            spans = span_check(check)
            if spans is not None:
                by_mode[mode].spans.append(spans)
            if spans is None or check.check == "python":  # a domain check may also look at the whole text
                by_mode[mode].others.append(check)
        stages[name] = by_mode
    patterns = {check.label: [re.compile(pattern, re.DOTALL) for pattern in check.patterns]
                for check in policy.output if check.check == "must_match"}
    return Stack(stages["input"], stages["output"], patterns)


class Findings:
    """What the checks found in one request, as the audit record keeps it: per check, the first few findings' type
    and position (never the text), and how many there were."""

    def __init__(self, record: list[dict]) -> None:
        self.record = record  # ctx.guardrails
        self.entries: dict[tuple[str, str], dict] = {}

    def note(self, stage: str, check: GuardrailCheck | SpanCheck, mode: Mode, finding: Finding, where: str,
             action: str | None = None) -> None:
        spec = check if isinstance(check, GuardrailCheck) else check.spec
        key = (stage, spec.label)
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = {"stage": stage, "check": spec.label, "kind": spec.check, "mode": mode.value,
                                         "action": action or spec.action, "count": 0, "findings": []}
            self.record.append(entry)
        entry["count"] += 1
        if action == "block":
            entry["action"] = "block"
        if len(entry["findings"]) < MAX_FINDINGS_KEPT:
            entry["findings"].append({"type": finding.type, "in": where, "at": finding.start,
                                      "length": finding.end - finding.start})

    def blocked(self) -> bool:
        return any(e["action"] == "block" and e["mode"] == "enforce" for e in self.entries.values())
