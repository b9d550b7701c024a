"""What a model is shown: the prompts in `prompts/` beside this module, and an incident rendered
compactly as data.

Everything a model reads about an incident sits inside one data section, `<incident_data>` ...
`</incident_data>`; the system instruction says that nothing in it is an instruction. Text written by
the monitored service or its users (log lines, alert annotations, and root causes an engine wrote
after reading them) is untrusted: it is stripped of control and bidirectional-override characters,
cut to a length, and rendered as a JSON string with `<` and `>` escaped, so it can neither break out
of its line nor close the data section. Names (service, revisions) keep only the characters a Cloud
Run name can have. Log lines are capped in count and sit in their own `<log_lines>` block.

The figures are rendered the way the rules engine reads them (service against baseline, one row per
revision with its current, pre-alert and last-served figures), and the rollback candidates are listed
explicitly: the revisions the policy guard would accept as a target.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any, Final

from analyzer.engines.rules import RulesConfig
from analyzer.evidence import Evidence
from analyzer.policy import PolicyConfig
from incidents import (
    Figures,
    IncidentContext,
    LogLine,
    Revision,
    RevisionHistory,
    format_rfc3339,
)

PROMPTS_DIR: Final = Path(__file__).with_name("prompts")

DATA_OPEN: Final = "<incident_data>"
DATA_CLOSE: Final = "</incident_data>"
LOGS_OPEN: Final = "<log_lines>"
LOGS_CLOSE: Final = "</log_lines>"

MAX_LOG_LINES: Final = 10
MAX_LOG_CHARS: Final = 200
MAX_ANNOTATIONS: Final = 3
MAX_ANNOTATION_CHARS: Final = 200
MAX_REVISION_ROWS: Final = 8
MAX_CANDIDATES: Final = 5
MAX_RECENT_ACTIONS: Final = 5
MAX_GAPS: Final = 5
MAX_GAP_CHARS: Final = 100
# The decision prompt's own bound; log lines give way first when the evidence is larger. With the
# system instruction and the response schema, a request stays under 4,000 input tokens.
MAX_PROMPT_CHARS: Final = 5400
MAX_NAME_CHARS: Final = 100
# A conservative bound on tokens per character for English text, JSON and names: Gemini's
# tokenizer averages about four characters a token on such text, so three never underestimates much.
CHARS_PER_TOKEN: Final = 3

# Unicode categories dropped from untrusted text: controls, format characters (bidirectional
# overrides and isolates, zero-width characters), surrogates, private use and unassigned.
_DROPPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_NAME_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._:@-]")
_REASON_UNSAFE: Final = re.compile(r"[^A-Za-z0-9 ._:@%/,()'-]")


@cache
def load_prompt(name: str) -> str:
    """`prompts/<name>.md`, read once per process."""
    return (PROMPTS_DIR / f"{name}.md").read_text(encoding="utf-8").strip()


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens in `text`, without a tokenizer (the SDK's needs a download)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def clean_text(text: str, limit: int) -> str:
    """One line of printable text, at most `limit` characters (an ellipsis marks a cut)."""
    kept = []
    # A huge log message is cut before it is cleaned; the slack covers what cleaning removes.
    for char in text[: limit * 8]:
        if char in "\t\n\r\v\f\x85\u2028\u2029":
            kept.append(" ")
        elif unicodedata.category(char) not in _DROPPED_CATEGORIES:
            kept.append(char)
    line = " ".join("".join(kept).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def quote(text: str, limit: int) -> str:
    """Untrusted text as a JSON string that cannot close a tag of the data section."""
    return (
        json.dumps(clean_text(text, limit), ensure_ascii=False)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
    )


def clean_name(text: str | None) -> str:
    """A service or revision name, reduced to the characters such names can have."""
    if not text:
        return "-"
    return _NAME_UNSAFE.sub("_", text)[:MAX_NAME_CHARS]


def failing_revision(context: IncidentContext) -> Revision | None:
    """The newest revision serving traffic: the one a rollback moves traffic away from."""
    return context.newest_serving_revision()


def rollback_candidates(context: IncidentContext, *, rules: RulesConfig | None = None) -> list[Revision]:
    """Revisions older than the failing one that an automatic rollback may go to (the policy guard's
    target check, read as the rules engine reads it). Newest first."""
    failing = failing_revision(context)
    if failing is None:
        return []
    evidence = Evidence(context, (rules or RulesConfig()).evidence)
    return evidence.rollback_candidates(failing, limit=MAX_CANDIDATES)


def scale_limit(
    context: IncidentContext, *, rules: RulesConfig | None = None, policy: PolicyConfig | None = None
) -> int | None:
    """The highest max_instances one scale-up may ask for: the rules engine's step, capped by the
    policy's factor and ceiling."""
    current = context.scaling.max_instances
    if not current:
        return None
    rules, policy = rules or RulesConfig(), policy or PolicyConfig()
    step = min(rules.scale_factor, policy.max_scale_factor)
    return min(math.floor(current * step), policy.max_instances_ceiling)


