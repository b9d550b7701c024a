"""The Grafana macro and variable expansion the SQL and PromQL tests rely on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.grafana.macros import (
    MacroError,
    TimeRange,
    expand_promql,
    expand_sql,
    format_interval,
    interpolate_variables,
    parse_interval,
    rfc3339,
)

WINDOW = TimeRange(
    start=datetime(2026, 11, 28, 10, 0, tzinfo=UTC),
    end=datetime(2026, 11, 28, 16, 30, 15, 250000, tzinfo=UTC),
    interval=timedelta(minutes=5),
)
FROM, TO = "'2026-11-28T10:00:00Z'", "'2026-11-28T16:30:15.25Z'"
FROM_EPOCH, TO_EPOCH = 1795860000, 1795883415


def test_the_epoch_constants_are_the_window() -> None:
    assert (int(WINDOW.start.timestamp()), int(WINDOW.end.timestamp())) == (FROM_EPOCH, TO_EPOCH)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("WHERE $__timeFilter(detected_at)", f"WHERE detected_at BETWEEN {FROM} AND {TO}"),
        ("WHERE $__timeFilter( i.detected_at )", f"WHERE i.detected_at BETWEEN {FROM} AND {TO}"),
        ("SELECT $__timeFrom(), $__timeTo()", f"SELECT {FROM}, {TO}"),
        ("SELECT $__time(at)", 'SELECT at AS "time"'),
        ("SELECT $__timeEpoch(at)", 'SELECT extract(epoch from at) as "time"'),
        ("GROUP BY $__timeGroup(at, '5m')", "GROUP BY floor(extract(epoch from at)/300)*300"),
        ("GROUP BY $__timeGroup(at, 1h, 0)", "GROUP BY floor(extract(epoch from at)/3600)*3600"),
        ("SELECT $__timeGroupAlias(at, 30s)", 'SELECT floor(extract(epoch from at)/30)*30 AS "time"'),
        # Grafana before 5.3: a "," right after $__timeGroup means the alias.
        ("SELECT $__timeGroup(at, 1m), 1", 'SELECT floor(extract(epoch from at)/60)*60 AS "time", 1'),
        (
            "SELECT $__timeGroupAlias(at, $__interval)",
            'SELECT floor(extract(epoch from at)/300)*300 AS "time"',
        ),
        ("WHERE $__unixEpochFilter(ts)", f"WHERE ts >= {FROM_EPOCH} AND ts <= {TO_EPOCH}"),
        ("SELECT $__unixEpochGroupAlias(ts, 1m)", 'SELECT floor((ts)/60)*60 AS "time"'),
        ("SELECT $__unixEpochFrom(), $__unixEpochTo()", f"SELECT {FROM_EPOCH}, {TO_EPOCH}"),
        ("LIMIT $__interval_ms", "LIMIT 300000"),
        ("SELECT '$__interval'", "SELECT '5m'"),
        ("SELECT count(*) FILTER (WHERE x) FROM t", "SELECT count(*) FILTER (WHERE x) FROM t"),
    ],
)
def test_sql_macros_expand_as_grafana_does(sql: str, expected: str) -> None:
    assert expand_sql(sql, WINDOW, {}) == expected


def test_a_large_group_interval_prints_like_a_go_float() -> None:
    window = TimeRange(start=WINDOW.start, end=WINDOW.end, interval=timedelta(days=30))
    assert expand_sql("$__timeGroup(at, $__interval)", window, {}) == (
        "floor(extract(epoch from at)/2.592e+06)*2.592e+06"
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT $__timeBucket(at, 1m)",
        "WHERE $__timeFilter()",
        "GROUP BY $__timeGroup(at)",
        "$__timeGroup(at, soon)",
    ],
)
def test_unknown_or_malformed_macros_are_errors(sql: str) -> None:
    with pytest.raises(MacroError):
        expand_sql(sql, WINDOW, {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("service = ${service:sqlstring}", "service = 'it''s'"),
        ("service = '$service'", "service = 'it's'"),
        ("service = '[[service]]'", "service = 'it's'"),
        ("${api:raw}/x", "http://127.0.0.1:8080/x"),
        ("service IN (${many:sqlstring})", "service IN ('a','b')"),
        ("service IN ($many)", "service IN ('a','b')"),
        ("$__timeFilter(at) AND ${__value.raw}", "$__timeFilter(at) AND ${__value.raw}"),
    ],
)
def test_sql_variables_are_quoted_only_when_asked(text: str, expected: str) -> None:
    variables = {"service": "it's", "api": "http://127.0.0.1:8080", "many": ["a", "b"]}
    assert interpolate_variables(text, variables, language="sql") == expected


def test_an_undefined_variable_is_an_error() -> None:
    with pytest.raises(MacroError, match=r"\$revision"):
        expand_sql("WHERE revision = '$revision'", WINDOW, {"service": "a"})


def test_promql_gets_variables_and_interval_names() -> None:
    expr = (
        'sum(rate(x{service="$service", revision=~"$revision"}[$__rate_interval])) '
        "/ $__interval_ms + increase(y[${__range}]) + $__range_s"
    )
    expanded = expand_promql(
        expr,
        {"service": "demo-app-a", "revision": ["r1", "r2"]},
        interval=timedelta(seconds=15),
        rate_interval=timedelta(minutes=1),
        range_=timedelta(hours=1),
    )
    assert expanded == (
        'sum(rate(x{service="demo-app-a", revision=~"(r1|r2)"}[1m])) / 15000 + increase(y[1h]) + 3600'
    )


def test_promql_with_a_name_grafana_does_not_know_is_an_error() -> None:
    with pytest.raises(MacroError):
        expand_promql(
            "rate(x[$__rate_intervall])",
            {},
            interval=timedelta(seconds=15),
            rate_interval=timedelta(minutes=1),
            range_=timedelta(hours=1),
        )


@pytest.mark.parametrize(
    ("text", "interval"),
    [("500ms", timedelta(milliseconds=500)), ("'5m'", timedelta(minutes=5)), ("2h", timedelta(hours=2))],
)
def test_intervals_parse(text: str, interval: timedelta) -> None:
    assert parse_interval(text) == interval


@pytest.mark.parametrize(
    ("interval", "text"),
    [
        (timedelta(minutes=1), "1m"),
        (timedelta(seconds=90), "90s"),
        (timedelta(milliseconds=1500), "1500ms"),
        (timedelta(days=2), "2d"),
    ],
)
def test_intervals_format(interval: timedelta, text: str) -> None:
    assert format_interval(interval) == text


def test_rfc3339_is_utc_with_trimmed_fractions() -> None:
    tokyo = datetime(2026, 11, 29, 4, 0, 0, 120000, tzinfo=timezone(timedelta(hours=9)))
    assert rfc3339(tokyo) == "2026-11-28T19:00:00.12Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        TimeRange(start=datetime(2026, 1, 1), end=WINDOW.end, interval=WINDOW.interval)
