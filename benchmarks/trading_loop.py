"""The trading loop's cost: does journaling and computing features slow a decision?

    python benchmarks/trading_loop.py [--bars 2000] [--rounds 5] [--bars-per-second 1000]

Measured in one run, on one started brain serving the embedded model:

- ``decide()`` latency per bar inside the full loop (features updated, the paper book marked,
  the decision and its outcome journaled by the writer thread), against ``decide()`` alone on
  the same feature rows, both paced at ``--bars-per-second`` as the host paces its feed (1000:
  a replay at 1000 times real time for minute bars; the host's default is 1). Both are timed
  by the same instrument (the brain's decision observer, around the model run), in interleaved
  blocks so drift hits both sides alike. Target: p99 ratio <= 1.1.
- the same with no pacing at all (bars as fast as the loop can take them): the writer thread
  then competes with every decision for the GIL; shown for contrast.
- the whole per-bar step (features + decide + book + journal enqueue), for contrast.
- ``decide()`` p99 of the trading model while a canary runs (the displaced model deciding in
  shadow on the same row after every decision, its paper book and the judge updated), against
  the same loop with no lifecycle, in interleaved blocks at ``--bars-per-second``. Target:
  p99 ratio <= 1.1.
- the CPU time to compute the features of 100,000 bars (target < 1 s).
- the journal's size per 100,000 decisions (with their outcomes) and its write throughput.

Files live in a temporary folder, removed at the end; exit 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import Figure, print_figures  # noqa: E402 - beside this script

from app.brain.brain import TradingBrain  # noqa: E402
from app.brain.decision import Decision  # noqa: E402
from app.brain.models import Candidate  # noqa: E402
from app.install.installer import ModelInstaller  # noqa: E402
from app.lifecycle.controller import ModelLifecycle  # noqa: E402
from app.lifecycle.record import Stage  # noqa: E402
from app.settings import load_settings  # noqa: E402
from app.trading.bars import Bar  # noqa: E402
from app.trading.features import FeatureEngine, feature_matrix  # noqa: E402
from app.trading.journal import DecisionJournal  # noqa: E402
from app.trading.loop import TradingLoop  # noqa: E402
from app.trading.market import BarFeed  # noqa: E402
from app.trading.synthetic import synthetic_bars  # noqa: E402

EMBEDDED_MODEL = ROOT / "models" / "unified_brain.onnx"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def started_brain(folder: Path) -> TradingBrain:
    models = folder / "models"
    models.mkdir()
    shutil.copyfile(EMBEDDED_MODEL, models / "unified_brain.onnx")
    settings = load_settings(None, models={"dir": str(models)})
    models = ModelInstaller(settings, TradingBrain(settings.brain))
    await models.start()
    return models.brain


def pace(interval: float, next_at: float) -> float:
    """Sleep until `next_at` (no pacing when `interval` is 0); the next deadline."""
    if not interval:
        return next_at
    remaining = next_at - time.perf_counter()
    if remaining > 0:
        time.sleep(remaining)
    return next_at + interval


def decide_alone(
    brain: TradingBrain, rows: list[np.ndarray], sink: list[float], interval: float = 0.0
) -> None:
    brain.observe_decisions(lambda _action, seconds: sink.append(seconds))
    decide = brain.decide
    next_at = time.perf_counter()
    for row in rows:
        decide(row)
        next_at = pace(interval, next_at + interval)
    brain.observe_decisions(None)


def in_the_loop(
    loop: TradingLoop,
    brain: TradingBrain,
    bars: list[Bar],
    sink: list[float],
    steps: list[float],
    interval: float = 0.0,
) -> None:
    brain.observe_decisions(lambda _action, seconds: sink.append(seconds))
    step = loop.step
    clock = time.perf_counter
    next_at = clock()
    for bar in bars:
        started = clock()
        step(bar)
        steps.append(clock() - started)
        next_at = pace(interval, next_at + interval)
    brain.observe_decisions(None)


async def stepped(
    loop: TradingLoop,
    brain: TradingBrain,
    bars: list[Bar],
    sink: list[float],
    interval: float,
) -> None:
    """The host's step (``step_async``, which the lifecycle watches), paced."""
    brain.observe_decisions(lambda _action, seconds: sink.append(seconds))
    next_at = time.perf_counter()
    for bar in bars:
        await loop.step_async(bar)
        next_at = pace(interval, next_at + interval)
    brain.observe_decisions(None)


