"""OData `$filter` parser/evaluator and `$select` projection, as the Batch list operations accept them.

Grammar (Batch's subset of OData v3):

    expr       := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | primary
    primary    := "(" expr ")" | operand [cmp_op operand]
    operand    := literal | path | func "(" operand "," operand ")"
    cmp_op     := eq | ne | lt | gt | le | ge
    func       := startswith | endswith | substringof
    literal    := 'text' ('' escapes a quote) | datetime'ISO-8601' | number | true | false | null
    path       := name ("/" name)*       e.g. executionInfo/exitCode

String comparisons ignore case, like Batch IDs. A missing property is `null`; ordering comparisons with `null` or
between different types are false. Keywords are lower-case, as in OData.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_COMPARISONS = {"eq", "ne", "lt", "gt", "le", "ge"}
_FUNCTIONS = {"startswith", "endswith", "substringof"}
_SELECT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<datetime>datetime'(?P<dtvalue>[^']*)')
  | (?P<string>'(?P<svalue>(?:[^']|'')*)')
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![A-Za-z_/])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
    """,
    re.VERBOSE,
)


class ODataError(ValueError):
    """A malformed `$filter` / `$select`; the message says what is wrong and where."""


@dataclass(frozen=True)
class _Token:
    kind: str  # literal | name | lparen | rparen | comma | end
    text: str
    pos: int
    value: Any = None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ODataError(f"unexpected character {text[pos]!r} at position {pos}")
        kind = m.lastgroup
        if kind in ("dtvalue", "svalue"):  # inner groups never end a match; keep mypy and readers honest
            kind = "datetime" if kind == "dtvalue" else "string"
        if kind == "datetime":
            tokens.append(_Token("literal", m.group(), pos, _parse_datetime(m.group("dtvalue"), pos)))
        elif kind == "string":
            tokens.append(_Token("literal", m.group(), pos, m.group("svalue").replace("''", "'")))
        elif kind == "number":
            raw = m.group()
            number: float | int = float(raw) if any(c in raw for c in ".eE") else int(raw)
            tokens.append(_Token("literal", raw, pos, number))
        elif kind == "name":
            word = m.group()
            if word in ("true", "false"):
                tokens.append(_Token("literal", word, pos, word == "true"))
            elif word == "null":
                tokens.append(_Token("literal", word, pos, None))
            else:
                tokens.append(_Token("name", word, pos))
        elif kind != "space":
            tokens.append(_Token(kind, m.group(), pos))
        pos = m.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _parse_datetime(text: str, pos: int) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ODataError(
            f"datetime literal at position {pos}: {text!r} is not ISO 8601 (e.g. 2024-05-01T12:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# Evaluation: every node is a function entity -> value.
_Node = Callable[[Mapping[str, Any]], Any]


MAX_NESTING = 64  # parentheses and `not` inside one another; deeper filters are refused, not parsed by recursion


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.nesting = 0

    def nest(self, token: _Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise ODataError(f"parentheses and 'not' nest deeper than {MAX_NESTING} levels at position {token.pos}")

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, kind: str, what: str) -> _Token:
        token = self.take()
        if token.kind != kind:
            found = token.text or "end of filter"
            raise ODataError(f"expected {what} at position {token.pos}, found {found!r}")
        return token

    def is_word(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "name" and token.text == word

    def parse(self) -> _Node:
        if self.peek().kind == "end":
            raise ODataError("the filter is empty")
        node = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            raise ODataError(f"unexpected {token.text!r} at position {token.pos}; join conditions with 'and' / 'or'")
        return node

    # `a and b and c` is one node over a list (short-circuiting), so a long chain costs no recursion when evaluated.
    def parse_or(self) -> _Node:
        nodes = [self.parse_and()]
        while self.is_word("or"):
            self.take()
            nodes.append(self.parse_and())
        return nodes[0] if len(nodes) == 1 else lambda e: any(_truthy(node(e)) for node in nodes)

    def parse_and(self) -> _Node:
        nodes = [self.parse_unary()]
        while self.is_word("and"):
            self.take()
            nodes.append(self.parse_unary())
        return nodes[0] if len(nodes) == 1 else lambda e: all(_truthy(node(e)) for node in nodes)

    def parse_unary(self) -> _Node:
        if self.is_word("not"):
            self.nest(self.take())
            inner = self.parse_unary()
            self.nesting -= 1
            return lambda e: not _truthy(inner(e))
        return self.parse_primary()

    def parse_primary(self) -> _Node:
        if self.peek().kind == "lparen":
            self.nest(self.take())
            node = self.parse_or()
            self.expect("rparen", "')'")
            self.nesting -= 1
            return node
        left = self.parse_operand()
        token = self.peek()
        if token.kind == "name" and token.text in _COMPARISONS:
            self.take()
            right = self.parse_operand()
            return _comparison(token.text, left, right)
        if token.kind == "name" and token.text.lower() in _COMPARISONS:
            raise ODataError(f"operator {token.text!r} at position {token.pos} must be lower-case")
        return left

    def parse_operand(self) -> _Node:
        token = self.take()
        if token.kind == "literal":
            value = token.value
            return lambda e: value
        if token.kind == "name":
            if token.text in _FUNCTIONS and self.peek().kind == "lparen":
                return self.parse_function(token.text)
            if token.text in _COMPARISONS or token.text in ("and", "or", "not"):
                raise ODataError(f"expected a property or value at position {token.pos}, found operator {token.text!r}")
            path = token.text.split("/")
            return lambda e: _lookup(e, path)
        found = token.text or "end of filter"
        raise ODataError(f"expected a property or value at position {token.pos}, found {found!r}")

    def parse_function(self, name: str) -> _Node:
        self.expect("lparen", "'('")
        first = self.parse_operand()
        self.expect("comma", f"',' between the two arguments of {name}")
        second = self.parse_operand()
        self.expect("rparen", f"')' closing {name}(")
        if name == "substringof":  # substringof('needle', haystack)
            return lambda e: _string_test(second(e), first(e), lambda hay, needle: needle in hay)
        if name == "startswith":
            return lambda e: _string_test(first(e), second(e), str.startswith)
        return lambda e: _string_test(first(e), second(e), str.endswith)


def _truthy(value: Any) -> bool:
    return value is True


def _lookup(entity: Mapping[str, Any], path: list[str]) -> Any:
    value: Any = entity
    for name in path:
        if not isinstance(value, Mapping):
            return None
        if name in value:
            value = value[name]
            continue
        lowered = name.lower()
        value = next((v for k, v in value.items() if k.lower() == lowered), None)
    return value


def _string_test(haystack: Any, needle: Any, test: Callable[[str, str], bool]) -> bool:
    if not isinstance(haystack, str) or not isinstance(needle, str):
        return False
    return test(haystack.casefold(), needle.casefold())


def _coerce_pair(left: Any, right: Any) -> tuple[Any, Any] | None:
    """Bring two values to one comparable type, or None when they cannot be compared."""
    if isinstance(left, datetime) or isinstance(right, datetime):
        left, right = _as_datetime(left), _as_datetime(right)
        return (left, right) if left is not None and right is not None else None
    if isinstance(left, bool) or isinstance(right, bool):
        return (left, right) if isinstance(left, bool) and isinstance(right, bool) else None
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left, right
    if isinstance(left, str) and isinstance(right, str):
        return left.casefold(), right.casefold()
    return None


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return _parse_datetime(value, 0)
        except ODataError:
            return None
    return None


def _comparison(op: str, left: _Node, right: _Node) -> _Node:
    def evaluate(entity: Mapping[str, Any]) -> bool:
        a, b = left(entity), right(entity)
        if a is None or b is None:
            if op == "eq":
                return a is None and b is None
            if op == "ne":
                return not (a is None and b is None)
            return False
        pair = _coerce_pair(a, b)
        if pair is None:
            return op == "ne"
        a, b = pair
        if op == "eq":
            return a == b
        if op == "ne":
            return a != b
        if isinstance(a, bool):
            return False  # booleans have no order
        if op == "lt":
            return a < b
        if op == "gt":
            return a > b
        if op == "le":
            return a <= b
        return a >= b

    return evaluate


def parse_filter(text: str) -> Predicate:
    """Compile a `$filter` expression into a predicate over REST-shaped entity dicts; ODataError when malformed."""
    node = _Parser(text).parse()
    return lambda entity: _truthy(node(entity))


def parse_select(text: str) -> list[str]:
    """Split a `$select` clause into top-level property names (case-sensitive); ODataError when malformed."""
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if not _SELECT_NAME.match(name):
            raise ODataError(f"{name!r} is not a property name; use a comma-separated list such as id,state")
    return names


def apply_select(entity: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """Keep only the selected top-level properties (those the entity has)."""
    return {name: entity[name] for name in names if name in entity}
