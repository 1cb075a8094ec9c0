"""What the lifecycle says: the ``status`` object, and the mail of a stage change (pure)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from app.lifecycle.record import LifecycleRecord, Stage

Figures = Mapping[str, float | int | None]


class StageChange(NamedTuple):
    """One change of the decision slot's stage."""

    kind: str  # started | promoted | rolled_back | restored | superseded | not_resumed
    slot: str
    was: Stage
    now: Stage
    candidate: str | None  # the version judged (or just judged)
    champion: str  # the champion's version after the change
    verdict: str  # pending | pass | fail | inconclusive
    why: str


_HEADLINES = {
    "started": "Model {now} started - {slot} version {candidate}",
    "promoted": "Model promoted - {slot} version {candidate}",
    "rolled_back": "Model rolled back - {slot} version {candidate}",
    "restored": "Model restored - {slot} version {champion}",
    "superseded": "Model superseded - {slot} version {candidate}",
    "not_resumed": "Model {was} not resumed - {slot} version {candidate}",
}


def market_time(moment: float | None) -> str | None:
    """A market time (Unix seconds) as ISO-8601 UTC."""
    return None if moment is None else datetime.fromtimestamp(moment, UTC).isoformat()


def finite_only(figures: Figures) -> dict[str, float | int | None]:
    """`figures` without NaN or infinities (JSON has no word for them)."""
    return {
        key: value
        for key, value in figures.items()
        if value is None or not isinstance(value, float) or math.isfinite(value)
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3%}"


def stage_mail(change: StageChange, *, trading: str, figures: Figures) -> tuple[str, list[str]]:
    """The alert's headline and body: which model, why, and the paired figures."""
    headline = _HEADLINES[change.kind].format(**change._asdict())
    shown = ("bars", "candidate_trades", "candidate_net_return", "incumbent_net_return")
    lines = [
        f"Slot: {change.slot}",
        f"Candidate: {change.candidate or '-'}",
        f"Stage: {change.was} -> {change.now}",
        f"Verdict: {change.verdict}",
        f"Why: {change.why}",
        f"Now trading: {trading}",
        "",
        "Paired figures (the candidate against the incumbent, on the same bars):",
        f"  bars: {figures.get('bars', 0)}, candidate trades: {figures.get('candidate_trades', 0)}",
        (
            f"  net return: candidate {_percent(figures.get('candidate_net_return'))}, "
            f"incumbent {_percent(figures.get('incumbent_net_return'))}"
        ),
        *(f"  {key}: {value}" for key, value in sorted(figures.items()) if key not in shown),
    ]
    return headline, lines


def describe(record: LifecycleRecord | None, *, mode: str) -> dict[str, Any]:
    """The lifecycle object of ``status --json`` (``models.<slot>.lifecycle``)."""
    if record is None:  # nothing judged yet (or direct mode): the serving model is the champion
        return {
            "mode": mode,
            "stage": "champion",
            "candidate": None,
            "incumbent": None,
            "candidate_sha256": None,
            "incumbent_sha256": None,
            "started_at": None,
            "ends_at": None,
            "time_left_seconds": None,
            "verdict": "pending",
            "rule": None,
            "reason": None,
            "figures": {},
            "updated_at": None,
        }
    time_left = (
        max(0.0, record.ends_at - record.last_bar)
        if record.judging and record.ends_at is not None and record.last_bar is not None
        else None
    )
    return {
        "mode": mode,
        "stage": str(record.stage),
        "candidate": record.candidate.version if record.candidate else None,
        "incumbent": record.champion.version,
        "candidate_sha256": record.candidate.sha256 if record.candidate else None,
        "incumbent_sha256": record.champion.sha256,
        "started_at": market_time(record.started_at),
        "ends_at": market_time(record.ends_at),
        "time_left_seconds": time_left,
        "verdict": record.verdict,
        "rule": record.rule,
        "reason": record.reason,
        "figures": record.figures,
        "updated_at": record.updated_at or None,
    }
