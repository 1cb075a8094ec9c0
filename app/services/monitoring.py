"""Prometheus metrics for model sync and the brain, in a registry of the service's own.

Nothing is registered globally, so several services (tests, containers in one process) never
collide. The ``/metrics`` endpoint serves :meth:`ProductionMonitoringService.render`.

==========================================  =========  =========================================
metric                                      type       labels
==========================================  =========  =========================================
model_sync_cycles_total                     counter    outcome: a ``CycleOutcome`` (outcome.py)
model_sync_artifacts_total                  counter    outcome: an artifact's ``Outcome.metric``;
                                                       reason: a key of :data:`ARTIFACT_REASONS`
model_sync_download_bytes_total             counter
model_sync_download_seconds                 histogram
model_sync_github_rate_limit_remaining      gauge      (absent until GitHub has said)
model_sync_circuit_breaker_state            gauge      operation; 0 closed, 1 half_open, 2 open
model_sync_last_success_timestamp_seconds   gauge      (unix time; absent until a cycle completes)
trading_brain_swaps_total                   counter    outcome: installed | refused;
                                                       source: a value of :data:`SWAP_SOURCES`;
                                                       reason: ``ok``, or the refusal's code
trading_brain_reload_seconds                histogram  outcome: installed | refused (the reloads
                                                       the brain timed: not those from disk)
trading_brain_decisions_total               counter    action (the brain's own, bounded, actions)
trading_brain_decision_seconds              histogram  (buckets from 50 µs)
trading_brain_active_model_info             gauge = 1  slot, version, sha256, run_id
trading_paper_position                      gauge      slot, version: -1 short, 0 flat, +1 long
trading_paper_net_return                    gauge      slot, version: sum of per-bar net returns
trading_paper_bars_total                    counter    slot, version: bars with an outcome
trading_paper_trades_total                  counter    slot, version, result: win | loss
trading_brain_lifecycle_stage_changes_total counter    slot, stage: the stage entered (shadow,
                                                       canary, champion)
trading_brain_lifecycle_verdicts_total      counter    slot, verdict (pass, fail, inconclusive),
                                                       rule: a value of :data:`VERDICT_RULES`
trading_brain_lifecycle_stage_info          gauge = 1  slot, stage: the stage now
trading_brain_lifecycle_paired              gauge      slot, figure: the judge's live paired
                                                       figures (candidate against incumbent)
trading_journal_rows_written_total          counter
trading_journal_rows_dropped_total          counter    (a full or locked journal, over backlog)
trading_journal_write_errors_total          counter
trading_journal_rows_pending                gauge
==========================================  =========  =========================================

Version labels are bounded in practice: one per model that ever served since the host started.

Label values outside a documented set are counted as ``other``: a new caller's typo then shows
up on a dashboard instead of failing a sync or growing the number of series without bound.
A gauge that has no value yet is absent from the body rather than a 0 that reads as a fact
(no requests left; the last success in 1970).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime
from typing import Final, Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.services.outcome import ArtifactMetric, CycleOutcome

# written, dropped, write errors, pending: what the decision journal has done so far.
JournalCounter = Callable[[], tuple[int, int, int, int]]

ReloadOutcome = Literal["installed", "refused"]

SWAP_SOURCES: Final = ("github", "webhook", "inbox", "cli", "rollback", "disk", "lifecycle")
"""Where a model the brain swapped in (or refused) came from; ``disk``: another process put it
in place and the watch picked it up; ``lifecycle``: the canary judge (or a reject) rolled back."""

ARTIFACT_REASONS: Final[dict[str, str]] = {
    "ok": "passed every check (with outcome installed)",
    "already_installed": "this artifact is the one serving now",
    "expired": "GitHub lists the artifact as expired, or its download answered 410",
    "download_failed": "the download did not complete",
    "digest_mismatch": "the zip's SHA-256 differs from GitHub's digest",
    "too_large": "over a size, member-count or compression-ratio limit",
    "unsafe_archive": "a member's path escapes the models directory, or the zip is unreadable",
    "no_models": "no .onnx member to install",
    "checksum_mismatch": "a file's SHA-256 differs from its metadata.json",
    "load_failed": "ONNX Runtime could not build a session from the model",
    "incompatible": "the model's inputs or outputs do not fit its slot",
    "invalid_output": "the warm-up output was not finite or not well-shaped",
    "install_failed": "backing up or installing the files failed",
    "quarantined": "the model or its artifact is quarantined (python -m app quarantine)",
    "other": "anything else; the log line says what",
}
"""The reason codes ``record_artifact`` accepts, with what each means."""

VERDICT_RULES: Final = (
    "loss_limit",
    "max_drawdown",
    "non_finite",
    "stuck",
    "return",
    "win_rate",
    "downside",
    "window",
    "min_trades",
    "by_hand",
    "not_resumed",
    "superseded",
    "abandoned",
)
"""What decided a verdict: a guardrail, a soft rule, the window's end, or a person."""
STAGES: Final = ("shadow", "canary", "champion")
VERDICTS: Final = ("pass", "fail", "inconclusive")