# figures


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def _figures(figures: Figures | RevisionHistory | None, seconds: float | None = None) -> str:
    if figures is None:
        return "-"
    rate, errors, p95 = figures.request_rate_rps, figures.error_rate, figures.latency_p95_ms
    if rate is None and errors is None and p95 is None:
        return "no data"
    parts = []
    if rate is not None:
        count = f" ({rate * seconds:.0f} req)" if seconds else ""
        parts.append(f"{rate:.1f}/s{count}")
    if rate == 0 and errors is None and p95 is None:
        return f"{parts[0]} no traffic"
    parts.append(f"err {_pct(errors)}")
    parts.append(f"p95 {_ms(p95)}")
    return ", ".join(parts)


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if seconds < 120:
        text = f"{seconds}s"
    elif seconds < 7200:
        text = f"{seconds // 60}m"
    elif seconds < 172_800:
        text = f"{seconds // 3600}h {seconds % 3600 // 60}m"
    else:
        text = f"{seconds // 86400}d {seconds % 86400 // 3600}h"
    return sign + text


def _time(value: Any) -> str:
    return format_rfc3339(value) if value is not None else "n/a"


# the decision prompt


def render_decision_prompt(
    context: IncidentContext,
    *,
    rules: RulesConfig | None = None,
    policy: PolicyConfig | None = None,
    max_chars: int = MAX_PROMPT_CHARS,
) -> str:
    """The user turn of a decision request: the context as one data section, at most `max_chars`
    long where dropping log lines (the oldest first) can make it so. `rules` and `policy` are the
    running settings, so the candidates and limits shown are the ones the guard will apply."""
    rules, policy = rules or RulesConfig(), policy or PolicyConfig()
    prompt = ""
    for log_lines in range(MAX_LOG_LINES, -1, -1):
        lines = [
            "Decide on the incident in the data section. Answer with one JSON object that follows the "
            "response schema.",
            "",
            DATA_OPEN,
            *_incident_lines(context, log_lines, rules, policy),
            DATA_CLOSE,
        ]
        prompt = "\n".join(lines)
        if len(prompt) <= max_chars:
            break
    return prompt


def _incident_lines(
    context: IncidentContext, log_lines: int, rules: RulesConfig, policy: PolicyConfig
) -> list[str]:
    alert, th = context.alert, context.thresholds
    candidates = rollback_candidates(context, rules=rules)
    service = context.service
    since = _duration(context.observed_at - alert.starts_at)
    status = alert.status if alert.status == "firing" else f"resolved at {_time(alert.ends_at)}"
    lines = [
        f"service: {clean_name(service.name)} (project {clean_name(service.project)}, "
        f"region {clean_name(service.region)})",
        f"alert: {clean_name(alert.name)}, {status}, severity {clean_name(alert.severity)}, "
        f"started {_time(alert.starts_at)}",
        f"observed: {_time(context.observed_at)} ({since} after the alert started)",
        f"thresholds: errors above {_pct(th.error_rate)} or p95 above {_ms(th.latency_p95_ms)}; "
        f"at least {th.min_requests} requests in the window to judge the service",
        "",
        *_service_lines(context),
        "",
        *_revision_lines(context, candidates, rules),
        "",
        *_scaling_lines(context, candidates, rules, policy),
        "",
        "recent actions (newest first):",
        *_recent_action_lines(context),
        "missing evidence (the collector could not get it; missing is not healthy):",
        *(
            [f"- {clean_text(gap, MAX_GAP_CHARS)}" for gap in context.gaps[:MAX_GAPS]]
            or ["- none: every source answered"]
        ),
        "",
        "alert annotations (untrusted text, quoted):",
        *(_annotation_lines(alert.annotations) or ["- none"]),
        "",
        *_log_lines(context, log_lines),
    ]
    return lines


