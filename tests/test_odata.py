"""`$filter` / `$select` semantics, evaluated against REST-shaped task dicts like the local service returns."""

from __future__ import annotations

import pytest

from snakemake_executor_plugin_azbatch.local.api.odata import ODataError, apply_select, parse_filter, parse_select

pytestmark = pytest.mark.quick

TASKS = [
    {
        "id": "Rule_a-1",
        "state": "completed",
        "creationTime": "2024-05-01T10:00:00.5Z",
        "executionInfo": {"exitCode": 0, "result": "success", "retryCount": 0},
    },
    {
        "id": "rule_a-2",
        "state": "completed",
        "creationTime": "2024-05-01T10:00:01Z",
        "executionInfo": {"exitCode": 3, "result": "failure", "retryCount": 1},
    },
    {"id": "rule_b-1", "state": "running", "creationTime": "2024-05-01T11:00:00Z", "executionInfo": {"retryCount": 0}},
    {"id": "other", "state": "active", "creationTime": "2024-05-02T00:00:00Z"},
]


def matching(expression: str) -> list[str]:
    predicate = parse_filter(expression)
    return [t["id"] for t in TASKS if predicate(t)]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("state eq 'completed'", ["Rule_a-1", "rule_a-2"]),
        ("state ne 'completed'", ["rule_b-1", "other"]),
        ("id eq 'rule_A-1'", ["Rule_a-1"]),  # IDs compare without case
        ("executionInfo/exitCode eq 0", ["Rule_a-1"]),
        ("executionInfo/exitCode gt 0", ["rule_a-2"]),
        ("executionInfo/exitCode ge 0", ["Rule_a-1", "rule_a-2"]),
        ("executionInfo/exitCode le 3 and executionInfo/exitCode lt 3", ["Rule_a-1"]),
        ("executionInfo/exitCode eq null", ["rule_b-1", "other"]),
        ("executionInfo/result eq 'failure' or state eq 'active'", ["rule_a-2", "other"]),
        ("executionInfo/retryCount gt 0", ["rule_a-2"]),
        ("not (state eq 'completed')", ["rule_b-1", "other"]),
        ("not state eq 'completed' and id ne 'other'", ["rule_b-1"]),
        ("(state eq 'running' or state eq 'active') and startswith(id, 'rule')", ["rule_b-1"]),
        ("startswith(id,'RULE_A')", ["Rule_a-1", "rule_a-2"]),
        ("endswith(id, '-1')", ["Rule_a-1", "rule_b-1"]),
        ("substringof('_b', id)", ["rule_b-1"]),
        ("startswith(id, 'rule') eq false", ["other"]),
        ("creationTime gt datetime'2024-05-01T10:00:00.9Z'", ["rule_a-2", "rule_b-1", "other"]),
        ("creationTime lt datetime'2024-05-01T10:00:01Z'", ["Rule_a-1"]),
        ("creationTime ge datetime'2024-05-01T11:00:00+00:00'", ["rule_b-1", "other"]),
        ("executionInfo/exitCode eq 'abc'", []),  # different types never compare equal
        ("state eq 'completed' and true", ["Rule_a-1", "rule_a-2"]),
        ("id eq 'it''s'", []),
    ],
)
def test_filter_selects_expected_tasks(expression: str, expected: list[str]) -> None:
    assert matching(expression) == expected


def test_or_binds_looser_than_and() -> None:
    # a or (b and c) — not (a or b) and c
    assert matching("id eq 'other' or state eq 'completed' and executionInfo/exitCode eq 3") == ["rule_a-2", "other"]


def test_quoted_quote_is_unescaped() -> None:
    assert parse_filter("id eq 'it''s'")({"id": "it's"})


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("", "empty"),
        ("state eq", "expected a property or value"),
        ("state eq 'completed", "unexpected character"),
        ("state EQ 'completed'", "lower-case"),
        ("(state eq 'a'", "expected ')'"),
        ("state eq 'a' state eq 'b'", "join conditions"),
        ("startswith(id 'a')", "','"),
        ("creationTime gt datetime'yesterday'", "ISO 8601"),
        ("state eq 'a' and", "expected a property or value"),
        ("state = 'a'", "unexpected character"),
        ("eq eq 1", "found operator"),
    ],
)
def test_malformed_filter_is_rejected_with_a_located_message(expression: str, fragment: str) -> None:
    with pytest.raises(ODataError) as raised:
        parse_filter(expression)
    assert fragment in str(raised.value)


def test_select_keeps_named_top_level_properties_only() -> None:
    names = parse_select("id, state,executionInfo,absent")
    assert apply_select(TASKS[1], names) == {"id": "rule_a-2", "state": "completed", "executionInfo": TASKS[1]["executionInfo"]}
    # names are case-sensitive, as in the JSON
    assert apply_select(TASKS[1], parse_select("ID")) == {}


@pytest.mark.parametrize("clause", ["", "id,,state", "executionInfo/exitCode", "id state"])
def test_malformed_select_is_rejected(clause: str) -> None:
    with pytest.raises(ODataError):
        parse_select(clause)
