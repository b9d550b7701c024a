r"""What Grafana does to a query before the database or Prometheus sees it, for the tests.

Two steps, as in Grafana:

1. The frontend interpolates template variables: `$name`, `${name}`, `${name:format}`, `[[name]]`.
   A single value is inserted as is, unless a format says otherwise (`sqlstring` quotes it and doubles
   its quotes, `raw` never escapes, `regex` escapes regex characters); a multi-value selection becomes
   `(a|b)` for PromQL and `'a','b'` for SQL. Grafana's own `$__...` names are left for step 2.
2. The PostgreSQL datasource expands its globals (`$__interval`, `$__interval_ms`,
   `$__unixEpochFrom()`, `$__unixEpochTo()`) and then its macros, found with Grafana's own pattern
   `\$(\w+)\(([^)]*)\)` (so a macro's arguments cannot contain `)`):

       $__time(c)              c AS "time"
       $__timeEpoch(c)         extract(epoch from c) as "time"
       $__timeFilter(c)        c BETWEEN '<from>' AND '<to>'       (RFC 3339, UTC)
       $__timeFrom()           '<from>'
       $__timeTo()             '<to>'
       $__timeGroup(c, i[, f]) floor(extract(epoch from c)/<s>)*<s>   (s = i in seconds)
       $__timeGroupAlias(...)  the same AS "time" (also $__timeGroup directly followed by ",")
       $__unixEpochFilter(c)   c >= <from> AND c <= <to>            (epoch seconds)
       $__unixEpochGroup(c, i) floor((c)/<s>)*<s>, and its Alias

   Any other macro is an error, as it is in Grafana.

PromQL gets step 1 and Grafana's interval variables (`$__interval`, `$__rate_interval`, `$__range`,
`$__range_s`, `$__range_ms`, `$__interval_ms`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)(?::(\w+))?\]\]")
MACRO = re.compile(r"\$(\w+)\(([^)]*)\)")
INTERVAL = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
INTERVAL_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),
}
REGEX_SPECIALS = re.compile(r"([\\^$.|?*+()\[\]{}])")

Value = str | Sequence[str]


class MacroError(ValueError):
    pass


@dataclass(frozen=True, kw_only=True)
class TimeRange:
    start: datetime
    end: datetime
    interval: timedelta  # what Grafana computes from the range and the panel width

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("time range bounds must be timezone-aware")


def parse_interval(text: str) -> timedelta:
    match = INTERVAL.match(text.strip().strip("'\""))
    if match is None:
        raise MacroError(f"not an interval: {text!r}")
    return int(match.group(1)) * INTERVAL_UNITS[match.group(2)]


def format_interval(interval: timedelta) -> str:
    """Grafana's spelling of an interval: the largest unit that divides it (1m, 30s, 1500ms)."""
    milliseconds = round(interval.total_seconds() * 1000)
    for unit in ("d", "h", "m", "s"):
        size = round(INTERVAL_UNITS[unit].total_seconds() * 1000)
        if milliseconds >= size and milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms"


def rfc3339(moment: datetime) -> str:
    """Go's RFC3339Nano in UTC: no fraction when it is zero, trailing zeros trimmed."""
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def seconds(interval: timedelta) -> str:
    """A float's %v in Go (shortest form, exponent for large values), as the macros print it."""
    return format(interval.total_seconds(), "g")


def _format(name: str, value: Value, format_name: str | None, language: str) -> str:
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise MacroError(f"variable {name} has no value")
    if format_name == "sqlstring" or (format_name is None and language == "sql" and len(values) > 1):
        return ",".join("'" + item.replace("'", "''") + "'" for item in values)
    if format_name == "raw" or (format_name is None and language == "sql"):
        return ",".join(values)
    if format_name == "csv":
        return ",".join(values)
    if format_name in (None, "regex"):
        escaped = [REGEX_SPECIALS.sub(r"\\\1", item) for item in values] if format_name == "regex" else values
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    raise MacroError(f"variable format {format_name!r} is not supported here")


def interpolate_variables(text: str, variables: Mapping[str, Value], *, language: str) -> str:
    """Step 1: template variables. An undefined variable is an error, Grafana's `$__*` are kept."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(4)
        format_name = match.group(2) or match.group(5)
        if name.startswith("__"):
            return match.group(0)
        if name not in variables:
            raise MacroError(f"undefined variable ${name}")
        return _format(name, variables[name], format_name, language)

    return VARIABLE.sub(replace, text)


def _macro(name: str, args: list[str], window: TimeRange) -> str:
    def column() -> str:
        if not args or not args[0]:
            raise MacroError(f"missing time column argument for macro {name}")
        return args[0]

    if name == "__time":
        return f'{column()} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {column()}) as "time"'
    if name == "__timeFilter":
        return f"{column()} BETWEEN '{rfc3339(window.start)}' AND '{rfc3339(window.end)}'"
    if name == "__timeFrom":
        return f"'{rfc3339(window.start)}'"
    if name == "__timeTo":
        return f"'{rfc3339(window.end)}'"
    if name in ("__timeGroup", "__timeGroupAlias", "__unixEpochGroup", "__unixEpochGroupAlias"):
        if len(args) < 2:
            raise MacroError(f"macro {name} needs time column and interval and optional fill value")
        step = seconds(parse_interval(args[1]))
        if name.startswith("__timeGroup"):
            grouped = f"floor(extract(epoch from {args[0]})/{step})*{step}"
        else:
            grouped = f"floor(({args[0]})/{step})*{step}"
        return grouped + (' AS "time"' if name.endswith("Alias") else "")
    if name == "__unixEpochFilter":
        start, end = int(window.start.timestamp()), int(window.end.timestamp())
        return f"{column()} >= {start} AND {column()} <= {end}"
    raise MacroError(f"unknown macro {name!r}")


def expand_sql(sql: str, window: TimeRange, variables: Mapping[str, Value]) -> str:
    """A dashboard's SQL as Grafana's PostgreSQL datasource would send it."""
    sql = interpolate_variables(sql, variables, language="sql")
    interval = window.interval
    sql = sql.replace("$__interval_ms", str(round(interval.total_seconds() * 1000)))
    sql = sql.replace("$__interval", format_interval(interval))
    sql = sql.replace("$__unixEpochFrom()", str(int(window.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(window.end.timestamp())))

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        # Before Grafana 5.3, $__timeGroup added `AS "time"` itself; a "," right after it still means that.
        if name == "__timeGroup" and sql[match.end() : match.end() + 1] == ",":
            name = "__timeGroupAlias"
        return _macro(name, [arg.strip() for arg in match.group(2).split(",")], window)

    return MACRO.sub(replace, sql)


def expand_promql(
    expr: str,
    variables: Mapping[str, Value],
    *,
    interval: timedelta,
    rate_interval: timedelta,
    range_: timedelta,
) -> str:
    """A dashboard's PromQL as Grafana's Prometheus datasource would send it."""
    expr = interpolate_variables(expr, variables, language="promql")
    builtins = {
        "__rate_interval": format_interval(rate_interval),
        "__interval": format_interval(interval),
        "__interval_ms": str(round(interval.total_seconds() * 1000)),
        "__range": format_interval(range_),
        "__range_s": str(round(range_.total_seconds())),
        "__range_ms": str(round(range_.total_seconds() * 1000)),
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in builtins:
            raise MacroError(f"Grafana has no variable ${name}")
        return builtins[name]

    # Whole names only, as Grafana's frontend matches them: $__rate_intervall is not $__rate_interval.
    return re.sub(r"\$\{(__\w+)\}|\$(__\w+)", replace, expr)
