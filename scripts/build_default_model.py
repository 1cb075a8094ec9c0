"""Build the embedded default model, models/unified_brain.onnx, deterministically.

    python scripts/build_default_model.py [--check]

The model is fitted with numpy on the synthetic market (``app.trading.synthetic``, seed
``TRAIN_SEED``): a ridge regression of the volatility-scaled return over the next
``HORIZON`` bars on the standardised features gives a score ``s``; the model's logits are
``(-a*s, h, a*s)`` for (sell, hold, buy), with the sharpness ``a`` and the hold logit ``h``
chosen on the training bars to maximise the net return under the brain's confidence rule. The
graph: ``softmax(((features - mean) * inv_std) @ W + b)``, written with `onnx`.

Same code, same bytes: coefficients are rounded before they are written, so the file does not
depend on the last bits of floating-point sums. `--check` fails when the committed file differs
from a fresh build (the test suite runs it), so the file in the repository is always the one
this script makes.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.settings import DEFAULT_FEATURES  # noqa: E402 - after the path is set
from app.trading.features import FEATURE_NAMES, feature_matrix  # noqa: E402
from app.trading.positions import performance  # noqa: E402
from app.trading.replay import positions_from  # noqa: E402
from app.trading.synthetic import synthetic_bars  # noqa: E402

TARGET = ROOT / "models" / "unified_brain.onnx"
VERSION = "embedded-1"
TRAIN_SEED, TRAIN_BARS = 101, 200_000
HORIZON = 15  # bars ahead the score predicts
RIDGE = 10.0
THRESHOLD, COST_BPS = 0.65, 1.0  # the brain's and the paper book's defaults
SHARPNESS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
HOLD_LOGITS = (0.0, 0.5, 1.0, 2.0, 3.0)
OPSET, IR_VERSION = 17, 8


def _rounded(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """Six significant digits: the same numbers on any CPU's floating-point sums."""
    return np.asarray([float(f"{v:.{digits}g}") for v in values.ravel()]).reshape(values.shape)


def fit() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, inv_std, W, b) of the model, fitted on the synthetic market."""
    assert tuple(DEFAULT_FEATURES) == FEATURE_NAMES
    bars = synthetic_bars(TRAIN_BARS, seed=TRAIN_SEED)
    features, first = feature_matrix(bars)
    x = features.astype(np.float64)
    closes = bars.close[first:]
    mean = _rounded(x.mean(axis=0))
    std = x.std(axis=0)
    inv_std = _rounded(1.0 / np.where(std > 0, std, 1.0))
    z = (x - mean) * inv_std
    ahead = closes[HORIZON:] / closes[:-HORIZON] - 1.0
    volatility = np.maximum(x[:-HORIZON, FEATURE_NAMES.index("volatility_1h")], 1e-6)
    target = ahead / (volatility * np.sqrt(HORIZON))
    design = np.column_stack([z[:-HORIZON], np.ones(len(target))])
    gram = design.T @ design + RIDGE * np.eye(design.shape[1])
    coefficients = _rounded(np.linalg.solve(gram, design.T @ target))
    weights, intercept = coefficients[:-1], coefficients[-1]
    score = z @ weights + intercept
    best: tuple[float, float, float] | None = None
    for sharpness in SHARPNESS:
        for hold in HOLD_LOGITS:
            logits = np.column_stack(
                [-sharpness * score, np.full(len(score), hold), sharpness * score]
            )
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            positions = positions_from(probs, THRESHOLD)
            net = performance(positions, closes, cost_bps=COST_BPS, bar_seconds=60).net_return
            if best is None or net > best[0]:
                best = (net, sharpness, hold)
    assert best is not None
    _, sharpness, hold = best
    w = np.column_stack([-sharpness * weights, np.zeros_like(weights), sharpness * weights])
    b = np.array([-sharpness * intercept, hold, sharpness * intercept])
    return mean, inv_std, w, b


def model() -> onnx.ModelProto:
    mean, inv_std, w, b = fit()
    initializers = [
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array(inv_std.astype(np.float32), "inv_std"),
        numpy_helper.from_array(w.astype(np.float32), "W"),
        numpy_helper.from_array(b.astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "inv_std"], ["standardised"]),
        helper.make_node("MatMul", ["standardised", "W"], ["scores"]),
        helper.make_node("Add", ["scores", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    n = len(FEATURE_NAMES)
    graph = helper.make_graph(
        nodes,
        "unified_brain",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        initializers,
    )
    built = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="scripts/build_default_model.py",
        ir_version=IR_VERSION,
    )
    built.doc_string = (
        f"Ridge score of the {HORIZON}-bar return on the synthetic market "
        f"(seed {TRAIN_SEED}, {TRAIN_BARS} bars); probabilities for sell, hold, buy."
    )
    helper.set_model_props(built, {"version": VERSION, "features": ",".join(FEATURE_NAMES)})
    onnx.checker.check_model(built)
    return built


@functools.cache
def build() -> bytes:
    return model().SerializeToString()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args()
    data = build()
    if args.check:
        if not TARGET.is_file() or TARGET.read_bytes() != data:
            print(f"{TARGET} differs from a fresh build: run {Path(__file__).name}")
            return 1
        print(f"{TARGET} is up to date")
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_bytes(data)
    print(f"wrote {TARGET} ({len(data)} bytes, version {VERSION})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