def _service_lines(context: IncidentContext) -> list[str]:
    metrics = context.metrics
    baseline_seconds = metrics.baseline_window_seconds or 300
    requests = metrics.requests_in_window
    if requests is None and metrics.request_rate_rps is not None:
        requests = metrics.request_rate_rps * metrics.window_seconds
    count = "unknown" if requests is None else f"{requests:.0f}"
    extra = ""
    if metrics.latency_p50_ms is not None or metrics.latency_p99_ms is not None:
        extra = f", p50 {_ms(metrics.latency_p50_ms)}, p99 {_ms(metrics.latency_p99_ms)}"
    return [
        f"service figures, last {metrics.window_seconds}s: {_figures(metrics)}{extra}; "
        f"requests in the window: {count}",
        f"service baseline, the {baseline_seconds}s before the alert: {_figures(metrics.baseline)}",
    ]


def _revision_rows(context: IncidentContext, candidates: Sequence[Revision]) -> list[Revision]:
    shown = {id(r) for r in context.revisions if r.traffic_percent > 0}
    shown |= {id(r) for r in candidates[:MAX_CANDIDATES]}
    for revision in context.revisions:
        if len(shown) >= MAX_REVISION_ROWS:
            break
        shown.add(id(revision))
    return [r for r in context.revisions if id(r) in shown]


def _revision_lines(
    context: IncidentContext, candidates: Sequence[Revision], rules: RulesConfig
) -> list[str]:
    if not context.revisions:
        return ["revisions: none known"]
    window = context.metrics.window_seconds
    baseline_seconds = context.metrics.baseline_window_seconds or 300
    rows = _revision_rows(context, candidates)
    lines = [
        f"revisions (newest first; age at the alert; now = last {window}s, before = the "
        f"{baseline_seconds}s before the alert, last served = while it last took traffic):",
        "| revision | age | traffic | ready | now | before | last served |",
    ]
    for revision in rows:
        age = _duration(context.alert.starts_at - revision.created_at) if revision.created_at else "n/a"
        history = revision.history
        served = "-"
        if history is not None:
            served = f"{_figures(history)}, until {_time(history.served_until)}"
        lines.append(
            f"| {clean_name(revision.name)}{' (latest)' if revision.latest else ''} | {age} | "
            f"{revision.traffic_percent}% | {'yes' if revision.ready else 'no'} | "
            f"{_figures(revision.metrics, window)} | "
            f"{_figures(revision.baseline, baseline_seconds)} | {served} |"
        )
    if len(rows) < len(context.revisions):
        lines.append(f"({len(context.revisions) - len(rows)} older revisions not shown)")
    failing = failing_revision(context)
    evidence = Evidence(context, rules.evidence)
    judge = evidence.revision_min_requests()
    lines.append(f"a revision is judged on its own figures with at least {judge:.0f} requests in the window")
    lines.append(
        f"failing revision (newest serving): {clean_name(failing.name) if failing else 'none serves traffic'}"
    )
    if failing is not None:
        verdict = evidence.blame(failing)
        # Built from names, times and figures; names are reduced to safe characters all the same.
        reason = _REASON_UNSAFE.sub("_", verdict.reason)[:300]
        lines.append(f"deploy blame of the failing revision: {verdict.blame.value}: {reason}")
    names = ", ".join(clean_name(r.name) for r in candidates[:MAX_CANDIDATES])
    lines.append(
        "rollback candidates (ready, healthy record, older than the failing revision; newest first): "
        + (names or "none: ROLLBACK is not allowed")
    )
    return lines


