"""The output checks: the answer on its way back, whole or as it streams (the guardrails step's response half).

Each text of the answer (a choice's content, a tool call's arguments) has its own scanner (scanner.py): a stream
is released as it comes but for the hold-back of the checks in force. A block ends the text where the match
began: in a stream, the chunk carrying it says `finish_reason: content_filter` (chat, completions), then an error
event in the route's protocol ends the stream (never `[DONE]`); a whole answer becomes a 400 (type
`content_filter`, code: the check's name). Checks that need a text's end (json, must_match, a domain check's
`check_output_end`) run when it ends; JSON is also followed as it comes, so an answer that can no longer become
JSON ends at once. Shadow checks read a copy and change nothing: with no check enforced, every event passes as
the very bytes that came.
"""

from __future__ import annotations

import orjson

from wrapper.config import Mode
from wrapper.config.guardrails import GuardrailCheck
from wrapper.context import RequestContext
from wrapper.errors import GatewayError
from wrapper.guardrails.checks import Domain, Finding
from wrapper.guardrails.json_checks import JsonFollower, wants_json
from wrapper.guardrails.scanner import TextScanner
from wrapper.guardrails.stack import Findings, Stack, Stage
from wrapper.upstream.sse import event_data, json_object

__all__ = ["OutputHalf", "wants_json"]


class _Text:
    """One text of the answer: its scanners, what came of it, and its JSON follower."""

    def __init__(self, half: OutputHalf, kind: str) -> None:
        self.scanners = {mode: TextScanner(stage.spans) for mode, stage in half.stages.items() if stage.spans}
        self.json = {mode: JsonFollower(half.json_wanted) for mode, ends in half.ends.items()
                     if half.json_wanted is not None and kind == "content" and any(c.check == "json" for c in ends)}
        self.came: list[str] = []  # as it came (the end checks read it whole)
        self.sent: list[str] = []  # as it was released
        self.length = 0
        self.done = False
        self.oversize: set[tuple] = set()  # size checks that have noted this text already
        self.stopped: set[Mode] = set()  # shadow: what enforce would have ended is read no further


