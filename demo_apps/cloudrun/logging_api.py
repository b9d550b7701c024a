"""Cloud Logging `entries:list` over the revisions' log lines.

Supported filter: comparisons joined by `AND` (or by plain whitespace, which Cloud Logging also reads
as AND):

    resource.type = "cloud_run_revision"
    resource.labels.service_name | revision_name | configuration_name | location | project_id  = != "..."
    logName = != "projects/P/logs/run.googleapis.com%2Fstdout"
    severity  = != > >= < <=  NAME|NUMBER       (DEFAULT < DEBUG < INFO < ... < EMERGENCY)
    timestamp = != > >= < <=  "RFC3339"
    httpRequest.status  = != > >= < <=  NUMBER

Anything else (OR, NOT, parentheses, `:`, regular expressions, other fields) is an InvalidArgument
that names what is not supported.
"""

from __future__ import annotations

import base64
import hashlib
import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from demo_apps.cloudrun.exceptions import InvalidArgument
from demo_apps.cloudrun.logstore import RESOURCE_TYPE, LogRecord, LogStore, parse_timestamp, severity_number

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_COMPARISON = re.compile(
    r"""(?P<field>[A-Za-z_][A-Za-z0-9_.]*)\s*
        (?P<op>>=|<=|!=|=~|!~|=|>|<|:)\s*
        (?P<value>"(?:[^"\\]|\\.)*"|[^\s()"]+)""",
    re.VERBOSE,
)
_AND = re.compile(r"AND(?=[\s(]|$)")
_UNSUPPORTED_WORD = re.compile(r"(OR|NOT)(?=[\s(]|$)")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_LABEL_FIELDS = {
    "resource.labels.service_name": "service_name",
    "resource.labels.revision_name": "revision_name",
    "resource.labels.configuration_name": "configuration_name",
    "resource.labels.location": "location",
    "resource.labels.project_id": "project_id",
}
SUPPORTED_FIELDS = (
    "resource.type",
    *_LABEL_FIELDS,
    "logName",
    "severity",
    "timestamp",
    "httpRequest.status",
)

Predicate = Callable[[LogRecord], bool]


@dataclass(frozen=True, slots=True)
class Term:
    field: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class EntryQuery:
    terms: tuple[Term, ...]
    predicates: tuple[Predicate, ...]
    descending: bool
    page_size: int
    # Narrowing hints: only these buffers need reading.
    service: str | None
    revision: str | None


def parse_filter(text: str) -> list[Term]:
    terms: list[Term] = []
    position = 0
    text = text.strip()
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        if match := _AND.match(text, position):
            position = match.end()
            continue
        if match := _UNSUPPORTED_WORD.match(text, position):
            raise InvalidArgument(
                f"filter: '{match.group(1)}' is not supported by the emulator; combine comparisons with AND"
            )
        if text[position] in "()-":
            raise InvalidArgument(
                f"filter: '{text[position]}' (grouping or negation) is not supported by the emulator; "
                "combine comparisons with AND"
            )
        match = _COMPARISON.match(text, position)
        if match is None:
            raise InvalidArgument(f"filter: cannot parse the filter from: {text[position : position + 60]!r}")
        field, op, value = match.group("field", "op", "value")
        if op in (":", "=~", "!~"):
            raise InvalidArgument(
                f"filter: operator '{op}' is not supported by the emulator (supported: = != > >= < <=)"
            )
        if value.startswith('"'):
            value = json.loads(value)
        terms.append(Term(field, op, value))
        position = match.end()
    return terms


def _predicate(term: Term) -> Predicate:
    compare = _OPERATORS[term.op]
    field, value = term.field, term.value
    if field == "resource.type":
        _string_only(term)
        result = compare(RESOURCE_TYPE, value)
        return lambda record: result
    if field in _LABEL_FIELDS:
        _string_only(term)
        label = _LABEL_FIELDS[field]
        return lambda record: compare(record.origin.labels[label], value)
    if field == "logName":
        _string_only(term)
        wanted = unquote(value)
        return lambda record: compare(unquote(record.log_name), wanted)
    if field == "severity":
        level = severity_number(value)
        if level is None:
            raise InvalidArgument(f"filter: unknown severity {value!r}")
        return lambda record: compare(record.severity, level)
    if field == "timestamp":
        moment = parse_timestamp(value)
        if moment is None:
            raise InvalidArgument(f"filter: timestamp {value!r} is not RFC 3339")
        return lambda record: compare(record.timestamp, moment)
    if field == "httpRequest.status":
        try:
            status = int(value)
        except ValueError:
            raise InvalidArgument(f"filter: httpRequest.status {value!r} is not a number") from None
        return lambda record: (
            record.http_request is not None
            and compare(_int_or_none(record.http_request.get("status")) or 0, status)
        )
    raise InvalidArgument(
        f"filter: field '{field}' is not supported by the emulator (supported: {', '.join(SUPPORTED_FIELDS)})"
    )


