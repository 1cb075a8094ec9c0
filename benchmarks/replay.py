"""Replay's cost: two models over 100,000 bars against two raw batched ``session.run`` calls.

    python benchmarks/replay.py [--bars 100000] [--repeats 7]

Measured in one run, on the same bars and models (the embedded model and a candidate built
with `onnx`):

- replay of both models over a precomputed feature matrix (batched inference, actions,
  positions, every figure, agreement), against two raw ``session.run`` calls over the same
  matrix: best of ``--repeats``. Target <= 2.0.
- the features of those bars, CPU time (target < 1 s), and the whole `replay --bars` work in
  process for a year of hourly bars (CSV read, features, both models, figures), for contrast.

Exit 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import Figure, print_figures  # noqa: E402 - beside this script

from app.trading.csvbars import load_csv_bars  # noqa: E402
from app.trading.features import feature_matrix  # noqa: E402
from app.trading.replay import ReplayInput, replay  # noqa: E402
from app.trading.synthetic import synthetic_bars  # noqa: E402
from tests.onnx_models import decision_model, save  # noqa: E402

EMBEDDED_MODEL = ROOT / "models" / "unified_brain.onnx"


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def best(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        folder = Path(tmp)
        candidate_path = save(decision_model(seed=4, version="candidate"), folder / "c.onnx")
        shutil.copyfile(EMBEDDED_MODEL, folder / "incumbent.onnx")
        incumbent, candidate = session(folder / "incumbent.onnx"), session(candidate_path)

        series = synthetic_bars(args.bars, seed=77)
        cpu = time.process_time()
        matrix, first = feature_matrix(series)
        feature_cpu = time.process_time() - cpu
        replayed = ReplayInput(len(series), series.time[first:], series.close[first:], matrix)

        def scorer(s: ort.InferenceSession) -> Callable[[np.ndarray], object]:
            return lambda m: s.run(["probs"], {"features": m})[0]

        models = (("incumbent", scorer(incumbent)), ("candidate", scorer(candidate)))

        def raw() -> None:
            incumbent.run(["probs"], {"features": matrix})
            candidate.run(["probs"], {"features": matrix})

        def both() -> None:
            replay(replayed, models[0], models[1], threshold=0.65, cost_bps=1.0)

        raw(), both()  # warm-up
        raw_seconds = best(args.repeats, raw)
        replay_seconds = best(args.repeats, both)

        year = synthetic_bars(8760, seed=5, bar_seconds=3600)
        csv = folder / "year.csv"
        pd.DataFrame(
            {"open": year.open, "high": year.high, "low": year.low, "close": year.close,
             "volume": year.volume},
            index=pd.to_datetime(year.time, unit="s", utc=True),
        ).to_csv(csv)  # fmt: skip

        def year_replay() -> None:
            bars, _ = load_csv_bars(csv)
            replay(ReplayInput.from_bars(bars), *models, threshold=0.65, cost_bps=1.0)

        year_seconds = best(3, year_replay)

    ratio = replay_seconds / raw_seconds
    figures = [
        Figure(
            f"replay of {args.bars:,} bars, two models / two raw session.run",
            f"{ratio:.2f} ({replay_seconds * 1e3:.1f} / {raw_seconds * 1e3:.1f} ms)",
            "<= 2.0",
            ratio <= 2.0,
        ),
        Figure(
            f"features for {args.bars:,} bars, CPU",
            f"{feature_cpu:.2f} s",
            "< 1 s",
            feature_cpu < 1.0 * args.bars / 100_000,
        ),
        Figure(
            "a year of hourly bars from CSV: read + features + two models + figures",
            f"{year_seconds * 1e3:.0f} ms",
            "well under 1 s",
            year_seconds < 0.5,
        ),
    ]
    print_figures(figures)
    return 0 if all(f.passed is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
