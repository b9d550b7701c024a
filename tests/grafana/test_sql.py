"""Every SQL query of every dashboard, on real PostgreSQL, as the read-only role Grafana reads with.

The store holds a few hours of seeded history (incident_history.py). Each query is expanded the way
Grafana expands it (macros.py), run after `SET ROLE remediator_readonly` (so the grants of migration
0002 must suffice), and must return rows of the shape its panel, annotation or variable needs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from incidents import utcnow
from tests.grafana.dashboards import Query, queries
from tests.grafana.incident_history import History, write_history
from tests.grafana.macros import TimeRange, expand_sql
from tests.support.databases import run_outside_loop

pytestmark = pytest.mark.integration

READONLY_ROLE = "remediator_readonly"
SQL_QUERIES = [query for query in queries() if query.language == "sql"]
VARIABLES = {"service": "demo-app-a", "remediator_api": "http://127.0.0.1:8080"}


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[asyncpg.Record]

    def column(self, name: str) -> list[Any]:
        return [row[name] for row in self.rows]

    def by(self, key: str) -> dict[Any, asyncpg.Record]:
        return {row[key]: row for row in self.rows}


@dataclass(frozen=True)
class Seeded:
    url: str
    history: History
    window: TimeRange


@pytest.fixture(scope="module")
def seeded(postgres_url: str) -> Seeded:
    now = utcnow().replace(microsecond=0)
    history = run_outside_loop(write_history(postgres_url, start=now - timedelta(hours=3)))
    window = TimeRange(
        start=history.start - timedelta(hours=1),
        end=now + timedelta(minutes=1),
        interval=timedelta(minutes=10),
    )
    return Seeded(url=postgres_url, history=history, window=window)


async def run_as_readonly(url: str, sql: str) -> Result:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.execute(f"SET LOCAL ROLE {READONLY_ROLE}")
            assert await connection.fetchval("SELECT current_user") == READONLY_ROLE
            statement = await connection.prepare(sql)
            columns = [attribute.name for attribute in statement.get_attributes()]
            return Result(columns=columns, rows=list(await statement.fetch()))
    finally:
        await connection.close()


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def numeric_columns(result: Result) -> list[str]:
    return [
        name
        for name in result.columns
        if any(row[name] is not None for row in result.rows)
        and all(is_number(row[name]) for row in result.rows if row[name] is not None)
    ]


def string_columns(result: Result) -> list[str]:
    return [name for name in result.columns if all(isinstance(row[name], str | None) for row in result.rows)]


def is_time(value: Any) -> bool:
    return (isinstance(value, datetime) and value.tzinfo is not None) or is_number(value)


def check_shape(query: Query, result: Result) -> None:
    """What Grafana needs to show the result, by what shows it."""
    assert len(set(result.columns)) == len(result.columns), f"duplicate column names {result.columns}"
    if query.kind == "annotation":
        assert {"time", "text"} <= set(result.columns) <= {"time", "timeend", "text", "tags"}
        for row in result.rows:
            assert is_time(row["time"]) and isinstance(row["text"], str) and row["text"].strip()
            if "timeend" in result.columns:
                assert is_time(row["timeend"]) and row["timeend"] >= row["time"]
            if "tags" in result.columns:
                assert isinstance(row["tags"], str) and all(tag for tag in row["tags"].split(","))
        return
    if query.kind == "variable":
        assert result.columns and all(row[0] is not None for row in result.rows)
        return
    if query.format == "time_series":
        assert "time" in result.columns, "a time series needs a `time` column"
        times = result.column("time")
        assert all(is_time(moment) for moment in times) and times == sorted(times), "time must ascend"
        values = [name for name in numeric_columns(result) if name != "time"]
        assert values, "a time series needs a numeric column"
        labels = set(result.columns) - {"time", *values}
        assert labels <= set(string_columns(result)), "other columns become labels: they must be text"
        return
    assert query.format == "table", f"{query.title}: format {query.format!r}"
    panel, options = query.panel, query.panel.get("options", {})
    if query.panel_type in ("stat", "bargauge"):
        numbers = numeric_columns(result)
        assert numbers, "a stat needs a number"
        assert all(result.rows[0][name] is not None for name in numbers)
    elif query.panel_type == "table":
        named = {
            override["matcher"]["options"]
            for override in panel.get("fieldConfig", {}).get("overrides", [])
            if override["matcher"]["id"] == "byName"
        }
        assert named <= set(result.columns), f"overrides name missing columns {named - set(result.columns)}"
    elif query.panel_type == "barchart":
        assert options["xField"] in string_columns(result), "the bar chart's x field must be text"
        assert numeric_columns(result)
    elif query.panel_type == "piechart":
        assert string_columns(result) and numeric_columns(result), "slices need a name and a number"
    else:
        raise AssertionError(f"no shape rule for {query.panel_type} panels")


# What the seeded history must look like in each panel, by (title, panel type or query kind).
def _open(result: Result, history: History) -> None:
    assert result.rows[0][0] == history.active


def _awaiting(result: Result, history: History) -> None:
    assert result.rows[0][0] == history.awaiting_approval


def _escalated(result: Result, history: History) -> None:
    assert result.rows[0][0] == history.escalated


def _in_range(result: Result, history: History) -> None:
    assert result.rows[0][0] == len(history.incident_ids)


def _median_mttr(result: Result, history: History) -> None:
    assert result.rows[0][0] == pytest.approx(statistics.median(history.verified_mttr))


def _fallback_count(result: Result, history: History) -> None:
    assert result.rows[0][0] == history.fallbacks


def _by_outcome(result: Result, history: History) -> None:
    assert sum(result.column("incidents")) == len(history.incident_ids)
    assert set(result.column("metric")) == {
        "resolved",
        "escalated",
        "closed",
        "awaiting_approval",
        "analyzing",
        "failed",
    }


def _mttr_parts(result: Result, history: History) -> None:
    assert len(result.rows) == len(history.verified_mttr)
    for row in result.rows:
        assert 0 < row["detected"] <= row["decided"] <= row["mitigated"] <= row["verified (MTTR)"]
    assert sorted(result.column("verified (MTTR)")) == sorted(history.verified_mttr)


def _stages(result: Result, history: History) -> None:
    (row,) = result.rows
    assert all(value >= 0 for value in row.values())
    assert sum(row.values()) == pytest.approx(statistics.mean(history.verified_mttr))


def _actions(result: Result, history: History) -> None:
    found = {row["action"]: dict(row) for row in result.rows}
    assert found == {
        "ROLLBACK": {
            "action": "ROLLBACK",
            "changed": 1,
            "already in place": 1,
            "failed": 1,
            "cancelled": 0,
            "in progress": 0,
        },
        "SCALE_UP": {
            "action": "SCALE_UP",
            "changed": 1,
            "already in place": 0,
            "failed": 0,
            "cancelled": 0,
            "in progress": 0,
        },
    }


def _verdicts(result: Result, history: History) -> None:
    assert {row["verdict"]: row["decisions"] for row in result.rows} == {
        "execute": 4,
        "overrule": 1,
        "suppress": 1,
        "await_approval": 1,
    }


def _recent(result: Result, history: History) -> None:
    assert sorted(result.column("id")) == list(history.incident_ids)
    assert result.column("opened") == sorted(result.column("opened"), reverse=True)
    failed = [row for row in result.rows if row["status"] == "failed"]
    assert [(row["action"], row["action status"], row["target"]) for row in failed] == [
        ("ROLLBACK", "failed", "demo-app-b-00004")
    ]
    investigated = [row for row in result.rows if row["policy"] == "overrule"]
    assert [row["action"] for row in investigated] == ["INVESTIGATE"]


def _fallback_rows(result: Result, history: History) -> None:
    (row,) = result.rows
    assert row["decided by"] == "rules" and "gemini" in row["why the configured engine did not decide"]


def _held(result: Result, history: History) -> None:
    assert len(result.rows) == history.held_or_overruled
    overruled = [row for row in result.rows if row["verdict"] == "overrule"]
    assert [(row["engine proposed"], row["Remediator did"]) for row in overruled] == [
        ("ROLLBACK", "INVESTIGATE")
    ]


def _timeline(result: Result, history: History) -> None:
    assert set(result.column("id")) == set(history.incident_ids)
    assert {"incident.opened", "action.applied", "status.resolved", "engine.fallback"} <= set(
        result.column("kind")
    )


def _opened(result: Result, history: History) -> None:
    assert len(result.rows) == 2 and all(text.startswith("Incident #") for text in result.column("text"))


def _applied(result: Result, history: History) -> None:
    texts = result.column("text")
    assert len(texts) == 2
    assert texts[0].startswith("ROLLBACK → demo-app-a-00001 (incident #")
    assert texts[1].startswith("SCALE_UP → min 2 / max 8 (incident #")
    assert result.column("tags") == ["remediator,action,rollback", "remediator,action,scale_up"]


def _ended(result: Result, history: History) -> None:
    assert [tags.rsplit(",", 1)[1] for tags in result.column("tags")] == ["resolved", "escalated"]


def _mttr_window(result: Result, history: History) -> None:
    (row,) = result.rows
    assert (row["timeend"] - row["time"]).total_seconds() == pytest.approx(history.verified_mttr[0])
    assert f"{history.verified_mttr[0]:.1f} s" in row["text"]


EXPECTATIONS: dict[tuple[str, str], Callable[[Result, History], None]] = {
    ("Open incidents", "stat"): _open,
    ("Awaiting approval", "stat"): _awaiting,
    ("Escalated", "stat"): _escalated,
    ("Incidents in range", "stat"): _in_range,
    ("Median MTTR", "stat"): _median_mttr,
    ("Engine fallbacks", "stat"): _fallback_count,
    ("Incidents by outcome", "timeseries"): _by_outcome,
    ("MTTR and its parts", "timeseries"): _mttr_parts,
    ("Where the time goes (mean per stage)", "bargauge"): _stages,
    ("Actions by type and result", "barchart"): _actions,
    ("Decisions by policy verdict", "piechart"): _verdicts,
    ("Recent incidents", "table"): _recent,
    ("Engine fallbacks", "table"): _fallback_rows,
    ("Policy overrules and holds", "table"): _held,
    ("Timeline events", "table"): _timeline,
    ("Incident opened", "annotation"): _opened,
    ("Action applied", "annotation"): _applied,
    ("Resolved, escalated or failed", "annotation"): _ended,
    ("Fault to recovery (MTTR)", "annotation"): _mttr_window,
}


def expectation_key(query: Query) -> tuple[str, str]:
    return query.title, query.panel_type or query.kind


def test_every_sql_query_has_an_expectation_and_every_expectation_a_query() -> None:
    assert {expectation_key(query) for query in SQL_QUERIES} == set(EXPECTATIONS)


@pytest.mark.parametrize("query", SQL_QUERIES, ids=[query.test_id for query in SQL_QUERIES])
async def test_sql_query_returns_the_seeded_history(query: Query, seeded: Seeded) -> None:
    sql = expand_sql(query.text, seeded.window, VARIABLES)
    result = await run_as_readonly(seeded.url, sql)
    assert result.rows, f"no rows for the seeded history:\n{sql}"
    check_shape(query, result)
    EXPECTATIONS[expectation_key(query)](result, seeded.history)


async def test_the_read_only_role_cannot_change_the_store(seeded: Seeded) -> None:
    for statement in (
        "DELETE FROM incidents",
        "UPDATE actions SET status = 'cancelled'",
        "DROP TABLE actions",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await run_as_readonly(seeded.url, statement)