async def shadow_figures(
    folder: Path, bars: list[Bar], rounds: int, interval: float
) -> tuple[list[float], list[float]]:
    """decide() latencies with a canary's shadow running beside it, and without."""
    models_dir = folder / "shadow-models"
    models_dir.mkdir()
    shutil.copyfile(EMBEDDED_MODEL, models_dir / "unified_brain.onnx")
    settings = load_settings(
        None,
        models={"dir": str(models_dir)},
        lifecycle={"canary_minutes": 10080, "loss_limit": 1, "max_drawdown": 1, "stuck_minutes": 0},
    )
    models = ModelInstaller(settings, TradingBrain(settings.brain))
    await models.start()
    brain = models.brain
    lifecycle = ModelLifecycle(settings, models)
    await lifecycle.start()
    # The same weights under another version (other bytes): a candidate that decides as the
    # champion does, so the canary runs for the whole measurement.
    candidate = folder / "candidate.onnx"
    model = onnx.load(EMBEDDED_MODEL)
    onnx.helper.set_model_props(model, {"version": "candidate-2"})
    onnx.save(model, candidate)
    result = await models.swap_in([Candidate("unified_brain", candidate)])
    if not result.installed:
        raise SystemExit(f"the candidate was not installed: {result.reason}")
    watched = TradingLoop(brain, BarFeed("bench", iter(())), cost_bps=1.0, watcher=lifecycle)
    plain = TradingLoop(brain, BarFeed("bench", iter(())), cost_bps=1.0)
    warm, rest = bars[:200], bars[200:]
    await stepped(watched, brain, warm, [], 0.0)
    await stepped(plain, brain, warm, [], 0.0)
    if lifecycle.stage is not Stage.CANARY:
        raise SystemExit(f"the canary did not start (stage {lifecycle.stage})")
    with_shadow: list[float] = []
    without: list[float] = []
    size = len(rest) // rounds
    for index in range(rounds):
        block = rest[index * size : (index + 1) * size]
        await stepped(watched, brain, block, with_shadow, interval)
        await stepped(plain, brain, block, without, interval)
    if lifecycle.stage is not Stage.CANARY:
        raise SystemExit(f"the canary ended during the measurement (stage {lifecycle.stage})")
    return with_shadow, without


def ratios(looped: list[float], alone: list[float]) -> tuple[float, float]:
    median = statistics.median(looped) / statistics.median(alone)
    return median, quantile(looped, 0.99) / quantile(alone, 0.99)


def latency(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e6:.1f} / {quantile(values, 0.99) * 1e6:.1f} µs"


