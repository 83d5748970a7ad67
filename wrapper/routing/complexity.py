"""How demanding a request is, from its text alone: a score in [0, 1] and the cues that made it, in microseconds.

`model: auto` sends a request to the cheapest tier that can answer it well (wrapper/routing/tiers.py). The
score is a sum of weighted cues a person would name when sorting prompts by hand, so every decision can be
explained by the cues it lists:
- length: the last user message's words (a log scale: 8 words add nothing, 256 add the most);
- code: a fenced block, code-like syntax, or the names of languages and infrastructure tools;
- reasoning: asks to prove, derive, design, analyse, compare, debug, implement, optimise, plan, evaluate...;
- steps: "first ... then", "finally", numbered items, several requests joined ("and explain");
- tools offered, and a conversation several turns deep;
- simple: a short lookup ("what is", "who wrote", "translate", "convert", "define"...), which lowers the score.
Weights and the default threshold were set on tests/data/complexity_dev.yaml and are judged on the held-out
tests/data/complexity_heldout.yaml (tests/unit/test_complexity.py). Only the first 8,000 characters of the last
user message are searched for cues, so a huge prompt costs no more than a large one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

SCANNED_CHARS = 8_000


@dataclass(frozen=True)
class Complexity:
    score: float  # 0 (a lookup) .. 1 (frontier work)
    cues: tuple[str, ...]  # what raised or lowered it, strongest first

    def reason(self) -> str:
        return ", ".join(self.cues) or "no cue"


def _words(*words: str) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE)


_FENCE = re.compile(r"```|~~~")
_CODE_SYNTAX = re.compile(
    r"(?:\bdef \w+\(|\bfunction\b|\bclass \w+|\breturn\b|=>|->|::|\bimport \w|#include|\bSELECT\b.+\bFROM\b|"
    r"\bfor \(|\bwhile \(|\w+\(\)|[{};]\s*$|\$\w+|\b\w+\.\w+\()", re.MULTILINE)
_TECH = _words(
    "python", "java", "javascript", "typescript", "rust", "golang", "go program", "c\\+\\+", "c#", "kotlin", "swift",
    "sql", "postgres(?:ql)?", "mysql", "redis", "kafka", "rabbitmq", "kubernetes", "k8s", "docker", "terraform",
    "aws", "gcp", "azure", "spark", "pandas", "react", "node(?:\\.js)?", "django", "jvm", "regex", "api", "bash",
    "linux", "tls", "http/2", "grpc", "graphql", "microservices?", "database", "algorithm", "asyncio", "celery",
    "lambda", "s3", "cache", "schema", "index(?:es)?", "compiler", "parser", "thread(?:s|-safe)?", "concurren\\w+")
_REASONING = _words(  # work that needs a frontier model on its own
    "prove", "proof", "derive", "derivation", "design", "architect\\w*", "analy[sz]e", "analysis", "debug",
    "implement", "optimi[sz]e", "refactor", "step by step", "think through", "reason(?:ing)? through",
    "threat model", "formulate", "root causes?", "diagnose", "write an? (?:\\w+ )?(?:function|script|parser|"
    "algorithm|program|module|operator|decorator|class|query|regex|schema)", "invariant", "recurrence")
_WEIGHING = _words(  # asks to weigh or judge: frontier work when there is more than one, or with other cues
    "compare", "comparison", "trade-?offs?", "evaluate", "assess", "plan", "strategy", "model it", "explain why",
    "explain how", "why does", "why might", "why is", "recommend\\w*", "justify", "weigh", "implications?",
    "estimate", "migrat\\w+", "review", "build", "complexity", "failure modes?", "edge cases?", "detailed",
    "in depth", "pros and cons", "consider\\w*", "risks?", "tune", "case law", "probability", "solve",
    "calculat\\w+", "equation", "show (?:your|the) (?:work|reasoning|calculation)", "work out")
_STEPS = re.compile(
    r"\bfirst\b.{0,200}\b(?:then|next|finally)\b|\bfinally\b|\band then\b|^\s*\d+[.)]\s|\band explain\b|"
    r"\band (?:give|propose|say|show|suggest|list|identify|design|implement|estimate|compute|determine)\b",
    re.IGNORECASE | re.MULTILINE | re.DOTALL)
_SIMPLE = re.compile(
    r"^\s*(?:what(?:'s| is| are| does| was)\b|who\b|when\b|where\b|which\b|how many\b|how do you say\b|"
    r"translate\b|define\b|convert\b|give me (?:a|an|one|three|a one)\b|name\b|list (?:three|two|a few)\b|"
    r"fix the\b|correct the\b|is (?:a|an|it|the|\d+)\b|tell me (?:a|what)\b|suggest a\b|summari[sz]e\b|"
    r"rewrite\b|make this\b|shorten\b|format\b|capitali[sz]e\b|sort\b|put these\b|extract\b|classify\b|"
    r"hi\b|hello\b|thanks?\b|write a (?:short|one-line|subject|haiku)\b|reply to\b|please confirm\b)",
    re.IGNORECASE)


def classify(last_user: str, turns: int = 1, tools: bool = False) -> Complexity:
    """The score of a request whose last user message is `last_user`, in a conversation of `turns` user
    messages, offering tools or not."""
    text = last_user[:SCANNED_CHARS]
    words = len(text.split()) + (len(last_user) - len(text)) // 6  # beyond the scanned part: ~6 characters a word
    parts: list[tuple[float, str]] = []
    if words > 8:
        parts.append((min(0.25, 0.25 * (math.log2(words) - 3) / 5), f"length {words} words"))
    if _FENCE.search(text):
        parts.append((0.35, "code block"))
    elif len(_CODE_SYNTAX.findall(text)) >= 2:
        parts.append((0.2, "code"))
    tech = {m.lower() for m in _TECH.findall(text)}
    if tech:
        parts.append((min(0.2, 0.08 * len(tech)), "technical terms"))
    reasoning = {m.lower() for m in _REASONING.findall(text)} | {m.lower() for m in _WEIGHING.findall(text)}
    strong = any(_REASONING.fullmatch(cue) for cue in reasoning)
    if reasoning:
        weight = (0.35 if strong else 0.22) + 0.08 * (len(reasoning) - 1)
        parts.append((min(0.5, weight), "asks to " + "/".join(sorted(reasoning)[:3])))
    steps = len(_STEPS.findall(text))
    if steps:
        parts.append((min(0.25, 0.12 * steps), "several steps"))
    if tools:
        parts.append((0.25, "tools offered"))
    if turns > 2:
        parts.append((min(0.15, 0.05 * turns), f"{turns} turns"))
    if words < 25 and _SIMPLE.search(text) and not reasoning:
        parts.append((-0.2, "a lookup"))
    score = max(0.0, min(1.0, sum(weight for weight, _ in parts)))
    return Complexity(round(score, 3), tuple(cue for _, cue in sorted(parts, key=lambda p: -abs(p[0]))))
