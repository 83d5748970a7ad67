"""One text of an answer (a choice's content, a tool call's arguments) checked as it streams.

Each piece is released at once except its last `hold` characters (the longest match any check in force can make),
so no match is released before it is seen whole; a match that reaches the end of what has come so far may still
grow (a term followed by more letters is not the term) and waits for the next piece. What a check found is masked
inside the held window (redact), ends the text (block: what came before the match is released) or is only noted
(annotate). The last released characters stay as context, for look-behinds and word boundaries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from wrapper.guardrails.checks import Finding, SpanCheck


@dataclass
class Hit:
    check: SpanCheck
    finding: Finding  # positions over the whole text


@dataclass
class Fed:
    released: str  # what may go to the client now (masked)
    hits: list[Hit] = field(default_factory=list)  # what the checks found in it (to record)
    blocked: Hit | None = None  # a block: the text ends after `released`


def mask(finding: Finding) -> str:
    return "[REDACTED]" if finding.type in ("term", "pattern") else f"[{finding.type.upper()}]"


class TextScanner:
    def __init__(self, checks: list[SpanCheck]) -> None:
        self.checks = checks
        self.hold = max((check.hold for check in checks), default=0)
        self.pending = ""  # come, not yet released
        self.context = ""  # the last released characters, as they came
        self.released = 0  # characters of the text released (or masked) so far
        self.masking: re.Pattern | None = None  # a redaction still running into the next pieces (a secret's rest)

    def feed(self, piece: str, final: bool = False) -> Fed:
        skipped = ""
        if self.masking is not None:  # the rest of a masked secret: masked too, however long
            if (more := self.masking.match(piece)) is not None:
                skipped, piece = piece[:more.end()], piece[more.end():]
                self.released += len(skipped)
                self._remember(skipped)
            if piece or final:
                self.masking = None
            if not piece:
                return Fed("")
        window = self.context + self.pending + piece
        base = len(self.context)
        offset = self.released - base  # window index -> position in the whole text
        limit = len(window) if final else max(base, len(window) - self.hold)
        confirmed: list[Hit] = []
        for check in self.checks:
            for found in check.find(window):
                if found.end <= base:
                    continue  # seen and dealt with when it was released
                if not final and found.end == len(window) and not check.continues:
                    limit = min(limit, max(base, found.start))  # may still grow: wait for the next piece
                else:
                    confirmed.append(Hit(check, found))
        confirmed.sort(key=lambda hit: (hit.finding.start, -hit.finding.end))
        for hit in confirmed:
            if hit.check.action == "block":  # seen whole: the text ends here, what came before it goes out
                cut = max(base, min(hit.finding.start, limit))
                before = [h for h in confirmed if h.finding.end <= cut]
                released = self._release(window, base, cut, [h for h in before if h.check.action == "redact"])
                return Fed(released, self._absolute(before, offset), self._absolute([hit], offset)[0])
        masked = [hit for hit in confirmed if hit.check.action == "redact" and hit.finding.start < limit]
        for hit in masked:  # a masked span is released whole, even past the hold
            limit = max(limit, hit.finding.end)
        noted = [hit for hit in confirmed if hit.finding.end <= limit]  # the rest is noted when it is released
        released = self._release(window, base, limit, masked)
        if masked and masked[-1].finding.end == len(window) and not final:
            self.masking = masked[-1].check.continues.get(masked[-1].finding.type)
        return Fed(released, self._absolute(noted, offset))

    def _release(self, window: str, base: int, cut: int, masked: list[Hit]) -> str:
        out, at = [], base
        for hit in masked:
            start, end = max(hit.finding.start, base), hit.finding.end
            if end <= at:
                continue  # inside a span masked already (overlapping findings)
            if start > at:
                out.append(window[at:start])
            if start >= at:
                out.append(mask(hit.finding))
            at = end
        if cut > at:
            out.append(window[at:cut])
        self.pending = window[max(cut, at):]
        self.released += max(cut, at) - base
        self._remember(window[base:max(cut, at)])
        return "".join(out)

    def _remember(self, text: str) -> None:
        self.context = (self.context + text)[-self.hold:] if self.hold else ""

    @staticmethod
    def _absolute(hits: list[Hit], offset: int) -> list[Hit]:
        return [Hit(h.check, Finding(h.finding.start + offset, h.finding.end + offset, h.finding.type)) for h in hits]
