"""ApisCP's command-line argument syntax, as ``cpcmd`` takes it.

Each shell word is one argument::

    null  true  false            -> None, True, False
    42  -7  1.5  2e3             -> numbers (``007`` and ``10.1.2.3`` stay strings)
    hello  a@b.c  2001:db8::1    -> strings, taken whole
    "quoted"  'quoted'           -> strings, never typed ("123" stays a string)
    '[a,b,c]'                    -> a list
    '[key:value,key2:value2]'    -> a hash
    '[id:1234,opts:[a,b],x:[k:v]]'  nesting; '[]' is an empty list, '[:]' an empty hash

Inside brackets ``,``, ``:``, ``[`` and ``]`` are syntax and spaces around items are dropped;
quote an item (or put a backslash before the character) to keep them: ``'[ip:"::1"]'``,
``'[a\\,b]'``.  Inside brackets and quotes a backslash makes the next character literal; a
plain word outside brackets is taken verbatim.
Malformed input raises :class:`ArgumentSyntaxError` naming the position.
"""

from __future__ import annotations

import re
from typing import Any

_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?([0-9]+\.[0-9]+([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)")
_WORDS = {"null": None, "true": True, "false": False}
_QUOTES = "\"'"


class ArgumentSyntaxError(ValueError):
    """An argument is not valid ApisCP syntax; ``position`` is the 0-based offset of the fault."""

    def __init__(self, text: str, position: int, reason: str):
        self.text, self.position, self.reason = text, position, reason
        where = "end of argument" if position >= len(text) else f"position {position + 1}"
        super().__init__(f"cannot read argument {text!r}: {reason} at {where}\n  {text}\n  {' ' * position}^")


def infer(word: str) -> Any:
    """The typed value of an unquoted word: null/true/false, an int, a float, else the word."""
    if word in _WORDS:
        return _WORDS[word]
    if _INT.fullmatch(word):
        return int(word)
    if _FLOAT.fullmatch(word):
        return float(word)
    return word


class _Reader:
    """A recursive-descent reader over one argument."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, reason: str, position: int = None):
        raise ArgumentSyntaxError(self.text, self.pos if position is None else position, reason)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_spaces(self) -> None:
        while self.peek().isspace():
            self.pos += 1

    def quoted(self) -> str:
        quote, start = self.text[self.pos], self.pos
        self.pos += 1
        out = []
        while True:
            char = self.peek()
            if not char:
                self.fail(f"unbalanced quote {quote} (opened at position {start + 1})")
            self.pos += 1
            if char == quote:
                return "".join(out)
            if char == "\\":
                if not self.peek():
                    self.fail("a backslash must be followed by a character")
                char = self.text[self.pos]
                self.pos += 1
            out.append(char)

    def bare(self, stops: str) -> tuple[str, bool]:
        """A bare word up to one of ``stops``: (text, whether a backslash made any of it literal)."""
        out, escaped = [], False
        while True:
            char = self.peek()
            if not char or char in stops:
                return "".join(out).strip(), escaped
            self.pos += 1
            if char == "\\":
                if not self.peek():
                    self.fail("a backslash must be followed by a character")
                char, escaped = self.text[self.pos], True
                self.pos += 1
            elif char in _QUOTES:
                self.fail(f"a quote {char} inside a word; quote the whole item instead", self.pos - 1)
            elif char == "[":
                self.fail("'[' inside a word; quote the item or escape it as \\[", self.pos - 1)
            out.append(char)

    def value(self) -> Any:
        """A value after ``key:`` (colons allowed in bare words: ``[ip:::1]``)."""
        self.skip_spaces()
        char = self.peek()
        if char == "[":
            value = self.brackets()
        elif char and char in _QUOTES:
            value = self.quoted()
        else:
            word, escaped = self.bare(",]")
            return word if escaped else infer(word)
        self.skip_spaces()
        return value

    def entry(self) -> tuple[bool, Any, Any]:
        """One item inside brackets: ``(is_pair, key, value)``; a list item has key None."""
        self.skip_spaces()
        char = self.peek()
        if char == "[":
            value = self.brackets()
            self.skip_spaces()
            return False, None, value
        if char and char in _QUOTES:
            word, escaped = self.quoted(), True
            self.skip_spaces()
        else:
            word, escaped = self.bare(",:]")
        if self.peek() == ":":
            self.pos += 1
            return True, word, self.value()
        return False, None, word if escaped else infer(word)

    def brackets(self) -> Any:
        open_at = self.pos
        self.pos += 1
        self.skip_spaces()
        if self.peek() == "]":
            self.pos += 1
            return []
        if self.peek() == ":":  # '[:]' is an empty hash
            after = self.pos + 1
            while after < len(self.text) and self.text[after].isspace():
                after += 1
            if self.text[after:after + 1] == "]":
                self.pos = after + 1
                return {}
        items: list = []
        pairs: dict = {}
        while True:
            start = self.pos
            if not self.text[self.pos:].strip():
                self.fail(f"unclosed '[' (opened at position {open_at + 1}); add ']'")
            is_pair, key, value = self.entry()
            if is_pair:
                pairs[key] = value
            else:
                items.append(value)
            if items and pairs:
                self.fail("a list item and a key:value pair in the same brackets; use one form", start)
            char = self.peek()
            if char == ",":
                self.pos += 1
            elif char == "]":
                self.pos += 1
                return pairs if pairs else items
            elif not char:
                self.fail(f"unclosed '[' (opened at position {open_at + 1}); add ']'")
            else:
                self.fail(f"expected ',' or ']' but found {char!r}")


def _read_whole(text: str, read, trailing: str) -> Any:
    """``read`` one value from ``text``; only spaces may surround it, else fail with ``trailing``."""
    reader = _Reader(text)
    reader.skip_spaces()
    value = read(reader)
    reader.skip_spaces()
    if reader.pos != len(text):
        reader.fail(trailing)
    return value


def parse_argument(text: str) -> Any:
    """Turn one command-line word into a value; ArgumentSyntaxError if it is malformed."""
    stripped = text.strip()
    if not stripped:
        return text
    if stripped[0] == "[":
        return _read_whole(text, _Reader.brackets,
                           "text after the closing ']'; quote the whole value to pass it as a string")
    if stripped[0] in _QUOTES:
        return _read_whole(text, _Reader.quoted, "text after the closing quote")
    # A plain word is taken whole and verbatim (colons, commas, spaces, backslashes): a@b.c, ::1
    return infer(text)


def parse_arguments(words) -> list:
    """Parse every word of ``words``; the error names the argument's number."""
    values = []
    for index, word in enumerate(words, 1):
        try:
            values.append(parse_argument(word))
        except ArgumentSyntaxError as exc:
            raise ArgumentSyntaxError(exc.text, exc.position, f"argument {index}: {exc.reason}") from None
    return values
