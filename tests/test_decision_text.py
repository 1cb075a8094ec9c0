"""How a decision reads in the log: a hold under the threshold says which action it was."""

from __future__ import annotations

import pytest

from app.brain.decision import Decision, choose_action

THRESHOLD = 0.65


def decide(probabilities: tuple[float, float, float]) -> Decision:
    action, confidence = choose_action(probabilities, THRESHOLD)
    return Decision(action, confidence, probabilities, {"unified_brain": "v1"})


@pytest.mark.parametrize(
    ("probabilities", "text"),
    [
        ((0.1, 0.38, 0.52), "hold (buy 0.52 < 0.65)"),
        ((0.5, 0.3, 0.2), "hold (sell 0.50 < 0.65)"),
        ((0.2, 0.4, 0.4), "hold (hold 0.40 < 0.65)"),
        ((0.05, 0.14, 0.81), "buy (confidence 0.81)"),
        ((0.1, 0.7, 0.2), "hold (confidence 0.70)"),
    ],
)
def test_a_decision_says_what_it_was(probabilities: tuple[float, float, float], text: str) -> None:
    assert decide(probabilities).describe(THRESHOLD) == text


def test_the_best_action_is_the_most_probable_before_the_threshold() -> None:
    decision = decide((0.1, 0.38, 0.52))

    assert (decision.action, decision.best_action) == ("hold", "buy")
