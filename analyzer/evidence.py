"""What the evidence in an IncidentContext proves: one reading shared by the rules engine, the policy
guard and the prompt Gemini is shown, so that the three cannot drift apart.

Every judgement here has three outcomes: proven one way, proven the other way, or unknown. Missing
evidence (an absent optional field, a null figure) is unknown: never healthy and never guilty. Each
judgement that allows a change on Cloud Run needs positive evidence, and the evidence that allows a
rollback can never stand next to the evidence that allows a scale-up, so a context with a piece of
evidence removed is never decided more aggressively than the full one.

Revision health (`now`), over the context's window:

    no traffic share and every figure null (the contract's way of writing "no traffic")
                                                            -> quiet
    request rate unknown                                    -> unknown
    fewer requests than the per-revision minimum            -> quiet (known: too few to judge)
    a known figure over its threshold                       -> failing
    error ratio and p95 both known and within thresholds    -> healthy
    otherwise                                               -> unknown

Deploy blame (`blame`): did this serving revision bring the fault with it?

    unknown      it was created after the alert began: it cannot have brought the fault the alert is
                 about (a later analysis round reads the alert as starting when the round began)
    brought      it was created within `change_window` before the alert; or it took over traffic that
                 another revision served materially within `takeover_window` before the alert (that
                 revision's `history`, ending no later than `takeover_clock_slack` after the alert
                 began), or a recent rollback/release moved traffic to it then; or its own `baseline`
                 (an extension) was already failing while another revision's was healthy
    not brought  created before `change_window`, nothing moved traffic in that time, and a record of
                 serving (nearly) all traffic healthily before the alert: its own `baseline` (an
                 extension), or the service `baseline` when every other revision provably stopped
                 serving before `change_window` (their `history`)
    unknown      anything else: the engine cannot tell whether the deploy brought the fault

Rollback candidate (`rollback_candidate`): the first revision listed after the failing one (older,
the contract lists revisions newest first) that is ready, that no recent rollback moved traffic away
from, that is not failing now, and that has a healthy record (healthy now with enough requests, or
quiet now with a complete, healthy `history`). A revision whose state or record is unknown stops the
search: skipping it could pick an older target that the full evidence would not. So does a list
whose creation times contradict its order, or a revision not named `<service>-...` (another
service's: the list cannot be trusted).

Any change needs the context to be about the service that alerted: an alert whose `service` label
names another service than `service.name` backs neither a rollback nor a scale-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from incidents import ActionKind, ActionType, Figures, IncidentContext, RecentAction, Revision, format_rfc3339

# The baseline window's length when the context does not say (`metrics.baseline_window_seconds`):
# the shortest a producer can configure, so an unknown window never makes a record look larger.
UNKNOWN_BASELINE_SECONDS = 30

# Recent actions that move traffic between revisions.
TRAFFIC_ACTIONS = frozenset({ActionType.ROLLBACK.value, "RELEASE"})


@dataclass(frozen=True, kw_only=True)
class EvidenceConfig:
    # A revision needs this share of the service's minimum request count to be judged on its own...
    revision_min_requests_share: float = 0.1
    # ...and never fewer than this many requests in the window.
    revision_min_requests_floor: int = 10
    # A revision created this soon before the alert is a fresh deploy. It matches the collector's
    # baseline window (300 s ending 60 s before the alert), so a revision older than this had the
    # whole baseline window to show a record.
    change_window: timedelta = timedelta(minutes=6)
    # Traffic moved to a revision this soon before the alert came with the fault. Short enough that a
    # revision that took over earlier shows it in its own baseline share (see the module docstring).
    takeover_window: timedelta = timedelta(minutes=3)
    # `history.served_until` is read from samples (one step, 15-60 s, plus the rate window), so a
    # takeover that came with the fault can show an end a little after the alert began; one that ends
    # later than this after the alert began moved traffic during the incident, not before it.
    takeover_clock_slack: timedelta = timedelta(seconds=60)
    # A revision that served at least this share of the service's baseline traffic served materially.
    material_traffic_share: float = 0.2
    # A revision that served at least this share of the baseline traffic carried (nearly) all of it.
    nearly_all_traffic_share: float = 0.9
    # A revision this young that served fine at first may still carry a slow deploy fault.
    young_revision: timedelta = timedelta(minutes=30)
    # A rollback target's record must reach to within this of the next newer listed revision's
    # creation. Generous on purpose: hand-written and older contexts date `served_until` loosely, and
    # what this guards against is a jump back over weeks of releases that are not listed.
    record_gap: timedelta = timedelta(days=7)
    # A revision a rollback moved traffic away from is not a rollback target for this long.
    flap_window: timedelta = timedelta(hours=1)
    # Saturation: instances at max, at least this busy, and at least this multiple of the baseline's
    # request rate (more demand, not a slower deploy).
    saturation_utilization: float = 0.8
    saturation_rate_factor: float = 1.3


class Health(StrEnum):
    FAILING = "failing"
    HEALTHY = "healthy"
    QUIET = "quiet"
    UNKNOWN = "unknown"


class Blame(StrEnum):
    BROUGHT = "brought"
    NOT_BROUGHT = "not_brought"
    UNKNOWN = "unknown"


class Record(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class RecordVerdict:
    state: Record
    reason: str


@dataclass(frozen=True)
class Judgement:
    state: Health
    reasons: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.state.value} ({', '.join(self.reasons)})" if self.reasons else self.state.value


@dataclass(frozen=True)
class BlameVerdict:
    blame: Blame
    reason: str


@dataclass(frozen=True)
class CandidateSearch:
    """The rollback target, or why there is none; `skipped` says what was passed over and why."""

    target: Revision | None
    reason: str
    skipped: tuple[str, ...] = ()


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


class Evidence:
    """One context read with one configuration."""

    def __init__(self, context: IncidentContext, config: EvidenceConfig | None = None) -> None:
        self.context = context
        self.config = config or EvidenceConfig()
        self.thresholds = context.thresholds
        self.window = context.metrics.window_seconds

    # figures

    def breaches(self, figures: Figures | None) -> list[str]:
        """The known figures over their thresholds."""
        if figures is None:
            return []
        th, reasons = self.thresholds, []
        if figures.error_rate is not None and figures.error_rate > th.error_rate:
            reasons.append(f"errors {pct(figures.error_rate)} > {pct(th.error_rate)}")
        if figures.latency_p95_ms is not None and figures.latency_p95_ms > th.latency_p95_ms:
            reasons.append(f"p95 {ms(figures.latency_p95_ms)} > {ms(th.latency_p95_ms)}")
        return reasons

    def within(self, figures: Figures | None) -> bool:
        """Both the error ratio and the p95 are known and within their thresholds."""
        return (
            figures is not None
            and figures.error_rate is not None
            and figures.latency_p95_ms is not None
            and not self.breaches(figures)
        )

    def revision_min_requests(self) -> float:
        return max(
            self.config.revision_min_requests_floor,
            self.thresholds.min_requests * self.config.revision_min_requests_share,
        )

    def health(
        self, figures: Figures | None, seconds: float, *, min_requests: float | None = None
    ) -> Judgement:
        if figures is None or figures.request_rate_rps is None:
            return Judgement(Health.UNKNOWN, ("request rate unknown",))
        requests = figures.request_rate_rps * seconds
        needed = self.revision_min_requests() if min_requests is None else min_requests
        if requests < needed:
            return Judgement(Health.QUIET, (f"{requests:.0f} requests, too few to judge",))
        breaches = self.breaches(figures)
        if breaches:
            return Judgement(Health.FAILING, tuple(breaches))
        if self.within(figures):
            return Judgement(Health.HEALTHY)
        missing = [name for name in ("error_rate", "latency_p95_ms") if getattr(figures, name) is None]
        return Judgement(Health.UNKNOWN, tuple(f"{name} unknown" for name in missing))

    def now(self, revision: Revision) -> Judgement:
        """The revision's health over the context's window.

        The contract writes a revision with no traffic in the window with null figures: a revision
        without a traffic share whose figures are all null is quiet. One with a share, or with only
        some figures null, is unknown.
        """
        figures = revision.metrics
        if revision.traffic_percent == 0 and all(
            value is None for value in (figures.request_rate_rps, figures.error_rate, figures.latency_p95_ms)
        ):
            return Judgement(Health.QUIET, ("no traffic in the window",))
        return self.health(figures, self.window)

    def baseline_seconds(self) -> int:
        return self.context.metrics.baseline_window_seconds or UNKNOWN_BASELINE_SECONDS

    def service_requests(self) -> float | None:
        """Requests in the window: the smaller of the two estimates the contract carries."""
        metrics = self.context.metrics
        estimates = [metrics.requests_in_window] if metrics.requests_in_window is not None else []
        if metrics.request_rate_rps is not None:
            estimates.append(metrics.request_rate_rps * self.window)
        return min(estimates) if estimates else None

    def service_baseline_healthy(self) -> bool:
        """The service's own record before the alert: enough requests, and known to be healthy."""
        baseline = self.context.metrics.baseline
        judged = self.health(baseline, self.baseline_seconds(), min_requests=self.thresholds.min_requests)
        return judged.state is Health.HEALTHY

    # revisions

    def serving(self) -> list[Revision]:
        return self.context.serving_revisions()

    def newest_serving(self) -> Revision | None:
        return self.context.newest_serving_revision()

    def older_than(self, revision: Revision) -> list[Revision]:
        """Revisions listed after `revision`: older, since the contract lists them newest first."""
        revisions = self.context.revisions
        index = next((i for i, r in enumerate(revisions) if r is revision), len(revisions))
        return revisions[index + 1 :]

    def since_alert(self, window: timedelta) -> datetime:
        return self.context.alert.starts_at - window

    def belongs(self, revision: Revision) -> bool:
        """Cloud Run names every revision of a service `<service>-<suffix>`, generated or chosen with
        `--revision-suffix` (https://cloud.google.com/run/docs/managing/revisions): a listed revision
        without that prefix is another service's, and the list it came in cannot be trusted."""
        return revision.name.startswith(f"{self.context.service.name}-")

    def identity_problem(self) -> str | None:
        """Why the context may describe another service than the one alerting, or None."""
        alerting = self.context.alert.labels.get("service")
        service = self.context.service.name
        if alerting and alerting != service:
            return f"the alert is for {alerting}, but the evidence was collected for {service}"
        return None

    def order_problem(self) -> str | None:
        """Why which revision is older cannot be told from the list, or None.

        The contract lists revisions newest first (IncidentContext puts a list with every creation
        time in that order); a list whose known creation times contradict its order leaves the
        rollback target unknown."""
        previous: Revision | None = None
        for revision in self.context.revisions:
            if revision.created_at is None:
                continue
            if (
                previous is not None
                and previous.created_at is not None
                and revision.created_at > previous.created_at
            ):
                return (
                    f"the revisions are not listed newest first ({revision.name} was created after "
                    f"{previous.name} but is listed after it), so which one is older is unknown"
                )
            previous = revision
        return None

    def young(self, revision: Revision) -> bool:
        created = revision.created_at
        return created is not None and created >= self.since_alert(self.config.young_revision)

    # deploy blame

    def blame(self, revision: Revision) -> BlameVerdict:
        config = self.config
        change_start = self.since_alert(config.change_window)
        created = revision.created_at
        if created is not None and created > self.context.alert.starts_at:
            return BlameVerdict(
                Blame.UNKNOWN,
                f"cannot tell whether the deploy brought the fault: {revision.name} was created "
                f"{format_rfc3339(created)}, after the alert began "
                f"({format_rfc3339(self.context.alert.starts_at)})",
            )
        if created is not None and created >= change_start:
            return BlameVerdict(
                Blame.BROUGHT,
                f"{revision.name} was created {format_rfc3339(created)}, "
                f"{_minutes(self.context.alert.starts_at - created)} before the alert",
            )
        takeover = self._took_over(revision) or self._failing_alone_before(revision)
        if takeover is not None:
            return BlameVerdict(Blame.BROUGHT, takeover)
        if created is None:
            return BlameVerdict(
                Blame.UNKNOWN,
                f"cannot tell whether the deploy brought the fault: {revision.name} has no creation time",
            )
        moved = self._traffic_moved_since(change_start)
        if moved is not None:
            return BlameVerdict(Blame.UNKNOWN, f"cannot tell whether the deploy brought the fault: {moved}")
        record = self._record_before(revision)
        if record is not None:
            return BlameVerdict(Blame.NOT_BROUGHT, record)
        return BlameVerdict(
            Blame.UNKNOWN,
            f"cannot tell whether the deploy brought the fault: {revision.name} has no record of serving "
            "(nearly) all traffic healthily before the alert",
        )

    def _took_over(self, revision: Revision) -> str | None:
        """Positive evidence that `revision` took its traffic only shortly before the alert."""
        since = self.since_alert(self.config.takeover_window)
        alerted = self.context.alert.starts_at
        # Traffic that moved after the alert began (a human's rollback during the incident, a
        # promotion) did not bring the fault the alert is about.
        latest_end = alerted + self.config.takeover_clock_slack
        baseline_rate = self.context.metrics.baseline.request_rate_rps
        # Traffic moved *to* it only when it carried less before than the revision that stopped: a
        # revision that already served most of the traffic (a canary pulled beside it) did not take
        # over. What it carried before is its own baseline, or at most what the stopped revision's
        # baseline leaves of the service's; when neither is known there is no proof of a takeover.
        own = revision.baseline.request_rate_rps if revision.baseline is not None else None
        for other in self.context.revisions:
            history = other.history
            if other is revision or other.traffic_percent > 0 or history is None:
                continue
            carried = own
            if carried is None and other.baseline is not None and baseline_rate:
                left = other.baseline.request_rate_rps
                carried = baseline_rate - left if left is not None else None
            if (
                history.served_until is not None
                and since <= history.served_until <= latest_end
                and history.request_rate_rps is not None
                and baseline_rate
                and history.request_rate_rps >= self.config.material_traffic_share * baseline_rate
                and carried is not None
                and carried < history.request_rate_rps
            ):
                return (
                    f"traffic moved to {revision.name} shortly before the alert: {other.name} served "
                    f"{history.request_rate_rps:.1f}/s until {format_rfc3339(history.served_until)}"
                )
        for action in self.context.recent_actions:
            if (
                action.action in TRAFFIC_ACTIONS
                and since <= action.at <= alerted
                and action.target_revision == revision.name
            ):
                return (
                    f"a {action.action} moved traffic to {revision.name} at {format_rfc3339(action.at)}, "
                    "shortly before the alert"
                )
        return None

    def _failing_alone_before(self, revision: Revision) -> str | None:
        """Positive evidence that the fault was this revision's own before the alert: its own figures
        in the baseline window were unhealthy while another revision served healthily beside it."""
        seconds = self.baseline_seconds()
        own = self.health(revision.baseline, seconds)
        if own.state is not Health.FAILING:
            return None
        for other in self.context.revisions:
            if other is not revision and self.health(other.baseline, seconds).state is Health.HEALTHY:
                return (
                    f"{revision.name} was already failing before the alert ({', '.join(own.reasons)}) while "
                    f"{other.name} served healthily beside it"
                )
        return None

    def _traffic_moved_since(self, since: datetime) -> str | None:
        for action in self.context.recent_actions:
            if action.action in TRAFFIC_ACTIONS and action.at >= since:
                return f"a {action.action} moved traffic at {format_rfc3339(action.at)}"
        return None

    def _record_before(self, revision: Revision) -> str | None:
        """A record of `revision` serving (nearly) all traffic healthily before the alert."""
        config = self.config
        own = revision.baseline
        service_rate = self.context.metrics.baseline.request_rate_rps
        if (
            own is not None
            and own.request_rate_rps is not None
            and service_rate
            and own.request_rate_rps >= config.nearly_all_traffic_share * service_rate
            and self.health(own, self.baseline_seconds()).state is Health.HEALTHY
        ):
            return (
                f"{revision.name} served {own.request_rate_rps:.1f}/s of {service_rate:.1f}/s healthily "
                f"before the alert (errors {pct(own.error_rate)}, p95 {ms(own.latency_p95_ms)})"
            )
        if revision.traffic_percent < 100 or not self.service_baseline_healthy():
            return None
        cutoff = self.since_alert(config.change_window)
        for other in self.context.revisions:
            if other is revision:
                continue
            history = other.history
            if other.traffic_percent > 0 or history is None or history.served_until is None:
                return None
            if history.served_until >= cutoff:
                return None
        baseline = self.context.metrics.baseline
        return (
            f"{revision.name} has carried all traffic since before {format_rfc3339(cutoff)}; the service "
            f"was healthy before the alert (errors {pct(baseline.error_rate)}, "
            f"p95 {ms(baseline.latency_p95_ms)})"
        )

    # rollback targets

    def recent_rollbacks(self, *, now: datetime | None = None) -> list[RecentAction]:
        now = now or self.context.observed_at
        return [
            action
            for action in self.context.recent_actions
            if action.action == ActionType.ROLLBACK and now - action.at < self.config.flap_window
        ]

    def flap_problem(self, target: str, *, now: datetime | None = None) -> str | None:
        """Why rolling back to `target` could flap, or None.

        A recent rollback that does not say which revision it left could have left `target`, unless it
        is known to have sent its traffic to `target`.
        """
        for action in self.recent_rollbacks(now=now):
            if action.from_revision == target:
                return (
                    f"{target} was rolled back away from at {format_rfc3339(action.at)}; "
                    "returning to it would flap"
                )
            if action.from_revision is None and action.target_revision != target:
                return (
                    f"a rollback at {format_rfc3339(action.at)} does not say which revision it moved "
                    f"traffic away from, so it may have been {target}"
                )
        return None

    def record(self, revision: Revision) -> RecordVerdict:
        """Whether `revision` has a healthy record: healthy now with enough requests, or quiet now
        with a complete, healthy record from when it last served."""
        now = self.now(revision)
        if now.state is Health.HEALTHY and revision.traffic_percent > 0:
            return RecordVerdict(Record.HEALTHY, f"{revision.name} is serving healthily now")
        if now.state is Health.FAILING:
            return RecordVerdict(
                Record.UNHEALTHY, f"{revision.name} is failing now ({', '.join(now.reasons)})"
            )
        if now.state is Health.UNKNOWN:
            return RecordVerdict(
                Record.UNKNOWN, f"{revision.name}'s current figures are unknown ({', '.join(now.reasons)})"
            )
        history = revision.history
        if history is None or history.served_until is None:
            return RecordVerdict(Record.UNKNOWN, f"{revision.name} has no record of serving healthily")
        figures = Figures(error_rate=history.error_rate, latency_p95_ms=history.latency_p95_ms)
        breaches = self.breaches(figures)
        if breaches:
            return RecordVerdict(
                Record.UNHEALTHY, f"{revision.name} was unhealthy when it last served ({', '.join(breaches)})"
            )
        if not self.within(figures):
            return RecordVerdict(
                Record.UNKNOWN, f"{revision.name}'s record from when it last served is incomplete"
            )
        gap = self._gap_after(revision, history.served_until)
        if gap is not None:
            return RecordVerdict(Record.UNKNOWN, gap)
        return RecordVerdict(
            Record.HEALTHY,
            f"{revision.name} served healthily until {format_rfc3339(history.served_until)} "
            f"(errors {pct(history.error_rate)}, p95 {ms(history.latency_p95_ms)})",
        )

    def _gap_after(self, revision: Revision, served_until: datetime) -> str | None:
        """Why `revision`'s record may not be the last good one before the revisions listed above it.

        A record is a rollback target's credential when the revision served until about when the next
        newer listed revision came. One that stopped more than `record_gap` before leaves a gap:
        whatever served in between is not listed, and going back past it is a jump over releases
        nobody can see (schema and configuration may have moved on since)."""
        revisions = self.context.revisions
        index = next(i for i, r in enumerate(revisions) if r is revision)
        if index == 0:
            return None
        newer = revisions[index - 1]
        if newer.created_at is None:
            return (
                f"{revision.name} served until {format_rfc3339(served_until)}, and when {newer.name} "
                "replaced it is unknown"
            )
        if served_until < newer.created_at - self.config.record_gap:
            return (
                f"{revision.name} last served {format_rfc3339(served_until)}, long before {newer.name} was "
                f"created ({format_rfc3339(newer.created_at)}): what served in between is not listed"
            )
        return None

    def target_problem(self, target: str | None, *, now: datetime | None = None) -> str | None:
        """Why an automatic rollback may not go to `target`, or None: it must exist, be ready, not be
        the revision serving everything, not flap, and have a healthy record."""
        if not target:
            return "rollback without a target revision"
        revision = self.context.revision(target)
        if revision is None:
            known = ", ".join(r.name for r in self.context.revisions) or "none"
            return (
                f"rollback target {target} is not a revision of {self.context.service.name} (known: {known})"
            )
        if not self.belongs(revision):
            return f"rollback target {target} is not named like a revision of {self.context.service.name}"
        if not revision.ready:
            return f"rollback target {target} is not ready"
        if revision.traffic_percent == 100:
            return f"rollback target {target} already serves 100% of traffic and the service is unhealthy"
        flap = self.flap_problem(target, now=now)
        if flap is not None:
            return f"rollback target: {flap}"
        record = self.record(revision)
        if record.state is not Record.HEALTHY:
            return f"rollback target: {record.reason}"
        return None

    def rollback_candidate(self, failing: Revision) -> CandidateSearch:
        if failing.traffic_percent == 0:
            return CandidateSearch(None, f"{failing.name} serves no traffic")
        order = self.order_problem()
        if order is not None:
            return CandidateSearch(None, order)
        skipped: list[str] = []
        for candidate in self.older_than(failing):
            beside = self._beside_carrier(failing, candidate)
            if beside is not None:
                skipped.append(f"{candidate.name} skipped: {beside}")
                continue
            if not self.belongs(candidate):
                return CandidateSearch(
                    None,
                    f"{candidate.name} is listed among {self.context.service.name}'s revisions but is not "
                    "named like one: the revision list cannot be trusted",
                    tuple(skipped),
                )
            if not candidate.ready:
                skipped.append(f"{candidate.name} skipped: not ready")
                continue
            record = self.record(candidate)
            if record.state is Record.UNHEALTHY:
                skipped.append(f"{candidate.name} skipped: {record.reason}")
                continue
            flap = self.flap_problem(candidate.name)
            if flap is not None:
                if flap.startswith(candidate.name):
                    skipped.append(f"{candidate.name} skipped: {flap}")
                    continue
                # Which revision an earlier rollback left is unknown: it may be this one.
                return CandidateSearch(None, flap, tuple(skipped))
            if record.state is Record.HEALTHY:
                return CandidateSearch(candidate, record.reason, tuple(skipped))
            # Unknown state or record: an older target chosen past it could be the wrong one.
            return CandidateSearch(None, record.reason, tuple(skipped))
        return CandidateSearch(None, "no older revision is ready and known to be healthy", tuple(skipped))

    def _beside_carrier(self, failing: Revision, candidate: Revision) -> str | None:
        """Why `candidate` is not where a rollback away from `failing` sends everyone: beside a stable
        revision that carries the service, a smaller split (an experiment, a second canary) is not."""
        serving = [r for r in self.older_than(failing) if r.traffic_percent > 0]
        if len(serving) < 2:
            return None
        carrier = max(serving, key=lambda r: r.traffic_percent)
        if 0 < candidate.traffic_percent < carrier.traffic_percent:
            share, main = candidate.traffic_percent, carrier.traffic_percent
            return f"it serves {share}% beside {carrier.name} ({main}%)"
        return None

    def rollback_candidates(self, failing: Revision, *, limit: int = 5) -> list[Revision]:
        """The revisions an automatic rollback may go to, newest first (for a model to choose from)."""
        return [
            r
            for r in self.older_than(failing)
            if self.target_problem(r.name) is None and self._beside_carrier(failing, r) is None
        ][:limit]

    # what a change needs

    def rollback_support_problem(self, target: str | None) -> str | None:
        """Why the evidence does not back an automatic rollback away from the newest serving revision,
        or None when it does: that revision is failing and brought the fault, and every other serving
        revision is known not to be failing."""
        problem = self.identity_problem() or self.order_problem()
        if problem is not None:
            return problem
        failing = self.newest_serving()
        if failing is None:
            return "no revision serves traffic, so there is nothing to roll back from"
        judged = self.now(failing)
        if judged.state is not Health.FAILING:
            return f"{failing.name} is not known to be failing ({judged.describe()})"
        blame = self.blame(failing)
        if blame.blame is not Blame.BROUGHT:
            return blame.reason
        for other in self.serving():
            if other is failing or other.name == target:
                continue
            state = self.now(other).state
            if state not in (Health.HEALTHY, Health.QUIET):
                return (
                    f"{other.name} also serves and is {state.value}: the errors may not be the deploy's alone"
                )
        return None

    def saturation(self) -> list[str] | None:
        """The signals of saturation, all known; None when any is missing or absent."""
        scaling, metrics, config = self.context.scaling, self.context.metrics, self.config
        if (
            not scaling.max_instances
            or scaling.current_instances is None
            or scaling.utilization is None
            or metrics.request_rate_rps is None
            or not metrics.baseline.request_rate_rps
        ):
            return None
        baseline_rate = metrics.baseline.request_rate_rps
        if (
            scaling.current_instances < scaling.max_instances
            or scaling.utilization < config.saturation_utilization
            or metrics.request_rate_rps < config.saturation_rate_factor * baseline_rate
        ):
            return None
        return [
            f"instances {scaling.current_instances:g} at max {scaling.max_instances}",
            f"utilization {scaling.utilization * 100:.0f}%",
            f"request rate {metrics.request_rate_rps:.1f}/s vs baseline {baseline_rate:.1f}/s",
        ]

    def _human_scaling(self) -> str | None:
        """A human's scaling change within the flap window: the limits are theirs (a cost cap, a
        quota, a database's connection budget), so an automatic scale-up does not undo them."""
        now = self.context.observed_at
        for action in self.context.recent_actions:
            by_hand = action.action == ActionKind.SCALE or (
                action.manual and action.action == ActionType.SCALE_UP
            )
            if by_hand and now - action.at < self.config.flap_window:
                return (
                    f"a human changed the scaling at {format_rfc3339(action.at)} "
                    f"({_minutes(now - action.at)} ago): raising it again is theirs to decide"
                )
        return None

    def cleared_for_scale_up(self) -> str | None:
        """Why a scale-up is not backed, or None: no human changed the scaling within the flap window,
        the service is not capped at one instance on purpose, and every serving revision either did not
        bring the fault or is healthy now, so more instances of it are not more of a bad deploy."""
        identity = self.identity_problem()
        if identity is not None:
            return identity
        human = self._human_scaling()
        if human is not None:
            return human
        if self.context.scaling.max_instances == 1:
            # A ceiling of one instance is usually a choice, not a default (Cloud Run's default is
            # 100): state held in memory, a single consumer of a queue, a licence. A second instance
            # can break such a service, so only a human raises it.
            return (
                "max instances is 1: the service may run as a single instance on purpose, and a second "
                "one could break it"
            )
        serving = self.serving()
        if not serving:
            return "no revision serves traffic"
        for revision in serving:
            if self.now(revision).state is Health.HEALTHY:
                continue
            verdict = self.blame(revision)
            if verdict.blame is not Blame.NOT_BROUGHT:
                return (
                    verdict.reason
                    if verdict.blame is Blame.UNKNOWN
                    else f"{verdict.reason}: a deploy may be the cause"
                )
        return None


def _minutes(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60} min"


def names(revisions: Iterable[Revision]) -> str:
    return ", ".join(r.name for r in revisions)
