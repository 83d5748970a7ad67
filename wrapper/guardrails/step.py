"""Step 3 of the flow: the endpoint's input checks, and the output checks the answer passes on its way back.

Input: every text the provider would read (the route's `user_texts`; prompt-injection heuristics read all but the
system prompt, which is the application's own) is checked; a `block` is a 400 whose `code` is the check's name,
`redact` masks the match in place (nothing downstream sees it), `annotate` only records. Output: see
wrapper/guardrails/output.py. Checks in shadow mode run beside the others and change nothing; every finding
(check, type, position, never the text) goes into the audit record's `guardrails`.
"""

from __future__ import annotations

from wrapper.config import Mode
from wrapper.config.guardrails import GuardrailCheck
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.guardrails.checks import Domain, Finding
from wrapper.guardrails.injection import DEFAULT_THRESHOLD, score
from wrapper.guardrails.output import OutputHalf, wants_json
from wrapper.guardrails.scanner import mask
from wrapper.guardrails.stack import Findings, Stage, compiled
from wrapper.pipeline import StepResult
from wrapper.routes import Unreadable


class GuardrailStep:
    name = "guardrails"

    def mode(self, ctx: RequestContext) -> Mode:
        policy = ctx.policy.guardrails
        # Shadow is the checks' own (they run beside the enforced ones, and output checks need a response half)
        return Mode.off if policy.mode is Mode.off or not (policy.input or policy.output) else Mode.enforce

    async def request(self, ctx: RequestContext) -> StepResult:
        stack = compiled(ctx.policy.guardrails)
        findings = Findings(ctx.guardrails)
        if stack.input[Mode.enforce] or stack.input[Mode.shadow]:
            try:
                slots = list(ctx.route.user_texts(ctx.body, ctx.policy.fields.allow))
                users = _users_texts(ctx, stack)
            except Unreadable as unreadable:
                raise GatewayError(400, f"With input guardrails on, '{unreadable.param}' must be text the gateway "
                                   "can read (not token ids).", param=unreadable.param,
                                   code="guardrail_unscannable_input") from None
            for mode in (Mode.shadow, Mode.enforce):  # shadow first: it sees the request as the client sent it
                await _check_input(stack.input[mode], mode, slots, users, findings)
        if findings.blocked():
            blocked = next(e for e in findings.entries.values() if e["action"] == "block" and e["mode"] == "enforce")
            return StepResult("block", {"check": blocked["check"]}, refusal=GatewayError(
                400, f"The request was blocked by the endpoint's guardrail '{blocked['check']}' "
                     f"({blocked['findings'][0]['type']}).", code=blocked["check"]))
        enforced = sorted({e["check"] for e in findings.entries.values() if e["mode"] == "enforce"})
        if enforced:  # the enforced checks that found something (masked or noted): the client may see which
            ctx.response_headers["x-gateway-guardrails"] = ",".join(enforced)
        decision = "redact" if any(e["action"] == "redact" and e["mode"] == "enforce"
                                   for e in findings.entries.values()) else "annotate" if enforced else "pass"
        half = OutputHalf(stack, ctx, findings, wants_json(ctx.body)) if stack.checks_output else None
        return StepResult(decision, {"checks": len(findings.entries)}, half=half)


def _users_texts(ctx: RequestContext, stack) -> set[tuple[int, object]]:
    """The texts the prompt-injection check reads (all but the system prompt), when one is in force."""
    if not any(c.check == "prompt_injection" for mode in (Mode.shadow, Mode.enforce) for c in stack.input[mode].others):
        return set()
    return {(id(c), k) for c, k in ctx.route.user_texts(ctx.body, ctx.policy.fields.allow, system=False)}


async def _check_input(stage: Stage, mode: Mode, slots: list, users: set, findings: Findings) -> None:
    enforcing = mode is Mode.enforce
    for check in stage.spans:
        if isinstance(check, Domain):
            continue
        for index, (container, key) in enumerate(slots):
            text = container[key]
            found = sorted(check.find(text), key=lambda f: f.start)
            for finding in found:
                findings.note("input", check, mode, finding, f"text {index}")
            if enforcing and check.action == "redact" and found:
                container[key] = _masked(text, found)
    texts = [container[key] for container, key in slots]
    for spec in stage.others:
        for index, finding in await _whole_input_findings(spec, stage, texts, slots, users):
            findings.note("input", spec, mode, finding, "texts" if index is None else f"text {index}")
            if enforcing and spec.action == "redact" and index is not None:
                container, key = slots[index]
                container[key] = _masked(container[key], [finding])


async def _whole_input_findings(spec: GuardrailCheck, stage: Stage, texts: list[str], slots: list,
                                users: set) -> list[tuple[int | None, Finding]]:
    """(the text's index, or None for all of them, and the finding) of a check that reads more than one span."""
    if spec.check == "size":
        total = sum(len(text) for text in texts)
        return [(None, Finding(spec.max_chars, total, "too_long"))] if total > spec.max_chars else []
    if spec.check == "prompt_injection":
        found = []
        for index, (container, key) in enumerate(slots):
            if (id(container), key) in users:
                value, rules = score(container[key])
                if value >= (spec.threshold or DEFAULT_THRESHOLD):
                    found.append((index, Finding(0, len(container[key]), "+".join(rules) or "injection")))
        return found
    if spec.check == "python":
        domain = next(c for c in stage.spans if isinstance(c, Domain) and c.spec is spec)
        return list(await domain.on_input(texts))
    return []


def _masked(text: str, found: list[Finding]) -> str:
    out, at = [], 0
    for finding in sorted(found, key=lambda f: f.start):
        if finding.start >= at:
            out += [text[at:finding.start], mask(finding)]
            at = finding.end
        elif finding.end > at:
            at = finding.end
    return "".join(out) + text[at:]
