"""What the lifecycle persists (``models/.sync/lifecycle.json``), so a restart resumes it.

The host writes it at every stage change (durably) and, while a model is being judged, at most
once a second of wall time (the judge's running sums), so ``status`` in another process shows
the live figures and a restarted host resumes a canary where it was. The decision journal keeps
the history of every stage change; this file holds only the present.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict, ValidationError

from app.fsutil import write_bytes_atomically
from app.lifecycle.judge import Outcome


class Stage(StrEnum):
    """Where a model is in its life (DESIGN.md: "The model lifecycle")."""

    SHADOW = "shadow"  # decides beside the champion, trading nothing
    CANARY = "canary"  # trades, while the model it displaced decides in shadow
    CHAMPION = "champion"  # trades, judged no more
    # A model rolled back by the judge or rejected by hand is in the quarantine
    # (app/install/quarantine.py): a list of models, not a stage of the slot.


class ModelRef(BaseModel):
    """A model by its bytes, and the version it served under."""

    model_config = ConfigDict(frozen=True)

    sha256: str
    version: str


PAST_CHAMPIONS = 10  # the record remembers this many models that were champion


class LifecycleRecord(BaseModel):
    """The decision slot's stage: the champion, and the candidate being judged (if any).

    `champions` are the models that were champion here, newest (the current one) first: a
    backup of one of them is a model that traded and passed; any other backup on the shelf
    (a superseded candidate, one rolled back as inconclusive) never did, and is judged if it
    is ever restored.
    """

    model_config = ConfigDict(frozen=True)

    slot: str
    stage: Stage
    champion: ModelRef
    candidate: ModelRef | None = None
    started_at: float | None = None  # market time the stage started (its first bar)
    ends_at: float | None = None  # market time the stage ends (canary or shadow window)
    verdict: Outcome = Outcome.PENDING  # the last one given
    rule: str | None = None
    reason: str | None = None
    figures: dict[str, float | int | None] = {}
    judge: dict[str, Any] | None = None  # the judge's running sums (Judge.to_json)
    bar_seconds: float | None = None  # the feed's bar spacing (the judge's rules are made for it)
    shadowed: bool = False  # the candidate's canary came after a shadow (each spends alpha / 2)
    champions: list[ModelRef] = []
    last_bar: float | None = None  # market time of the last bar judged
    updated_at: str = ""

    @property
    def judging(self) -> bool:
        return self.stage in (Stage.SHADOW, Stage.CANARY) and self.candidate is not None


def read_record(path: Path) -> LifecycleRecord | None:
    """The persisted record, or None (missing, or unreadable: said once, never fatal)."""
    try:
        return LifecycleRecord.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as error:
        logger.warning(f"⚠️ [LIFECYCLE] Ignoring unreadable {path.name}: {error}")
        return None


def write_record(path: Path, record: LifecycleRecord, *, durable: bool = True) -> str:
    """Replace the record, all or nothing (`durable`: fsynced, for stage changes); the time
    (ISO-8601 UTC) it says it was written at."""
    stamp = datetime.now(UTC).isoformat()
    stamped = record.model_copy(update={"updated_at": stamp})
    data = json.dumps(stamped.model_dump(mode="json"), indent=1)
    write_bytes_atomically(path, data, durable=durable)
    return stamp
