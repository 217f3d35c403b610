"""Batch's autoscale formula language (the subset common formulas use): the evaluator; `autoscale_parser.py` parses.

Supported: statements `$name = expression` separated by `;`, `//` comments; numbers; `+ - * / %`; comparisons (1 or 0);
`&& || !`; the ternary `c ? a : b`; parentheses; `TimeInterval_*` constants (Zero, Second, Minute, Hour, Day,
Week) and their arithmetic; functions `min max avg sum len ceil floor round val` over numbers and vectors (argument
lists are flattened as Batch's doubleVecList); the sampled system variables `$PendingTasks $ActiveTasks
$RunningTasks $SucceededTasks $FailedTasks` with `.GetSample(count | interval[, percent])` and
`.GetSamplePercent(interval)`; the read-only `$CurrentDedicatedNodes $CurrentLowPriorityNodes $TaskSlotsPerNode`;
the settable `$TargetDedicatedNodes $TargetLowPriorityNodes $NodeDeallocationOption` (`requeue`, `terminate`,
`taskcompletion`, `retaineddata`) and user variables.

A formula is checked when parsed (`parse` raises `FormulaSyntaxError`: unknown function, method, constant, a
variable read before it is assigned, a read-only variable assigned), as Batch checks a formula when it is set.
Evaluation (`evaluate` raises `FormulaEvaluationError`) fails where Batch's does: too few samples, a sampled
variable used as a number, division by zero, a negative node target. Targets are truncated to whole nodes.
Choices where Batch is not documented: an integral number prints without decimals in the results string; the
results list the three settable system variables first, then user variables in assignment order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from .autoscale_parser import DEALLOCATION_OPTIONS, SAMPLED, SETTABLE, Program, canonical_name


class FormulaEvaluationError(ValueError):
    """The formula is valid but could not be evaluated now (reported in autoScaleRun.error)."""


@dataclass(frozen=True)
class Interval:
    seconds: float


@dataclass(frozen=True)
class Sampled:
    name: str


Value = Union[float, list, Interval, Sampled, str]


# ---------------------------------------------------------------------------------------------------- tokens


# ---------------------------------------------------------------------------------------------------- parser


# ---------------------------------------------------------------------------------------------------- evaluation


@dataclass
class Inputs:
    """What a formula reads: samples per sampled variable as (time, value), oldest first."""

    now: float
    sample_period: float
    samples: dict[str, list[tuple[float, float]]]
    current_dedicated: int
    current_low_priority: int
    task_slots_per_node: int
    target_dedicated: int
    target_low_priority: int


@dataclass
class Evaluation:
    target_dedicated: int
    target_low_priority: int
    deallocation_option: str
    results: str  # "$TargetDedicatedNodes=1;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;..."


def _numbers(values: Sequence[Value], what: str) -> list[float]:
    flat: list[float] = []
    for v in values:
        if isinstance(v, list):
            flat.extend(v)
        elif isinstance(v, float):
            flat.append(v)
        else:
            raise FormulaEvaluationError(f"{what} takes numbers or sample vectors, not {_describe(v)}")
    return flat


def _nonempty(fn: Callable[[list[float]], float], name: str) -> Callable[[list[Value]], float]:
    def call(args: list[Value]) -> float:
        nums = _numbers(args, f"{name}()")
        if not nums:
            raise FormulaEvaluationError(f"{name}() of no values")
        return fn(nums)
    return call


def _single(fn: Callable[[float], float], name: str) -> Callable[[list[Value]], float]:
    def call(args: list[Value]) -> float:
        if len(args) != 1 or not isinstance(args[0], float):
            raise FormulaEvaluationError(f"{name}() takes one number")
        return float(fn(args[0]))
    return call


def _val(args: list[Value]) -> float:
    if len(args) != 2 or not isinstance(args[0], list) or not isinstance(args[1], float):
        raise FormulaEvaluationError("val() takes a vector and an index")
    index = int(args[1])
    if not 0 <= index < len(args[0]):
        raise FormulaEvaluationError(f"val(): index {index} is outside a vector of {len(args[0])} values")
    return args[0][index]


FUNCTIONS: dict[str, Callable[[list[Value]], float]] = {
    "min": _nonempty(min, "min"),
    "max": _nonempty(max, "max"),
    "avg": _nonempty(lambda xs: sum(xs) / len(xs), "avg"),
    "sum": lambda args: float(sum(_numbers(args, "sum()"))),
    "len": lambda args: float(len(_numbers(args, "len()"))),
    "ceil": _single(math.ceil, "ceil"),
    "floor": _single(math.floor, "floor"),
    "round": _single(round, "round"),
    "val": _val,
}


def _describe(v: Value) -> str:
    if isinstance(v, Sampled):
        return f"{v.name} (a sampled variable: use {v.name}.GetSample(...))"
    if isinstance(v, Interval):
        return "a time interval"
    return "a vector" if isinstance(v, list) else "a name"


class _Evaluator:
    def __init__(self, inputs: Inputs) -> None:
        self.inputs = inputs
        self.variables: dict[str, Value] = {
            "$TargetDedicatedNodes": float(inputs.target_dedicated),
            "$TargetLowPriorityNodes": float(inputs.target_low_priority),
            "$NodeDeallocationOption": "requeue",  # Batch's default
            "$CurrentDedicatedNodes": float(inputs.current_dedicated),
            "$CurrentLowPriorityNodes": float(inputs.current_low_priority),
            "$TaskSlotsPerNode": float(inputs.task_slots_per_node),
        }

    def value(self, node: tuple) -> Value:  # noqa: C901 - one branch per tree node kind, the grammar's shape
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "var":
            if canonical_name(node[1], SAMPLED):
                return Sampled(node[1])
            return self.variables[canonical_name(node[1], list(self.variables)) or node[1]]
        if kind == "const":
            return Interval(node[2]) if node[1] == "interval" else node[2]
        if kind == "call":
            return FUNCTIONS[node[1]]([self.value(a) for a in node[2]])
        if kind == "method":
            return self.sample_method(node[1], node[2], [self.value(a) for a in node[3]])
        if kind == "unary":
            v = self.value(node[2])
            if node[1] == "!":
                return 0.0 if _truth(v) else 1.0
            if isinstance(v, Interval):
                return Interval(-v.seconds if node[1] == "-" else v.seconds)
            return _arith(node[1], 0.0, v) if node[1] == "-" else _arith("+", 0.0, v)
        if kind == "if":
            return self.value(node[2]) if _truth(self.value(node[1])) else self.value(node[3])
        op, a = node[1], self.value(node[2])
        if op in ("&&", "||"):  # short-circuit, as C-like languages do
            if (op == "&&") != _truth(a):
                return 1.0 if op == "||" else 0.0
            return 1.0 if _truth(self.value(node[3])) else 0.0
        return _binary(op, a, self.value(node[3]))

    def sample_method(self, name: str, method: str, args: list[Value]) -> Value:
        samples = self.inputs.samples.get(name, [])
        if method == "getsamplepercent":
            if len(args) != 1 or not isinstance(args[0], Interval):
                raise FormulaEvaluationError(f"{name}.GetSamplePercent() takes a time interval")
            return _percent(len(_within(samples, self.inputs.now, args[0].seconds)), args[0].seconds,
                            self.inputs.sample_period)
        if not args or len(args) > 2 or (len(args) == 2 and not isinstance(args[1], float)):
            raise FormulaEvaluationError(f"{name}.GetSample() takes a count or an interval, and a percentage")
        if isinstance(args[0], float):
            count = int(args[0])
            if count < 1 or len(samples) < count:
                raise FormulaEvaluationError(
                    f"{name}.GetSample({count}): only {len(samples)} samples are available")
            return [float(v) for _, v in samples[-count:]]
        if not isinstance(args[0], Interval):
            raise FormulaEvaluationError(f"{name}.GetSample() takes a count or a time interval")
        chosen = _within(samples, self.inputs.now, args[0].seconds)
        wanted = args[1] if len(args) == 2 else 0.0
        percent = _percent(len(chosen), args[0].seconds, self.inputs.sample_period)
        if not chosen or percent < wanted:
            raise FormulaEvaluationError(
                f"{name}.GetSample(): {percent:g}% of the samples are available, {wanted:g}% were asked for")
        return [float(v) for _, v in chosen]


def _within(samples: list[tuple[float, float]], now: float, seconds: float) -> list[tuple[float, float]]:
    return [s for s in samples if s[0] >= now - seconds]


def _percent(count: int, seconds: float, period: float) -> float:
    expected = max(1.0, seconds / period)
    return min(100.0, 100.0 * count / expected)


def _truth(v: Value) -> bool:
    if isinstance(v, float):
        return v != 0.0
    raise FormulaEvaluationError(f"a condition needs a number, not {_describe(v)}")


def _binary(op: str, a: Value, b: Value) -> Value:
    if isinstance(a, Interval) or isinstance(b, Interval):
        return _interval_op(op, a, b)
    if op in ("==", "!=", "<", "<=", ">", ">="):
        if isinstance(a, str) and isinstance(b, str) and op in ("==", "!="):
            return 1.0 if (a == b) == (op == "==") else 0.0
        x, y = _scalar(a), _scalar(b)
        return 1.0 if {"==": x == y, "!=": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op] else 0.0
    return _arith(op, a, b)


def _arith(op: str, a: Value, b: Value) -> Value:
    if isinstance(a, list) or isinstance(b, list):  # element-wise with a number, as doubleVec arithmetic
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                raise FormulaEvaluationError("vectors of different lengths")
            return [float(_arith(op, x, y)) for x, y in zip(a, b)]
        if isinstance(a, list):
            return [float(_arith(op, x, b)) for x in a]
        return [float(_arith(op, a, y)) for y in b]  # type: ignore[union-attr]
    x, y = _scalar(a), _scalar(b)
    if op in ("/", "%") and y == 0:
        raise FormulaEvaluationError("division by zero")
    return {"+": x + y, "-": x - y, "*": x * y, "/": x / y if y else 0.0, "%": math.fmod(x, y) if y else 0.0}[op]


def _interval_op(op: str, a: Value, b: Value) -> Value:
    if isinstance(a, Interval) and isinstance(b, Interval):
        if op in ("+", "-"):
            return Interval(a.seconds + b.seconds if op == "+" else a.seconds - b.seconds)
        if op == "/" and b.seconds:
            return a.seconds / b.seconds
        if op in ("==", "!=", "<", "<=", ">", ">="):
            return _binary(op, a.seconds, b.seconds)
    if isinstance(a, Interval) and isinstance(b, float) and op in ("*", "/") and (op == "*" or b):
        return Interval(a.seconds * b if op == "*" else a.seconds / b)
    if isinstance(b, Interval) and isinstance(a, float) and op == "*":
        return Interval(a * b.seconds)
    raise FormulaEvaluationError(f"operator {op} cannot combine {_describe(a)} and {_describe(b)}")


def _scalar(v: Value) -> float:
    if isinstance(v, float):
        return v
    raise FormulaEvaluationError(f"expected a number, not {_describe(v)}")


def _render(v: Value) -> str:
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.6g}"
    if isinstance(v, list):
        return "[" + ",".join(_render(x) for x in v) + "]"
    if isinstance(v, Interval):
        return f"{v.seconds:g}s"
    return v.name if isinstance(v, Sampled) else str(v)


def evaluate(program: Program, inputs: Inputs) -> Evaluation:
    ev = _Evaluator(inputs)
    for name, expr in program.statements:
        ev.variables[name] = ev.value(expr)
    targets: list[int] = []
    for name in SETTABLE[:2]:
        value = ev.variables[name]
        if not isinstance(value, float) or value < 0 or math.isnan(value):
            raise FormulaEvaluationError(f"{name} must be a non-negative number, not {_render(value)}")
        targets.append(int(value))
    option = ev.variables["$NodeDeallocationOption"]
    if option not in DEALLOCATION_OPTIONS:
        raise FormulaEvaluationError(f"$NodeDeallocationOption must be one of {', '.join(DEALLOCATION_OPTIONS)}")
    shown: list[tuple[str, Any]] = [(n, ev.variables[n]) for n in SETTABLE]
    shown += [(n, ev.variables[n]) for n in program.user_variables]
    results = ";".join(f"{n}={_render(v)}" for n, v in shown)
    return Evaluation(targets[0], targets[1], str(option), results)