def _scaling_lines(
    context: IncidentContext, candidates: Sequence[Revision], rules: RulesConfig, policy: PolicyConfig
) -> list[str]:
    scaling = context.scaling
    parts = [
        f"min {scaling.min_instances if scaling.min_instances is not None else 'n/a'}",
        f"max {scaling.max_instances if scaling.max_instances is not None else 'n/a'}",
        f"current {scaling.current_instances:g}" if scaling.current_instances is not None else "current n/a",
        f"utilization {scaling.utilization * 100:.0f}%"
        if scaling.utilization is not None
        else "utilization n/a",
    ]
    if scaling.concurrency is not None:
        parts.append(f"concurrency {scaling.concurrency}")
    if scaling.cpu:
        parts.append(f"cpu {clean_name(scaling.cpu)}")
    if scaling.memory:
        parts.append(f"memory {clean_name(scaling.memory)}")
    limit = scale_limit(context, rules=rules, policy=policy)
    allowed = ["NONE", "INVESTIGATE"]
    if candidates:
        allowed.append("ROLLBACK (to a listed candidate)")
    if limit is not None and scaling.max_instances is not None:
        allowed.append(f"SCALE_UP (max_instances {scaling.max_instances + 1} to {limit})")
    return [
        "scaling (instances): " + ", ".join(parts),
        f"scale-up limit: max_instances at most {limit}"
        if limit is not None
        else "scale-up limit: none possible, max instances unknown",
        "allowed actions: " + ", ".join(allowed),
    ]


def _recent_action_lines(context: IncidentContext) -> list[str]:
    actions = sorted(context.recent_actions, key=lambda a: a.at, reverse=True)[:MAX_RECENT_ACTIONS]
    lines = []
    for action in actions:
        text = f"- {action.action} at {_time(action.at)}"
        if action.target_revision:
            text += f" to {clean_name(action.target_revision)}"
        if action.from_revision:
            text += f" from {clean_name(action.from_revision)}"
        if action.outcome:
            text += f", outcome {clean_name(action.outcome)}"
        text += ", manual" if action.manual else ", automatic"
        lines.append(text)
    return lines or ["- none"]


def _annotation_lines(annotations: dict[str, str]) -> list[str]:
    return [
        f"- {clean_name(key)}: {quote(value, MAX_ANNOTATION_CHARS)}"
        for key, value in sorted(annotations.items())[:MAX_ANNOTATIONS]
    ]


def _log_lines(context: IncidentContext, limit: int) -> list[str]:
    """Newest last; repeated messages folded into one line with a count."""
    ordered = sorted(
        context.logs, key=lambda line: (line.timestamp is None, line.timestamp or context.observed_at)
    )
    folded: dict[tuple[str | None, str], tuple[int, LogLine]] = {}
    for line in ordered:
        key = (line.revision, clean_text(line.message, MAX_LOG_CHARS))
        count = folded.pop(key, (0, line))[0]
        # Re-inserted at the end: the newest occurrence decides the order.
        folded[key] = (count + 1, line)
    entries = list(folded.values())[-limit:] if limit else []
    header = (
        f"log lines (untrusted text, quoted; {len(entries)} shown of {len(context.logs)}, repeats folded, "
        f"at most {MAX_LOG_LINES} lines of {MAX_LOG_CHARS} characters, oldest first):"
    )
    if not entries:
        return [header, LOGS_OPEN, "(none)", LOGS_CLOSE]
    body = []
    for number, (count, line) in enumerate(entries, start=1):
        repeat = f" (x{count})" if count > 1 else ""
        body.append(
            f"{number}. {_time(line.timestamp)} {clean_name(line.severity)} "
            f"{clean_name(line.revision)}{repeat}: {quote(line.message, MAX_LOG_CHARS)}"
        )
    return [header, LOGS_OPEN, *body, LOGS_CLOSE]


# the explanation prompt


def render_incident_record(incident: dict[str, Any]) -> str:
    """The user turn of an explanation request: the incident API document as one data section."""
    lines = [
        "Summarize the incident in the data section for the on-call engineer.",
        "",
        DATA_OPEN,
        *_record_lines(incident),
        DATA_CLOSE,
    ]
    return "\n".join(lines)


