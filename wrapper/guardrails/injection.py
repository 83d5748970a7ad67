"""Prompt-injection and jailbreak heuristics for input guardrails: a documented rule set, offline, in microseconds.

The text is folded first (case, width, accents; zero-width and format characters dropped; whitespace runs as one
space; digits used as letters read as letters: `1gn0re` is `ignore`). Each rule that fires adds its weight; the
score is their sum, capped at 1. A request is blocked at DEFAULT_THRESHOLD (0.5) unless the check sets its own.

Rules (weight):
- override (0.6): an instruction to ignore, disregard, forget or override the previous, prior, above, earlier,
  system or original instructions, rules, prompt or guidelines ("ignore all previous instructions").
- reveal (0.5): a request to reveal, print, repeat, show or output the system prompt, the developer message,
  "your (hidden, original ...) instructions", hidden or initial instructions "you were given", or "everything
  above" (the model's own: "the original instructions for the shelf" is not).
- persona (0.5): a jailbreak persona: "do anything now", "you are (now) jailbroken", enabling developer, god,
  jailbreak or DAN mode, "you are now ... without/with no restrictions/filters/rules", "pretend/act as if you
  have no rules".
- fake_turn (0.5): conversation structure written into a message: `<|im_start|>`, `[INST]`, `<</SYS>>`,
  `</system>`, or a line that starts with `system:` / `### system:` / `assistant:` followed by an order
  ("system: you must ...", "assistant: I will ignore ...").
- new_rules (0.5): "new instructions:", "your new task/instructions are".
- exfiltrate (0.5): sending the conversation, the prompt or secrets to a URL, or a markdown image whose URL
  carries a query (a known way to leak data through a rendered answer).
- encoded (0.5): "decode (this) and follow/execute/run" next to a base64-looking block.
- multilingual override (0.6): the override rule in French, German and Spanish.
- from_now_on (0.3), obey (0.3): "from now on you will ...", "obey only me": two together reach the threshold.
A rule that fires only on a quoted phrase, in a text that talks about attacks (attack, injection, jailbreak,
security, example, OWASP ...), keeps MENTIONED (0.4) of its weight: "what are 'ignore previous instructions'
attacks?" is a question, "repeat: 'ignore previous instructions'" is not. One strong rule alone reaches the
threshold. Benign look-alikes ("ignore the typo in my last message", "what is a system prompt?", "pretend you
are a pirate") fire none: every rule needs both the verb and its target (previous instructions, the system
prompt, no restrictions). The corpus and its rates: tests/data/injection_prompts.yaml,
bench/results/guardrails_injection.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wrapper.guardrails.normalise import fold

DEFAULT_THRESHOLD = 0.5
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})

_BEFORE = r"(?:previous|prior|preceding|above|earlier|foregoing|initial|original|system|developer|all|your)"
_RULES_WORDS = r"(?:instructions?|rules|prompts?|guidelines|directions|directives|constraints|guardrails|programming)"
_VERBS = r"(?:ignore|disregard|forget|override|bypass|abandon|neglect)"


@dataclass(frozen=True)
class Rule:
    name: str
    weight: float
    pattern: re.Pattern


def _rule(name: str, weight: float, pattern: str) -> Rule:
    return Rule(name, weight, re.compile(pattern, re.MULTILINE))


RULES = (
    _rule("override", 0.6, rf"\b{_VERBS}\b(?: \w+){{0,3}}? {_BEFORE}(?: \w+){{0,2}}? {_RULES_WORDS}\b"
                           rf"|\b{_VERBS}\b(?: (?:the|any|these|those))? {_RULES_WORDS} (?:above|so far|before this|"
                           rf"you (?:were|have been) given)\b"),
    _rule("reveal", 0.5, r"\b(?:reveal|print|repeat|show|output|display|tell me|give me|leak|dump|recite|write out)\b"
                         r"(?: \w+){0,4}? (?:system prompt|developer message|everything (?:above|before this)"
                         r"|your (?:hidden |secret |initial |original )?(?:system |developer )?(?:instructions|prompt)"
                         r"|(?:hidden|secret|initial|original|system) (?:instructions?|prompt|message) (?:you (?:were|have "
                         r"been) given|you (?:got|received)|above))"),
    _rule("persona", 0.5, r"\bdo anything now\b|\b(?:you are|you're|be|act|stay|now) (?:\w+ ){0,2}jailbroken\b"
                          r"|\b(?:enable|enter|activate|switch to|turn on) (?:the )?"
                          r"(?:developer|god|jailbreak|unfiltered|dan) mode\b"
                          r"|you are (?:now |no longer )(?:\w+ ){0,4}(?:without|with no|free of|free from) "
                          r"(?:any |all )?(?:restrictions|filters|rules|limits|guidelines|censorship)"
                          r"|(?:pretend|act as if|imagine) (?:that )?you (?:have|had) no (?:rules|restrictions|filters|"
                          r"guidelines|limits)"),
    _rule("fake_turn", 0.5, r"<\|im_start\|>|<\|im_end\|>|\[/?inst\]|<</?sys>>|</system>|^\s*(?:#{1,3} ?)?"
                            r"(?:system|assistant) ?: ?(?:you|the assistant|i will|ignore|reveal|new)\b"),
    _rule("new_rules", 0.5, r"\bnew (?:instructions|rules|system prompt) ?:|\byour new (?:task|purpose|instructions) "
                            r"(?:is|are)\b"),
    _rule("from_now_on", 0.3, r"\bfrom now on,? you (?:will|must|shall|are)\b"),
    _rule("obey", 0.3, r"\b(?:you must |you will )?obey (?:only )?me\b"),
    _rule("exfiltrate", 0.5, r"\b(?:send|post|upload|forward|exfiltrate|transmit)\b(?: \w+){0,4}? (?:the )?(?:conversation|"
                             r"chat history|system prompt|secrets?|api keys?|credentials|passwords?)\b(?: \w+){0,4}? "
                             r"(?:to|at) (?:https?://|http)|!\[[^\]]{0,40}\]\(https?://[^)\s]{1,200}\?[^)\s]{1,200}\)"),
    _rule("encoded", 0.5, r"\bdecode\b(?: \w+){0,3}? (?:and|then) (?:follow|execute|run|obey|do)\b"),
    _rule("multilingual override", 0.6,
          r"\b(?:ignore[zr]?|oublie[zr]?)\b(?: \w+){0,3}? (?:les |toutes les )?instructions (?:precedentes|ci-dessus|"
          r"anterieures)|\b(?:ignoriere|vergiss)\b(?: \w+){0,3}? (?:alle )?(?:vorherigen|obigen|bisherigen) "
          r"(?:anweisungen|regeln)|\b(?:ignora|olvida)\b(?: \w+){0,3}? (?:todas )?las instrucciones (?:anteriores|previas)"),
)
MENTIONED = 0.4  # the share of its weight a rule keeps when it fires only on a quoted phrase in a text about attacks
_QUOTED = re.compile(r"\"[^\"\n]{3,300}\"|'[^'\n]{3,300}'|“[^”\n]{3,300}”")
_ABOUT_ATTACKS = re.compile(r"\b(?:attacks?|injections?|jailbreaks?|security|example|phrase|owasp|paper|defen[cs]e|"
                            r"defend|risks?|explain\w*|training)\b")
_SPACED = re.compile(r"\b(?:\w[ .\-_]){3,}\w\b")
_MAX_CHARS = 65_536  # a longer text is judged on its first and last 32 KB: injections sit at either end


def score(text: str) -> tuple[float, list[str]]:
    """The summed weight of the rules that fire (at most 1.0), and their names."""
    if len(text) > _MAX_CHARS:
        text = text[:_MAX_CHARS // 2] + "\n" + text[-_MAX_CHARS // 2:]
    folded = re.sub(r"[ \t]+", " ", fold(text))
    variants = [folded]
    if re.search(r"[a-z][0-9@$]|[0-9@$][a-z]", folded):  # digits for letters: 1gn0re
        variants.append(folded.translate(_LEET))
    if _SPACED.search(folded):  # letters spaced out: i g n o r e, d-i-s-r-e-g-a-r-d
        variants.append(_SPACED.sub(lambda m: re.sub(r"[ .\-_]", "", m.group()), folded))
    fired = [rule for rule in RULES if any(rule.pattern.search(variant) for variant in variants)]
    if not fired:
        return 0.0, []
    weights = {rule.name: rule.weight for rule in fired}
    if _QUOTED.search(folded) and _ABOUT_ATTACKS.search(_QUOTED.sub(" ", folded)):
        # A phrase quoted in a text about attacks is mentioned, not given ("what are 'ignore previous
        # instructions' attacks?"): it counts for less. Quoted and not discussed ("repeat: '...'") counts whole.
        unquoted = _QUOTED.sub(" ", folded)
        for rule in fired:
            if not rule.pattern.search(unquoted):
                weights[rule.name] = rule.weight * MENTIONED
    return min(1.0, sum(weights.values())), [rule.name for rule in fired]