class OutputHalf:
    def __init__(self, stack: Stack, ctx: RequestContext, findings: Findings, json_wanted: dict | None) -> None:
        self.stages = {mode: stage for mode, stage in stack.output.items() if stage}
        self.stack, self.ctx, self.route, self.findings = stack, ctx, ctx.route, findings
        self.json_wanted = json_wanted
        self.enforcing = Mode.enforce in self.stages
        # the whole-text checks of each mode: those that read a text's end, and size
        self.ends = {mode: [c for c in stage.others if c.check in ("json", "must_match", "python")]
                     for mode, stage in self.stages.items()}
        self.sizes = {mode: [c for c in stage.others if c.check == "size"] for mode, stage in self.stages.items()}
        self.texts: dict[tuple, _Text] = {}
        self.ended: GatewayError | None = None  # a block: the stream ends after this event
        masking = [check for check in self.stages.get(Mode.enforce, Stage()).spans if check.action == "redact"]
        if masking:
            ctx.record_mask = lambda text: TextScanner(masking).feed(text, final=True).released

    # -- a whole answer --
    def answer(self, body: bytes) -> bytes:
        reply = json_object(body)
        if reply is None:
            return body
        changed = False
        for index, (container, key) in enumerate(self.route.answer_texts(reply)):
            kind = "arguments" if key == "arguments" else "content"
            text = container[key]
            released, blocked = self._feed((index, key), text, True, kind)
            if blocked is not None:
                raise self._error(blocked, "The answer was withheld")
            if released != text:
                container[key], changed = released, True
        return orjson.dumps(reply) if changed else body

    # -- a stream --
    def event(self, event: bytes) -> bytes:
        if self.ended is not None:
            return b""
        parsed = event_data(event)
        if parsed is None:
            return event
        head, chunk = parsed
        before, changed = b"", False
        pieces = list(self.route.stream_texts(chunk))
        for at, piece in enumerate(pieces):
            if piece.kind == "end":  # the text ends with this event: what it holds goes out first
                before += self._flush(piece.key)
                continue
            if piece.kind == "whole":  # the text again, whole (Responses' *.done): as it was released
                state = self.texts.get(piece.key)
                if state is not None and self.enforcing:
                    piece.container[piece.field], changed = "".join(state.sent), True
                continue
            text = piece.container.get(piece.field) or ""
            released, blocked = self._feed(piece.key, text, piece.final, piece.kind)
            if released != text:
                changed = True
                if released or piece.field in piece.container:
                    piece.container[piece.field] = released
            if blocked is not None:
                self._end_choices(chunk, piece.key, pieces[at + 1:])
                self.ended = self._error(blocked, "The answer was ended")
                changed = True
                break
        if not changed:
            return before + event
        return before + head + b"data: " + orjson.dumps(chunk) + b"\n\n"

    def end(self) -> bytes:
        """Before the stream's end: whatever each text still holds, and its end checks."""
        if self.ended is not None:
            return b""
        return b"".join(self._flush(key) for key in list(self.texts))

    def _flush(self, key: tuple) -> bytes:
        state = self.texts.get(key)
        if state is None or state.done or self.ended is not None:
            return b""
        released, blocked = self._feed(key, "", True, "content")
        chunks = self.route.closing_chunks({key: released}) if released else []
        if blocked is not None:
            chunks = chunks or self.route.closing_chunks({key: ""})
            for chunk in chunks:
                self._end_choices(chunk, key, [])
            self.ended = self._error(blocked, "The answer was ended")
        return b"".join(self.route.sse(chunk) for chunk in chunks)

    # -- every text --
    def _feed(self, key: tuple, piece: str, final: bool, kind: str) -> tuple[str, tuple | None]:
        state = self.texts.get(key)
        if state is None:
            state = self.texts[key] = _Text(self, kind)
        if state.done:
            return piece, None
        state.done = final
        state.came.append(piece)
        state.length += len(piece)
        released, blocked = piece, None
        for mode in (Mode.shadow, Mode.enforce):  # shadow first: it reads the text as it came
            if mode not in self.stages or mode in state.stopped:
                continue
            found = self._checks(state, mode, piece, final, "/".join(str(part) for part in key))
            if mode is Mode.enforce:
                released, blocked = found
            elif found[1] is not None:
                state.stopped.add(mode)
        state.sent.append(released)
        return released, blocked

    def _checks(self, state: _Text, mode: Mode, piece: str, final: bool, where: str) -> tuple[str, tuple | None]:
        for check in self.sizes[mode]:
            if state.length > check.max_chars and (mode, check.label) not in state.oversize:
                state.oversize.add((mode, check.label))
                if self._note(check, mode, Finding(check.max_chars, state.length, "too_long"), where):
                    return "", (check, "too_long")
        if (follower := state.json.get(mode)) is not None and not follower.feed(piece):
            check = next(c for c in self.ends[mode] if c.check == "json")
            if self._note(check, mode, Finding(follower.failed_at, follower.failed_at + 1, "invalid_json"), where):
                return "", (check, "invalid_json")
        released = piece
        if (scanner := state.scanners.get(mode)) is not None:
            fed = scanner.feed(piece, final)
            for hit in fed.hits:
                self.findings.note("output", hit.check, mode, hit.finding, where)
            if fed.blocked is not None:
                self.findings.note("output", fed.blocked.check, mode, fed.blocked.finding, where, "block")
                return fed.released, (fed.blocked.check.spec, fed.blocked.finding.type)
            released = fed.released
        if final:
            text = "".join(state.came)
            for check in self.ends[mode]:
                for finding in self._at_end(check, mode, state, text):
                    if self._note(check, mode, finding, where):
                        return released, (check, finding.type)
        return released, None

    def _at_end(self, check: GuardrailCheck, mode: Mode, state: _Text, text: str) -> list[Finding]:
        if check.check == "json":
            follower = state.json.get(mode)
            return follower.at_end() if follower is not None else []
        if check.check == "must_match":
            ok = any(p.fullmatch(text) for p in self.stack.must_match[check.label])
            return [] if ok else [Finding(0, len(text), "no_match")]
        domain = next(c for c in self.stages[mode].spans if isinstance(c, Domain) and c.spec is check)
        return domain.at_end(text)

    def _note(self, check: GuardrailCheck, mode: Mode, finding: Finding, where: str) -> bool:
        """Record a finding of a whole-text check; True when it blocks (the text ends here)."""
        self.findings.note("output", check, mode, finding, where, "block" if check.action == "block" else None)
        return check.action == "block"

    def _end_choices(self, chunk: dict, key: tuple, rest: list) -> None:
        for piece in rest:  # not read yet: not released
            if piece.field in piece.container and piece.kind in ("content", "arguments"):
                piece.container[piece.field] = ""
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == key[0]:
                choice["finish_reason"] = "content_filter"

    def _error(self, blocked: tuple, what: str) -> GatewayError:
        check, kind = blocked
        return GatewayError(400, f"{what} by the endpoint's guardrail '{check.label}' ({kind}).",
                            type="content_filter", code=check.label)