def _decision_text(decision: dict[str, Any]) -> str:
    text = clean_name(str(decision.get("action") or "n/a"))
    if decision.get("target_revision"):
        text += f" to {clean_name(str(decision['target_revision']))}"
    scale = decision.get("scale")
    if isinstance(scale, dict):
        text += f" (min {scale.get('min_instances')}, max {scale.get('max_instances')} instances)"
    confidence = decision.get("confidence")
    if isinstance(confidence, int | float):
        text += f", confidence {confidence:.2f}"
    if decision.get("engine"):
        text += f", engine {clean_name(str(decision['engine']))}"
    return text


def _quoted_list(items: Iterable[Any], *, limit: int, chars: int) -> list[str]:
    return [f"- {quote(str(item), chars)}" for item in list(items)[:limit]]


def _record_lines(incident: dict[str, Any]) -> list[str]:
    alerts = ", ".join(clean_name(str(name)) for name in incident.get("alert_names") or []) or "n/a"
    lines = [
        f"incident {incident.get('id')} on {clean_name(incident.get('service'))}: status "
        f"{clean_name(incident.get('status'))}, alerts {alerts}",
    ]
    if incident.get("status_reason"):
        lines.append(f"status reason: {quote(str(incident['status_reason']), 300)}")
    timestamps = incident.get("timestamps") or {}
    for key in ("fault_started_at", "alert_fired_at", "decided_at", "mitigated_at", "resolved_at"):
        if timestamps.get(key):
            lines.append(f"{key.replace('_', ' ')}: {clean_name(str(timestamps[key]))}")
    proposed = incident.get("proposed_decision") or {}
    decision = incident.get("decision") or {}
    if proposed:
        lines.append(f"proposed: {_decision_text(proposed)}")
        if proposed.get("root_cause"):
            lines.append(f"root cause (engine-written): {quote(str(proposed['root_cause']), 300)}")
        lines.append("evidence (engine-written):")
        lines.extend(_quoted_list(proposed.get("evidence") or [], limit=8, chars=200) or ["- none"])
        opinions = proposed.get("opinions") or {}
        for name in ("rules", "gemini"):
            opinion = opinions.get(name)
            if isinstance(opinion, dict):
                lines.append(f"opinion of the {name} engine: {_decision_text(opinion)}")
                if opinion.get("root_cause"):
                    lines.append(f"  its root cause: {quote(str(opinion['root_cause']), 200)}")
    if decision:
        lines.append(f"final decision: {_decision_text(decision)}")
        if decision.get("explanation"):
            lines.append(f"explanation (engine-written): {quote(str(decision['explanation']), 300)}")
    policy = incident.get("policy") or {}
    if policy.get("verdict"):
        reason = f": {quote(str(policy['reason']), 300)}" if policy.get("reason") else ""
        lines.append(f"policy verdict: {clean_name(str(policy['verdict']))}{reason}")
    if incident.get("engine_fallback_reason"):
        lines.append(
            "the configured engine failed and the rules engine decided: "
            + quote(str(incident["engine_fallback_reason"]), 200)
        )
    for action in (incident.get("actions") or [])[-3:]:
        error = f", error {quote(str(action['error']), 200)}" if action.get("error") else ""
        lines.append(
            f"action {action.get('id')}: {clean_name(str(action.get('type')))} "
            f"{clean_name(str(action.get('status')))}{' (manual)' if action.get('manual') else ''}{error}"
        )
    mttr = incident.get("mttr") or {}
    if mttr.get("seconds") is not None:
        lines.append(f"recovered and verified; MTTR {float(mttr['seconds']):.0f} s")
    context = incident.get("context") or {}
    if context.get("gaps"):
        lines.append(
            "missing evidence: " + ", ".join(quote(str(gap), 80) for gap in context["gaps"][:MAX_GAPS])
        )
    timeline = (incident.get("timeline") or [])[-8:]
    if timeline:
        lines.append("timeline (last events, oldest first):")
        lines.extend(
            f"- {clean_name(str(event.get('at')))} {clean_name(str(event.get('kind')))} "
            f"{clean_name(str(event.get('actor')))}: {quote(str(event.get('message') or ''), 200)}"
            for event in timeline
        )
    return lines
