"""What the brain decides from a model's probabilities: pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

Action = Literal["sell", "hold", "buy"]
ACTIONS: tuple[Action, Action, Action] = ("sell", "hold", "buy")


class Decision(NamedTuple):
    """One decision and the exact model versions that made it (one per slot).

    A NamedTuple rather than a frozen dataclass: it is built on every decision, and costs half
    as much to build (measured 0.3 against 0.7 µs, for a model run of about 5 µs).
    """

    action: Action
    confidence: float
    probabilities: tuple[float, float, float]
    versions: Mapping[str, str]


def choose_action(probabilities: tuple[float, float, float], threshold: float) -> Action:
    """The most probable action, or hold when the model is not confident enough."""
    best = max(probabilities)
    if best < threshold:
        return "hold"
    return ACTIONS[probabilities.index(best)]