def journal_figures(folder: Path, count: int) -> tuple[float, float]:
    """(bytes per 100,000 decisions, rows written per second) for `count` decisions + outcomes."""
    path = folder / "journal-size.sqlite3"
    journal = DecisionJournal(path, max_rows=10 * count)
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((count, 16)).astype(np.float32)
    versions = MappingProxyType({"unified_brain": "embedded-1"})
    decisions = [
        Decision("buy", 0.7, (0.1, 0.2, 0.7), versions),
        Decision("hold", 0.5, (0.2, 0.5, 0.3), versions),
    ]
    started = time.perf_counter()
    for index in range(count):
        at = 1.7e9 + 60.0 * index
        journal.record_decision(at, 100.0 + index * 1e-4, rows[index], decisions[index % 2])
        journal.record_outcome(at, "embedded-1", net_return=1e-4, gross_return=1.1e-4, position=1)
    journal.flush(timeout=600)
    seconds = time.perf_counter() - started
    journal.close()
    size = sum(p.stat().st_size for p in folder.glob("journal-size.sqlite3*"))
    return size * 100_000 / count, 2 * count / seconds


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=2000, help="bars per round and side")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bars-per-second", type=float, default=1000)
    args = parser.parse_args()
    interval = 1.0 / args.bars_per_second
    with tempfile.TemporaryDirectory(prefix="trading-loop-") as tmp:
        folder = Path(tmp)
        brain = await started_brain(folder)
        flat_out_bars = 20_000
        series = synthetic_bars(args.bars * args.rounds + flat_out_bars + 100, seed=12)
        bars = list(series.bars())
        matrix, first = feature_matrix(series)
        rows = [matrix[i : i + 1] for i in range(len(matrix))]
        journal = DecisionJournal(folder / "models" / ".sync" / "journal.sqlite3")
        loop = TradingLoop(
            brain, BarFeed("bench", iter(())), cost_bps=1.0, journal=journal, log_every=10**9
        )
        for bar in bars[:first]:  # warm the features up before timing
            loop.step(bar)
        alone: list[float] = []
        looped: list[float] = []
        steps: list[float] = []
        decide_alone(brain, rows[:2000], [])  # warm-up of the session and the caches
        gc.collect()
        gc.freeze()  # as `python -m app` does once started
        for index in range(args.rounds):
            block = slice(first + index * args.bars, first + (index + 1) * args.bars)
            decide_alone(brain, rows[block.start - first : block.stop - first], alone, interval)
            in_the_loop(loop, brain, bars[block], looped, steps, interval)
        fast_alone: list[float] = []
        fast_looped: list[float] = []
        start = first + args.rounds * args.bars
        for index in range(4):
            block = slice(start + index * 5000, start + (index + 1) * 5000)
            decide_alone(brain, rows[block.start - first : block.stop - first], fast_alone)
            in_the_loop(loop, brain, bars[block], fast_looped, [])
        journal.close()
        journaled = journal.counts

        feature_bars = list(synthetic_bars(100_000, seed=3).bars())
        cpu = time.process_time()
        engine = FeatureEngine()
        update = engine.update
        for bar in feature_bars:
            update(bar)
        feature_cpu = time.process_time() - cpu

        size, throughput = journal_figures(folder, 100_000)
        count = args.bars * args.rounds + 300  # 10-second bars: all within a week's canary
        shadow_bars = list(synthetic_bars(count, seed=5, bar_seconds=10).bars())
        with_shadow, without_shadow = await shadow_figures(
            folder, shadow_bars, args.rounds, interval
        )

    median_ratio, p99_ratio = ratios(looped, alone)
    fast_median, fast_p99 = ratios(fast_looped, fast_alone)
    shadow_median, shadow_p99 = ratios(with_shadow, without_shadow)
    figures = [
        Figure(
            f"decide() p99 in the loop / alone, {args.bars_per_second:g} bars/s",
            f"{p99_ratio:.2f}",
            "<= 1.1",
            p99_ratio <= 1.1,
        ),
        Figure("decide() median in the loop / alone", f"{median_ratio:.2f}"),
        Figure("decide() in the loop, median / p99", latency(looped)),
        Figure("decide() alone, median / p99", latency(alone)),
        Figure(
            "no pacing: decide() in the loop / alone, median / p99",
            f"{fast_median:.2f} / {fast_p99:.2f} ({latency(fast_looped)} / {latency(fast_alone)})",
        ),
        Figure(
            "whole bar (features + decide + book + journal), median / p99",
            latency(steps),
        ),
        Figure(
            "features for 100,000 bars, CPU",
            f"{feature_cpu:.2f} s ({feature_cpu * 1e6 / 100_000:.1f} µs a bar)",
            "< 1 s",
            feature_cpu < 1.0,
        ),
        Figure(
            "journal size per 100,000 decisions (+ their outcomes)",
            f"{size / 2**20:.1f} MiB ({size / 100_000:.0f} bytes a decision)",
        ),
        Figure("journal write throughput", f"{throughput:,.0f} rows/s"),
        Figure(
            "decide() p99 with a canary's shadow running / without",
            f"{shadow_p99:.2f}",
            "<= 1.1",
            shadow_p99 <= 1.1,
        ),
        Figure(
            "decide() with the shadow / without, median",
            f"{shadow_median:.2f} ({latency(with_shadow)} / {latency(without_shadow)})",
        ),
        Figure(
            "journal rows in the timed loop: written / dropped / errors",
            f"{journaled.written:,} / {journaled.dropped} / {journaled.write_errors}",
            "0 dropped",
            journaled.dropped == 0 and journaled.write_errors == 0,
        ),
    ]
    print(
        f"{len(alone):,} decisions each way at {args.bars_per_second:g} bars/s, "
        f"{args.rounds} interleaved rounds; {len(fast_alone):,} each way unpaced"
    )
    print_figures(figures)
    return 0 if all(f.passed is not False for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
