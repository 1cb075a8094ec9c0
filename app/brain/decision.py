"""What the brain decides from a model's probabilities: pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Action = Literal["sell", "hold", "buy"]
ACTIONS: tuple[Action, Action, Action] = ("sell", "hold", "buy")


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision and the exact model versions that made it (one per slot)."""

    action: Action
    confidence: float
    probabilities: tuple[float, float, float]
    versions: Mapping[str, str]


def choose_action(probabilities: tuple[float, float, float], threshold: float) -> Action:
    """The most probable action, or hold when the model is not confident enough."""
    best = max(range(3), key=probabilities.__getitem__)
    if probabilities[best] < threshold:
        return "hold"
    return ACTIONS[best]
