"""Replay's comparison, model against model, on the embedded model and real ONNX sessions."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from app.trading.replay import ReplayInput, positions_from, replay, table
from app.trading.synthetic import synthetic_bars
from tests.conftest import EMBEDDED_MODEL


@pytest.fixture(scope="module")
def replayed() -> ReplayInput:
    return ReplayInput.from_bars(synthetic_bars(5000, seed=17))


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(str(EMBEDDED_MODEL), providers=["CPUExecutionProvider"])


def test_a_model_with_every_action_inverted_has_the_negated_gross_return(
    replayed: ReplayInput, session: ort.InferenceSession
) -> None:
    def straight(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["probs"], {"features": matrix})[0])

    def inverted(matrix: np.ndarray) -> np.ndarray:
        return straight(matrix)[:, ::-1]  # sell and buy swapped, hold kept

    report = replay(
        replayed, ("straight", straight), ("inverted", inverted), threshold=0.65, cost_bps=1
    )

    assert report.candidate is not None
    mine, theirs = report.incumbent.performance, report.candidate.performance
    assert theirs.gross_return == pytest.approx(-mine.gross_return, abs=1e-12)
    assert theirs.net_return < -mine.gross_return + 1e-12  # costs only lower it
    assert theirs.actions == {
        "sell": mine.actions["buy"], "hold": mine.actions["hold"], "buy": mine.actions["sell"]
    }  # fmt: skip
    assert report.agreement == pytest.approx(mine.actions["hold"] / mine.decisions)


def test_the_batched_rule_is_the_brains_rule_at_the_threshold() -> None:
    threshold = 0.65
    edge = float(np.float32(threshold))  # just under 0.65 in float64
    probs = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.1, 0.2, 0.7],
            [0.2, 0.6, 0.2],
            [edge, 1 - edge, 0.0],  # below the threshold as decide() sees it
            [0.5, 0.0, 0.5],  # a tie under the threshold: hold
        ],
        dtype=np.float32,
    )
    assert positions_from(probs, threshold).tolist() == [-1, 1, 0, 0, 0]
    ties = np.array([[0.7, 0.0, 0.7]], dtype=np.float32)  # the first best, as decide() takes it
    assert positions_from(ties, 0.6).tolist() == [-1]


def test_the_table_shows_both_models_side_by_side(
    replayed: ReplayInput, session: ort.InferenceSession
) -> None:
    def score(matrix: np.ndarray) -> object:
        return session.run(["probs"], {"features": matrix})[0]

    text = table(replay(replayed, ("a", score), ("b", score), threshold=0.65, cost_bps=1))

    lines = text.splitlines()
    assert lines[1].split() == ["version", "a", "b"]
    assert (
        lines[-1] == "5,000 bars, first decision at bar 61; the models agree on 100.0% of decisions"
    )
