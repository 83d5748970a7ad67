"""Whether a text that is still arriving can become one JSON value (RFC 8259), decided character by character.

A stack of open containers and a small lexer state; each character is read once, so a stream's pieces cost what
they contain. The first character after which the text can no longer be the start of a JSON document is
`failed_at`; from then on every feed is False. Nesting deeper than MAX_DEPTH fails (a hostile answer cannot grow
the stack without bound).
"""

from __future__ import annotations

MAX_DEPTH = 128
_WHITESPACE = frozenset(" \t\n\r")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = frozenset('"\\/bfnrtu')
_LITERALS = {"t": "true", "f": "false", "n": "null"}

# What the parser expects next, outside strings, numbers and literals.
VALUE, VALUE_OR_CLOSE, KEY, KEY_OR_CLOSE, COLON, COMMA_OR_CLOSE, DONE = range(7)


class JsonPrefix:
    """Feed text as it arrives; knows at once when the text can no longer be the start of one JSON value."""

    def __init__(self) -> None:
        self.stack: list[str] = []  # "{" or "[" per open container
        self.expect = VALUE
        self.lexing: str | None = None  # "string", "key", "number", "literal"
        self.escape = 0  # in a string: 0, or 1 after a backslash, or 2-5 inside \\uXXXX (hex digits still to read)
        self.number = ""  # where the number being read is in its grammar (_number_step)
        self.literal = ""  # the literal being read and how far (`true`, `false`, `null`)
        self.read = 0
        self._failed_at: int | None = None

    @property
    def failed_at(self) -> int | None:
        return self._failed_at

    @property
    def depth(self) -> int:
        return len(self.stack)

    def complete(self) -> bool:
        if self._failed_at is not None or self.stack:
            return False
        if self.lexing == "number":
            return self.number in _NUMBER_ENDS
        return self.expect == DONE and self.lexing is None

    def feed(self, text: str) -> bool:
        if self._failed_at is not None:
            return False
        for char in text:
            if not self._char(char):
                self._failed_at = self.read
                return False
            self.read += 1
        return True

    def _char(self, char: str) -> bool:
        lexing = self.lexing
        if lexing in ("string", "key"):
            return self._string(char)
        if lexing == "literal":
            self.literal += char
            word = _LITERALS[self.literal[0]]
            if not word.startswith(self.literal):
                return False
            if self.literal == word:
                self.lexing = None
                self._value_ended()
            return True
        if lexing == "number":
            if step := _number_step(self.number, char):
                self.number = step
                return True
            if self.number not in _NUMBER_ENDS:
                return False
            self.lexing = None
            self._value_ended()
        return self._structure(char)

    def _string(self, char: str) -> bool:
        if self.escape == 1:
            if char not in _ESCAPES:
                return False
            self.escape = 5 if char == "u" else 0
            return True
        if self.escape > 1:
            if char not in _HEX:
                return False
            self.escape = 0 if self.escape == 2 else self.escape - 1
            return True
        if char == "\\":
            self.escape = 1
        elif char == '"':
            key, self.lexing = self.lexing == "key", None
            if key:
                self.expect = COLON
            else:
                self._value_ended()
        elif ord(char) < 0x20:  # a control character must be escaped
            return False
        return True

    def _structure(self, char: str) -> bool:
        if char in _WHITESPACE:
            return True
        expect = self.expect
        if expect in (VALUE, VALUE_OR_CLOSE):
            if expect == VALUE_OR_CLOSE and char == "]":
                return self._close("[")
            return self._value(char)
        if expect in (KEY, KEY_OR_CLOSE):
            if expect == KEY_OR_CLOSE and char == "}":
                return self._close("{")
            if char != '"':
                return False
            self.lexing = "key"
            return True
        if expect == COLON:
            if char != ":":
                return False
            self.expect = VALUE
            return True
        if expect == COMMA_OR_CLOSE:
            if char == ",":
                self.expect = KEY if self.stack[-1] == "{" else VALUE
                return True
            if char in "]}":
                return self._close("[" if char == "]" else "{")
            return False
        return False  # DONE: only whitespace may follow the value

    def _value(self, char: str) -> bool:
        if char in "[{":
            if len(self.stack) >= MAX_DEPTH:
                return False
            self.stack.append(char)
            self.expect = VALUE_OR_CLOSE if char == "[" else KEY_OR_CLOSE
        elif char == '"':
            self.lexing = "string"
        elif char in _LITERALS:
            self.lexing, self.literal = "literal", char
        elif char == "-" or char in _DIGITS:
            self.lexing, self.number = "number", _number_step("start", char)
        else:
            return False
        return True

    def _close(self, opener: str) -> bool:
        if not self.stack or self.stack[-1] != opener:
            return False
        self.stack.pop()
        self._value_ended()
        return True

    def _value_ended(self) -> None:
        self.expect = COMMA_OR_CLOSE if self.stack else DONE


_NUMBER_ENDS = frozenset({"zero", "int", "frac", "exp"})  # states where a number may end


def _number_step(state: str, char: str) -> str:
    """The next state of -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? after `char`; "" if it cannot go on."""
    digit = char in _DIGITS
    if state == "start":
        return "sign" if char == "-" else "zero" if char == "0" else "int" if digit else ""
    if state == "sign":
        return "zero" if char == "0" else "int" if digit else ""
    if state in ("zero", "int"):
        return "dot" if char == "." else "e" if char in "eE" else "int" if state == "int" and digit else ""
    if state in ("dot", "frac"):
        return "frac" if digit else "e" if state == "frac" and char in "eE" else ""
    if state == "e":
        return "esign" if char in "+-" else "exp" if digit else ""
    return "exp" if digit else ""  # esign, exp
