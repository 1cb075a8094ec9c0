"""A model at the latency budget cannot stall the host: /healthz while decisions run.

    python benchmarks/slow_model_responsiveness.py [--decision-ms 50] [--budget-ms 100]

One process, as ``python -m app`` wires it (the Application container and its ops server on
loopback, ``tests/ops_stack.py``). A decision model is built that takes about ``--decision-ms``
per single-row run (a loop of 256x256 matrix products, calibrated on this machine first), under
``brain.max_decision_ms`` (``--budget-ms``), and installed. Then decisions run back to back, as a bot that never rests would, while a client
GETs ``/healthz`` every 10 ms. Measured twice in the same run: with ``decide_async`` (the
brain runs a model slower than ``brain.inline_decision_ms`` in a worker thread) and, as the
baseline, calling ``decide()`` on the event loop. Target: ``/healthz`` p99 under 50 ms with the
worker; the baseline shows what it would be otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make `tests` importable

from _report import Figure, print_figures  # noqa: E402 - beside this script

from app.brain.decision import Decision  # noqa: E402
from app.brain.models import Candidate  # noqa: E402
from tests.conftest import EMBEDDED_MODEL, make_settings  # noqa: E402
from tests.onnx_models import decision_model, save  # noqa: E402
from tests.ops_stack import OpsStack, running_ops  # noqa: E402

CALIBRATION_LOOPS = 200
PROBE_INTERVAL = 0.01
TARGET_MS = 50.0


async def healthz_latencies(stack: OpsStack, probes: int) -> list[float]:
    url = f"http://127.0.0.1:{stack.server.port}/healthz"
    latencies = []
    for _ in range(probes):
        started = time.perf_counter()
        async with stack.http.get(url) as response:
            await response.read()
            assert response.status == 200
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(PROBE_INTERVAL)
    return latencies


async def measure(
    stack: OpsStack, decide: Callable[[np.ndarray], Awaitable[Decision]], probes: int
) -> tuple[list[float], int]:
    """/healthz latencies while `decide` runs back to back; and how many decisions ran."""
    row = np.zeros(16, dtype=np.float32)
    stop = asyncio.Event()
    decisions = 0

    async def decide_forever() -> None:
        nonlocal decisions
        while not stop.is_set():
            await decide(row)
            decisions += 1
            await asyncio.sleep(0)

    deciding = asyncio.create_task(decide_forever())
    latencies = await healthz_latencies(stack, probes)
    stop.set()
    await deciding
    return latencies, decisions


def loops_per_ms(work: Path) -> float:
    """How many of the work loop's 256x256 products one millisecond holds on this machine."""
    import onnxruntime as ort  # noqa: PLC0415 - only the calibration needs it directly

    path = save(decision_model(work_loops=CALIBRATION_LOOPS), work / "calibration.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    row = np.zeros((1, 16), dtype=np.float32)
    timings = []
    for _ in range(7):
        started = time.perf_counter()
        session.run(None, {"features": row})
        timings.append(time.perf_counter() - started)
    return CALIBRATION_LOOPS / (statistics.median(timings) * 1e3)


def p99_ms(latencies: list[float]) -> float:
    return float(np.percentile(latencies, 99) * 1e3)


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="slow-model-"))
    try:
        models_dir = work / "models"
        models_dir.mkdir()
        shutil.copyfile(EMBEDDED_MODEL, models_dir / "unified_brain.onnx")
        settings = make_settings(
            models_dir,
            ops={"port": 0},
            cloud_sync={"enabled": False},
            brain={"max_decision_ms": args.budget_ms},
        )
        loops = int(args.decision_ms * loops_per_ms(work))
        slow = save(decision_model(work_loops=loops, version="slow"), work / "slow.onnx")
        async with running_ops(settings) as stack:
            result = await stack.models.swap_in([Candidate("unified_brain", slow)])
            if not result.ok:
                raise SystemExit(f"the slow model was refused: {result.reason}")
            measured = stack.brain.snapshot.decision.model.decision_seconds or 0.0

            async def inline(row: np.ndarray) -> Decision:
                return stack.brain.decide(row)

            worker, worker_decisions = await measure(stack, stack.brain.decide_async, args.probes)
            baseline, baseline_decisions = await measure(stack, inline, args.probes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"model: {measured * 1e3:.1f} ms per decision (p99 at warm-up); {args.probes} probes\n")
    print_figures(
        [
            Figure(
                "/healthz p99, decisions in a worker (decide_async)",
                f"{p99_ms(worker):.1f} ms (median {statistics.median(worker) * 1e3:.1f} ms, "
                f"{worker_decisions} decisions)",
                f"< {TARGET_MS:g} ms",
                p99_ms(worker) < TARGET_MS,
            ),
            Figure(
                "baseline: /healthz p99, decide() on the event loop",
                f"{p99_ms(baseline):.1f} ms (median {statistics.median(baseline) * 1e3:.1f} ms, "
                f"{baseline_decisions} decisions)",
            ),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decision-ms", type=float, default=50.0)
    parser.add_argument("--budget-ms", type=float, default=100.0, help="brain.max_decision_ms")
    parser.add_argument("--probes", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
