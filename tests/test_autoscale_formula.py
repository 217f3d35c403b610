"""The autoscale formula parser and evaluator of the local service (Batch's formula language, common subset)."""

from __future__ import annotations

import pytest

from snakemake_executor_plugin_azbatch.local.model.autoscale import FUNCTIONS, FormulaEvaluationError, Inputs, evaluate
from snakemake_executor_plugin_azbatch.local.model.autoscale_parser import FUNCTION_NAMES, FormulaSyntaxError, parse


def test_the_parser_knows_exactly_the_functions_the_evaluator_has() -> None:
    assert sorted(FUNCTION_NAMES) == sorted(FUNCTIONS)

pytestmark = pytest.mark.quick

NOW = 10_000.0


def inputs(pending=(), active=(), running=(), period=30.0, **overrides) -> Inputs:
    """Samples every `period` seconds ending now, oldest first."""

    def series(values):
        return [(NOW - period * (len(values) - 1 - i), float(v)) for i, v in enumerate(values)]

    base = dict(now=NOW, sample_period=period,
                samples={"$PendingTasks": series(pending), "$ActiveTasks": series(active),
                         "$RunningTasks": series(running)},
                current_dedicated=0, current_low_priority=0, task_slots_per_node=2,
                target_dedicated=0, target_low_priority=0)
    base.update(overrides)
    return Inputs(**base)


def run(formula: str, **kwargs):
    return evaluate(parse(formula), inputs(**kwargs))


def test_fixed_targets_and_results_string() -> None:
    out = run("$TargetDedicatedNodes = 2; // two\n$TargetLowPriorityNodes = 1 + 2 * 3;")
    assert (out.target_dedicated, out.target_low_priority, out.deallocation_option) == (2, 7, "requeue")
    assert out.results == "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=7;$NodeDeallocationOption=requeue"


def test_pending_tasks_formula_grows_from_zero_and_shrinks_when_idle() -> None:
    formula = """
        $samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 2);
        $tasks = $samples < 70 ? max(0, $PendingTasks.GetSample(1)) :
                 max($PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 2)));
        $nodes = min(4, ceil($tasks / $TaskSlotsPerNode));
        $TargetLowPriorityNodes = $nodes;
        $TargetDedicatedNodes = 0;
        $NodeDeallocationOption = taskcompletion;
    """
    grown = run(formula, pending=[5])
    assert (grown.target_low_priority, grown.deallocation_option) == (3, "taskcompletion")
    assert "$samples=25;$tasks=5;$nodes=3" in grown.results
    assert run(formula, pending=[20]).target_low_priority == 4  # capped by min()
    idle = run(formula, pending=[6, 4, 0, 0, 0])  # full window: max(latest, average) = 2 → 1 node
    assert idle.target_low_priority == 1
    assert run(formula, pending=[0, 0, 0, 0, 0]).target_low_priority == 0


def test_ternary_comparison_logic_and_user_variables() -> None:
    out = run("$a = 3; $b = $a >= 3 && !($a == 4) ? 10 : 20; $c = $a > 5 || $b != 10; "
              "$TargetDedicatedNodes = $b % 4 + $c;")
    assert out.target_dedicated == 2
    assert out.results.endswith("$a=3;$b=10;$c=0")


def test_vectors_counts_and_percent() -> None:
    out = run("$v = $RunningTasks.GetSample(3); $TargetDedicatedNodes = sum($v) + len($v) + val($v, 0);"
              "$p = $ActiveTasks.GetSamplePercent(TimeInterval_Second * 60);", running=[1, 2, 3, 4], active=[1, 1])
    assert out.target_dedicated == 9 + 3 + 2
    assert "$p=100" in out.results


def test_too_few_samples_is_an_evaluation_error() -> None:
    with pytest.raises(FormulaEvaluationError, match="GetSample\\(3\\): only 1 samples"):
        run("$TargetDedicatedNodes = max($PendingTasks.GetSample(3));", pending=[1])
    with pytest.raises(FormulaEvaluationError, match="50% of the samples.*70% were asked"):
        run("$TargetDedicatedNodes = max($PendingTasks.GetSample(TimeInterval_Minute, 70));", pending=[1])


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("$TargetDedicatedNodes = $PendingTasks + 1;", "sampled variable"),
        ("$TargetDedicatedNodes = 1 / 0;", "division by zero"),
        ("$TargetDedicatedNodes = -2;", "non-negative"),
        ("$TargetDedicatedNodes = TimeInterval_Minute;", "non-negative number"),
    ],
)
def test_evaluation_errors(formula: str, message: str) -> None:
    with pytest.raises(FormulaEvaluationError, match=message):
        run(formula, pending=[1])


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("$TargetDedicatedNodes = ;", "expected a value"),
        ("$TargetDedicatedNodes = 1 +", "the end of the formula"),
        ("$TargetDedicatedNodes = foo(1);", "unknown function foo"),
        ("$TargetDedicatedNodes = $x;", r"\$x at position 24 is used before it is assigned"),
        ("$PendingTasks = 1;", "read-only"),
        ("$TargetDedicatedNodes = $PendingTasks.Median();", "unknown method Median"),
        ("$TargetDedicatedNodes = TimeInterval_Fortnight;", "unknown name"),
        ("TargetDedicatedNodes = 1;", "expected var"),
        ("$TargetDedicatedNodes = 1 # 2;", "unexpected character '#'"),
        ("  ", "empty"),
    ],
)
def test_syntax_errors(formula: str, message: str) -> None:
    with pytest.raises(FormulaSyntaxError, match=message):
        parse(formula)


def test_names_are_case_insensitive_and_targets_default_to_current() -> None:
    out = evaluate(parse("$targetlowprioritynodes = $CurrentDedicatedNodes + 1; $NodeDeallocationOption = requeue"),
                   inputs(current_dedicated=2, target_dedicated=2))
    assert (out.target_dedicated, out.target_low_priority) == (2, 3)
