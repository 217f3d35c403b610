"""Batch's autoscale formula language, the parsing half: tokenizer and recursive-descent parser (`parse` →
`Program`, `FormulaSyntaxError`), the variables and functions a formula may name. `autoscale.py` evaluates."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

SAMPLED = ("$PendingTasks", "$ActiveTasks", "$RunningTasks", "$SucceededTasks", "$FailedTasks")


READ_ONLY = ("$CurrentDedicatedNodes", "$CurrentLowPriorityNodes", "$TaskSlotsPerNode")


SETTABLE = ("$TargetDedicatedNodes", "$TargetLowPriorityNodes", "$NodeDeallocationOption")


DEALLOCATION_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")


INTERVALS = {"zero": 0.0, "second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0, "week": 604800.0}


METHODS = ("getsample", "getsamplepercent")


FUNCTION_NAMES = ("min", "max", "avg", "sum", "len", "ceil", "floor", "round", "val")  # autoscale.FUNCTIONS
MAX_FORMULA_LENGTH = 8192  # Batch's AutoScaleFormulaTooLong limit


class FormulaSyntaxError(ValueError):
    """The formula cannot be accepted (Batch: AutoScalingFormulaSyntaxError)."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*|\.\d+|\d+)|(?P<var>\$[A-Za-z_]\w*)|(?P<ident>[A-Za-z_]\w*)"
    r"|(?P<op>&&|\|\||==|!=|<=|>=|[-+*/%<>()!?:;,.=]))"
)


_COMMENT = re.compile(r"//[^\n]*")


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    text = _COMMENT.sub(lambda m: " " * len(m.group()), text).rstrip()  # `//` comments, positions kept
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise FormulaSyntaxError(f"unexpected character {text[pos:].lstrip()[:1]!r} at position {pos}")
        kind = m.lastgroup or "op"
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


@dataclass
class Program:
    statements: list[tuple[str, tuple]]  # (variable, expression tree)
    text: str = ""
    user_variables: list[str] = field(default_factory=list)


class _Parser:
    """Expressions become tuples: ("num", v) ("var", name) ("const", kind, v) ("call", f, args)
    ("method", var, name, args) ("unary", op, e) ("binary", op, a, b) ("if", c, a, b)."""

    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.assigned: set[str] = set()

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            want = repr(value) if value is not None else kind
            got = repr(tok[1]) if tok[0] != "end" else "the end of the formula"
            raise FormulaSyntaxError(f"expected {want} but found {got} at position {tok[2]}")
        self.i += 1
        return tok

    def program(self) -> Program:
        statements = []
        while self.peek()[0] != "end":
            if self.peek()[1] == ";":
                self.take(";")
                continue
            name = self.take(kind="var")[1]
            if canonical_name(name, SAMPLED + READ_ONLY):
                raise FormulaSyntaxError(f"{name} is read-only and cannot be assigned")
            name = canonical_name(name, SETTABLE) or name
            self.take("=")
            expr = self.expression()
            statements.append((name, expr))
            self.assigned.add(name.lower())
            if self.peek()[0] != "end":
                self.take(";")
        if not statements:
            raise FormulaSyntaxError("the formula has no statement; expected e.g. $TargetDedicatedNodes = 1;")
        users = [n for n, _ in statements if n not in SETTABLE]
        return Program(statements, user_variables=list(dict.fromkeys(users)))

    def expression(self) -> tuple:
        cond = self.binary(0)
        if self.peek()[1] == "?":
            self.take("?")
            a = self.expression()
            self.take(":")
            return ("if", cond, a, self.expression())
        return cond

    _LEVELS: Sequence[tuple[str, ...]] = (("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="), ("+", "-"),
                                          ("*", "/", "%"))

    def binary(self, level: int) -> tuple:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek()[0] == "op" and self.peek()[1] in self._LEVELS[level]:
            op = self.take()[1]
            left = ("binary", op, left, self.binary(level + 1))
        return left

    def unary(self) -> tuple:
        if self.peek()[1] in ("-", "+", "!"):
            return ("unary", self.take()[1], self.unary())
        return self.postfix()

    def postfix(self) -> tuple:
        expr = self.primary()
        while self.peek()[1] == ".":
            self.take(".")
            tok = self.take(kind="ident")
            if expr[0] != "var" or not canonical_name(expr[1], SAMPLED):
                raise FormulaSyntaxError(f"{tok[1]}() at position {tok[2]} needs a sampled variable such as $PendingTasks")
            if tok[1].lower() not in METHODS:
                raise FormulaSyntaxError(f"unknown method {tok[1]}() at position {tok[2]}; the local service "
                                         "supports GetSample and GetSamplePercent")
            expr = ("method", expr[1], tok[1].lower(), self.arguments())
        return expr

    def arguments(self) -> list[tuple]:
        self.take("(")
        args = []
        if self.peek()[1] != ")":
            args.append(self.expression())
            while self.peek()[1] == ",":
                self.take(",")
                args.append(self.expression())
        self.take(")")
        return args

    def primary(self) -> tuple:
        kind, text, pos = self.peek()
        if kind == "num":
            self.take()
            return ("num", float(text))
        if kind == "var":
            self.take()
            name = canonical_name(text, SAMPLED + READ_ONLY + SETTABLE)
            if name is None and text.lower() not in self.assigned:
                raise FormulaSyntaxError(f"{text} at position {pos} is used before it is assigned")
            return ("var", name or text)
        if kind == "ident":
            self.take()
            low = text.lower()
            if self.peek()[1] == "(":
                if low not in FUNCTION_NAMES:
                    raise FormulaSyntaxError(f"unknown function {text}() at position {pos}")
                return ("call", low, self.arguments())
            if low.startswith("timeinterval_") and low[13:] in INTERVALS:
                return ("const", "interval", INTERVALS[low[13:]])
            if low in DEALLOCATION_OPTIONS:
                return ("const", "option", low)
            raise FormulaSyntaxError(f"unknown name {text!r} at position {pos}")
        if text == "(":
            self.take("(")
            expr = self.expression()
            self.take(")")
            return expr
        found = repr(text) if kind != "end" else "the end of the formula"
        raise FormulaSyntaxError(f"expected a value but found {found} at position {pos}")


def canonical_name(name: str, names: Sequence[str]) -> str | None:
    return next((n for n in names if n.lower() == name.lower()), None)


def parse(formula: str) -> Program:
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaSyntaxError("the formula is empty")
    if len(formula) > MAX_FORMULA_LENGTH:
        raise FormulaSyntaxError(f"the formula is longer than {MAX_FORMULA_LENGTH} characters")
    program = _Parser(formula).program()
    program.text = formula
    return program