def _string_only(term: Term) -> None:
    if term.op not in ("=", "!="):
        raise InvalidArgument(f"filter: '{term.field}' supports only = and !=, not '{term.op}'")


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def build_query(body: Mapping[str, Any], *, project: str) -> EntryQuery:
    resource_names = body.get("resourceNames") or [
        f"projects/{name}" for name in body.get("projectIds") or []
    ]
    if not resource_names or not isinstance(resource_names, list):
        raise InvalidArgument("resourceNames: at least one resource name is required, e.g. projects/PROJECT")
    for name in resource_names:
        if not isinstance(name, str) or not name.startswith("projects/"):
            raise InvalidArgument(f"resourceNames: {name!r} is not supported; use projects/PROJECT")
    terms = parse_filter(str(body.get("filter") or ""))
    predicates = [_predicate(term) for term in terms]
    if f"projects/{project}" not in resource_names:
        predicates.append(lambda record: False)
    order = " ".join(str(body.get("orderBy") or "timestamp asc").split()).lower()
    if order not in ("timestamp", "timestamp asc", "timestamp desc"):
        raise InvalidArgument(
            f"orderBy: {order!r} is not supported (use 'timestamp asc' or 'timestamp desc')"
        )
    try:
        page_size = int(body.get("pageSize") or DEFAULT_PAGE_SIZE)
    except (TypeError, ValueError):
        raise InvalidArgument("pageSize: must be a number") from None
    if page_size < 0:
        raise InvalidArgument("pageSize: must not be negative")
    service = _equality(terms, "resource.labels.service_name")
    revision = _equality(terms, "resource.labels.revision_name")
    return EntryQuery(
        terms=tuple(terms),
        predicates=tuple(predicates),
        descending=order == "timestamp desc",
        page_size=min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
        service=service,
        revision=revision,
    )


def _equality(terms: Sequence[Term], field: str) -> str | None:
    for term in terms:
        if term.field == field and term.op == "=":
            return term.value
    return None


def _fingerprint(body: Mapping[str, Any]) -> str:
    basis = json.dumps(
        [body.get("resourceNames"), body.get("filter"), body.get("orderBy")], sort_keys=True, default=str
    )
    return hashlib.sha256(basis.encode()).hexdigest()[:16]


def _encode_token(key: tuple[float, int], fingerprint: str) -> str:
    raw = json.dumps({"k": list(key), "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, fingerprint: str) -> tuple[float, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        key = (float(data["k"][0]), int(data["k"][1]))
        same_query = data["f"] == fingerprint
    except (ValueError, KeyError, TypeError, IndexError):
        raise InvalidArgument("pageToken: not a token this emulator issued") from None
    if not same_query:
        raise InvalidArgument("pageToken: issued for a different filter, orderBy or resourceNames")
    return key


def list_entries(store: LogStore, body: Mapping[str, Any], *, project: str) -> dict[str, Any]:
    """The `entries:list` answer: `{"entries": [...], "nextPageToken": "..."}`."""
    query = build_query(body, project=project)
    fingerprint = _fingerprint(body)
    after = _decode_token(str(body["pageToken"]), fingerprint) if body.get("pageToken") else None
    matched = [
        record
        for record in store.records(service=query.service, revision=query.revision)
        if all(predicate(record) for predicate in query.predicates)
    ]
    matched.sort(key=lambda record: (record.timestamp, record.seq), reverse=query.descending)
    if after is not None:
        if query.descending:
            matched = [record for record in matched if (record.timestamp, record.seq) < after]
        else:
            matched = [record for record in matched if (record.timestamp, record.seq) > after]
    page = matched[: query.page_size]
    answer: dict[str, Any] = {"entries": [record.as_entry() for record in page]}
    if len(matched) > len(page):
        last = page[-1]
        answer["nextPageToken"] = _encode_token((last.timestamp, last.seq), fingerprint)
    return answer