# Prometheus' text format 0.0.4, which generate_latest writes (newer clients' CONTENT_TYPE_LATEST
# names a later version that this body does not claim to be).
TEXT_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_OTHER: Final = "other"
_BREAKER_LEVELS: Final[dict[str, int]] = {"closed": 0, "half_open": 1, "open": 2}
_DOWNLOAD_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_RELOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Decisions take tens to hundreds of microseconds; the default buckets start at 5 ms.
_DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


def _bounded(value: str, allowed: Collection[str]) -> str:
    return value if value in allowed else _OTHER


def _unix_seconds(moment: datetime) -> float:
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment).timestamp()


class ProductionMonitoringService:
    """Counts what the sync service and the brain do, for Prometheus to scrape."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry()
        registry = self._registry
        self._sync_cycles = Counter(
            "model_sync_cycles",
            "Synchronization cycles by outcome.",
            ["outcome"],
            registry=registry,
        )
        self._artifacts = Counter(
            "model_sync_artifacts",
            "Artifacts looked at, by outcome and reason code.",
            ["outcome", "reason"],
            registry=registry,
        )
        self._download_bytes = Counter(
            "model_sync_download_bytes",
            "Bytes of artifact zips downloaded.",
            registry=registry,
        )
        self._download_seconds = Histogram(
            "model_sync_download_seconds",
            "Time to download one artifact zip.",
            buckets=_DOWNLOAD_BUCKETS,
            registry=registry,
        )
        # Registered when first set (see set_rate_limit_remaining, mark_sync_success).
        self._rate_limit_remaining: Gauge | None = None
        self._last_success: Gauge | None = None
        self._breaker_state = Gauge(
            "model_sync_circuit_breaker_state",
            "Circuit breaker state per operation: 0 closed, 1 half_open, 2 open.",
            ["operation"],
            registry=registry,
        )
        self._swaps = Counter(
            "trading_brain_swaps",
            "Models swapped in or refused by the brain, by outcome, source and reason code.",
            ["outcome", "source", "reason"],
            registry=registry,
        )
        self._reload_seconds = Histogram(
            "trading_brain_reload_seconds",
            "Time to validate and install (or refuse) a model, by outcome.",
            ["outcome"],
            buckets=_RELOAD_BUCKETS,
            registry=registry,
        )
        self._decisions = Counter(
            "trading_brain_decisions",
            "Trading decisions made, by action.",
            ["action"],
            registry=registry,
        )
        self._decision_seconds = Histogram(
            "trading_brain_decision_seconds",
            "Time to make one trading decision.",
            buckets=_DECISION_BUCKETS,
            registry=registry,
        )
        # An info metric is a gauge of 1 whose labels are the value: setting a slot's info
        # replaces that slot's previous label set instead of adding a series.
        self._active_model = Info(
            "trading_brain_active_model",
            "The model serving each slot.",
            ["slot"],
            registry=registry,
        )
        self._position = Gauge(
            "trading_paper_position",
            "Paper position held after the latest decision: -1 short, 0 flat, +1 long.",
            ["slot", "version"],
            registry=registry,
        )
        self._net_return = Gauge(
            "trading_paper_net_return",
            "Sum of per-bar net returns of the paper positions each version decided.",
            ["slot", "version"],
            registry=registry,
        )
        self._paper_bars = Counter(
            "trading_paper_bars",
            "Bars whose paper outcome is known, by the version that decided.",
            ["slot", "version"],
            registry=registry,
        )
        self._trades = Counter(
            "trading_paper_trades",
            "Closed paper trades, by the version that opened them and their result.",
            ["slot", "version", "result"],
            registry=registry,
        )
        self._stage_changes = Counter(
            "trading_brain_lifecycle_stage_changes",
            "Changes of the decision slot's stage, by the stage entered.",
            ["slot", "stage"],
            registry=registry,
        )
        self._verdicts = Counter(
            "trading_brain_lifecycle_verdicts",
            "Verdicts of the canary judge (or a person), by verdict and rule.",
            ["slot", "verdict", "rule"],
            registry=registry,
        )
        self._stage = Info(
            "trading_brain_lifecycle_stage",
            "The decision slot's stage now.",
            ["slot"],
            registry=registry,
        )
        self._position_holder: dict[str, str] = {}  # slot -> the version whose position shows
        self._paired = Gauge(
            "trading_brain_lifecycle_paired",
            "The judge's live paired figures: the candidate against the incumbent, same bars.",
            ["slot", "figure"],
            registry=registry,
        )
        # Series that exist from the start read 0 rather than missing, so rate() works at once.
        for sync_outcome in tuple(CycleOutcome):
            self._sync_cycles.labels(outcome=sync_outcome)
        for reload_outcome in get_args(ReloadOutcome):
            self._reload_seconds.labels(outcome=reload_outcome)

    @property
    def registry(self) -> CollectorRegistry:
        """This service's registry, for a host that exposes it some other way."""
        return self._registry

    def record_sync(self, outcome: CycleOutcome) -> None:
        """Count one synchronization cycle."""
        self._sync_cycles.labels(outcome=_bounded(outcome, tuple(CycleOutcome))).inc()

    def record_artifact(self, outcome: ArtifactMetric, reason: str) -> None:
        """Count one artifact decision; ``reason`` is a code from :data:`ARTIFACT_REASONS`."""
        self._artifacts.labels(
            outcome=_bounded(outcome, get_args(ArtifactMetric)),
            reason=_bounded(reason, ARTIFACT_REASONS),
        ).inc()

    def record_download(self, bytes_: int, seconds: float) -> None:
        """Count one completed artifact download."""
        self._download_bytes.inc(bytes_)
        self._download_seconds.observe(seconds)

    def record_reload(self, outcome: ReloadOutcome, seconds: float) -> None:
        """Time one model reload, installed or refused."""
        self._reload_seconds.labels(outcome=_bounded(outcome, get_args(ReloadOutcome))).observe(
            seconds
        )

    def record_swap(self, outcome: ReloadOutcome, source: str, reason: str = "ok") -> None:
        """Count one model swapped in or refused; ``source`` is one of :data:`SWAP_SOURCES`,
        ``reason`` a code of :data:`ARTIFACT_REASONS` (see :func:`app.errors.reason_code_of`)."""
        self._swaps.labels(
            outcome=_bounded(outcome, get_args(ReloadOutcome)),
            source=_bounded(source, SWAP_SOURCES),
            reason=_bounded(reason, ARTIFACT_REASONS),
        ).inc()

    def record_decision(self, action: str, seconds: float) -> None:
        """Count one trading decision and its latency."""
        self._decisions.labels(action=action).inc()
        self._decision_seconds.observe(seconds)

    def record_paper_bar(self, slot: str, version: str, position: int, net_return: float) -> None:
        """One bar's paper outcome for the decision `version` made on the bar before; the
        position is shown for the version holding it only (one that stopped trading holds
        none)."""
        holder = self._position_holder.get(slot)
        if holder is not None and holder != version:
            with contextlib.suppress(KeyError):
                self._position.remove(slot, holder)
        self._position_holder[slot] = version
        self._position.labels(slot=slot, version=version).set(position)
        self._net_return.labels(slot=slot, version=version).inc(net_return)
        self._paper_bars.labels(slot=slot, version=version).inc()

    def record_paper_trade(self, slot: str, version: str, net_return: float) -> None:
        """A closed paper trade, attributed to the version that opened it."""
        result = "win" if net_return > 0 else "loss"
        self._trades.labels(slot=slot, version=version, result=result).inc()

    def record_stage(self, slot: str, stage: str) -> None:
        """The decision slot entered `stage` (shadow, canary, champion)."""
        stage = _bounded(stage, STAGES)
        self._stage_changes.labels(slot=slot, stage=stage).inc()
        self._stage.labels(slot=slot).info({"stage": stage})
        if stage == "champion":
            self._paired.clear()  # no candidate: no live difference to show

    def record_verdict(self, slot: str, verdict: str, rule: str) -> None:
        """A verdict given on the slot's candidate."""
        self._verdicts.labels(
            slot=slot, verdict=_bounded(verdict, VERDICTS), rule=_bounded(rule, VERDICT_RULES)
        ).inc()

    def set_paired_figures(self, slot: str, figures: Mapping[str, float | int | None]) -> None:
        """The judge's paired figures so far (a fixed set of names; None ones are left out)."""
        for figure, value in figures.items():
            if value is not None:
                self._paired.labels(slot=slot, figure=figure).set(value)

    def watch_journal(self, counts: JournalCounter) -> None:
        """Expose the decision journal's counters, read at scrape time (never on decide())."""
        self._registry.register(_JournalCollector(counts))

    def set_active_model(
        self, slot: str, version: str, sha256: str, run_id: int | str | None = None
    ) -> None:
        """Show which model serves ``slot``, replacing the one it served before."""
        info = {
            "version": version,
            "sha256": sha256,
            "run_id": "" if run_id is None else str(run_id),
        }
        self._active_model.labels(slot=slot).info(info)

    def set_rate_limit_remaining(self, remaining: int) -> None:
        """Record GitHub's ``x-ratelimit-remaining``."""
        if self._rate_limit_remaining is None:
            self._rate_limit_remaining = Gauge(
                "model_sync_github_rate_limit_remaining",
                "Requests left in GitHub's current rate-limit window.",
                registry=self._registry,
            )
        self._rate_limit_remaining.set(remaining)

    def set_breaker_state(self, operation: str, state: str) -> None:
        """Record ``operation``'s circuit state: closed, half_open or open (a ``CircuitState``)."""
        if state not in _BREAKER_LEVELS:
            raise ValueError(
                f"unknown circuit breaker state {state!r}; use one of {_BREAKER_LEVELS}"
            )
        self._breaker_state.labels(operation=operation).set(_BREAKER_LEVELS[state])

    def mark_sync_success(self, at: datetime) -> None:
        """Record when a synchronization cycle last completed; a naive ``at`` is taken as UTC."""
        if self._last_success is None:
            self._last_success = Gauge(
                "model_sync_last_success_timestamp_seconds",
                "Unix time of the last synchronization cycle that completed.",
                registry=self._registry,
            )
        self._last_success.set(_unix_seconds(at))

    def render(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and the content type to serve them with."""
        return generate_latest(self._registry), TEXT_CONTENT_TYPE


class _JournalCollector(Collector):
    def __init__(self, counts: JournalCounter) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        written, dropped, errors, pending = self._counts()
        yield CounterMetricFamily(
            "trading_journal_rows_written", "Journal rows committed.", value=written
        )
        yield CounterMetricFamily(
            "trading_journal_rows_dropped",
            "Journal rows dropped (a full or locked journal, or a backlog over its limit).",
            value=dropped,
        )
        yield CounterMetricFamily(
            "trading_journal_write_errors", "Failed journal batch writes.", value=errors
        )
        yield GaugeMetricFamily(
            "trading_journal_rows_pending", "Journal rows waiting to be written.", value=pending
        )
