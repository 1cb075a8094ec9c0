"""Hot-swap a large model while decisions run; print each figure against its target.

    python benchmarks/swap_under_load.py [--size-mb 300] [--tasks 4]

Everything is measured in one run, on the same files, on this machine: two decision models of
``--size-mb`` each (different seeds and versions) are swapped in turn while ``--tasks`` asyncio
tasks call ``decide()`` and a ticker task measures how late a 1 ms sleep wakes up (event-loop
lag). Candidates are handed over the way the sync service does it (a file under
``models/.sync/downloads/``, which the store hard-links); the copy path (a candidate anywhere
else, which the store copies and fsyncs) is reported as a second set of figures. The naive
baseline builds the session inline on the event loop; a bare session built in a worker thread,
and the steady windows themselves, are shown for contrast. Each swap under load follows a 1 s
steady window of the same load, and bare loads are interleaved with the swaps, so drift hits
both sides of every ratio alike. The last line says how much CPU other processes used during the
run: on a 2-core machine, anything else running shows up as lag. Files live in a temporary folder
that is removed at the end; the exit status is 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: make `tests.onnx_models` importable

from _report import Figure, print_figures  # noqa: E402 - beside this script

from app.brain.brain import TradingBrain  # noqa: E402
from app.brain.models import Candidate  # noqa: E402
from app.install.installer import ModelInstaller  # noqa: E402
from app.process import reexec_with_malloc_tunables, settle_heap  # noqa: E402
from app.settings import load_settings  # noqa: E402
from tests.onnx_models import decision_model, save  # noqa: E402

EMBEDDED_MODEL = ROOT / "models" / "unified_brain.onnx"
TICK_SECONDS = 0.001
THREADS = 1  # intra- and inter-op threads: the brain's settings and the bare loads alike
SETTLE_SECONDS = 0.3  # after a swap, before the next steady window (old session freed, etc.)
STEADY_SECONDS = 1.0  # one steady-state window before each swap under load
TAIL_SECONDS = 0.1  # counted as "during the swap" after it returns: deferred frees land here


# -- recording -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """A span of perf_counter time."""

    start: float
    end: float


@dataclass(slots=True)
class Recorder:
    """Timestamped decision latencies, loop lags and failures from the load tasks."""

    # array('d'), not list: the recorder must not give the garbage collector work to do.
    decision_start: array[float] = field(default_factory=lambda: array("d"))
    decision_seconds: array[float] = field(default_factory=lambda: array("d"))
    lag_start: array[float] = field(default_factory=lambda: array("d"))
    lag_seconds: array[float] = field(default_factory=lambda: array("d"))
    failure_at: list[float] = field(default_factory=list)
    failure_reasons: list[str] = field(default_factory=list)

    def fail(self, at: float, reason: str) -> None:
        self.failure_at.append(at)
        self.failure_reasons.append(reason)

    def decisions_in(self, windows: Iterable[Window]) -> np.ndarray:
        return _select(self.decision_start, self.decision_seconds, windows)

    def lags_in(self, windows: Iterable[Window]) -> np.ndarray:
        return _select(self.lag_start, self.lag_seconds, windows)

    def failures_in(self, windows: Iterable[Window]) -> list[str]:
        spans = list(windows)
        return [
            reason
            for at, reason in zip(self.failure_at, self.failure_reasons, strict=True)
            if any(w.start <= at <= w.end for w in spans)
        ]


def _select(starts: array[float], seconds: array[float], windows: Iterable[Window]) -> np.ndarray:
    """The durations of the samples that overlap any of `windows`."""
    start = np.asarray(starts)
    duration = np.asarray(seconds)
    end = start + duration
    chosen = np.zeros(start.shape, dtype=bool)
    for window in windows:
        chosen |= (start < window.end) & (end > window.start)
    return duration[chosen]


# -- load: decision tasks and the ticker ------------------------------------------------------


async def _decide_continuously(
    brain: TradingBrain,
    features: np.ndarray,
    allowed: frozenset[str],
    recorder: Recorder,
    stop: asyncio.Event,
) -> None:
    slot = brain.settings.decision_slot
    while not stop.is_set():
        started = time.perf_counter()
        try:
            decision = brain.decide(features)
        except Exception as error:
            recorder.fail(started, f"{type(error).__name__}: {error}")
        else:
            elapsed = time.perf_counter() - started
            recorder.decision_start.append(started)
            recorder.decision_seconds.append(elapsed)
            versions = decision.versions  # no copy: the check must not add work of its own
            if len(versions) != 1 or versions.get(slot) not in allowed:
                recorder.fail(started, f"unexpected versions {dict(versions)}")
        await asyncio.sleep(0)


async def _tick(recorder: Recorder, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(TICK_SECONDS)
        recorder.lag_start.append(started)
        recorder.lag_seconds.append(time.perf_counter() - started - TICK_SECONDS)


@contextlib.asynccontextmanager
async def decisions_running(
    brain: TradingBrain, tasks: int, allowed: frozenset[str], recorder: Recorder
) -> AsyncIterator[None]:
    """`tasks` decision loops and the lag ticker run for the duration of the block."""
    stop = asyncio.Event()
    rng = np.random.default_rng(5)
    width = len(brain.settings.features)
    workers = [
        asyncio.create_task(
            _decide_continuously(
                brain, rng.standard_normal(width).astype(np.float32), allowed, recorder, stop
            )
        )
        for _ in range(tasks)
    ]
    workers.append(asyncio.create_task(_tick(recorder, stop)))
    await asyncio.sleep(0.2)  # every task is running before anything is measured
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*workers)


# -- what is measured -------------------------------------------------------------------------


def bare_load(path: Path) -> float:
    """Seconds to build a session of `path` with the brain's options, nothing else."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = THREADS
    started = time.perf_counter()
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    seconds = time.perf_counter() - started
    del session  # freed here, by reference count
    return seconds


def not_serving(brain: TradingBrain, paths: Sequence[Path]) -> Path:
    """The first of `paths` whose version (its file's stem) is not the one serving."""
    serving = brain.snapshot.versions[brain.settings.decision_slot]
    return next(path for path in paths if path.stem != serving)


# Durable copies of the synced models, made before any timed window: the sync pipeline hands
# over a file it has just extracted and flushed, once, and the install moves it into staging.
FRESH: dict[Path, list[Path]] = {}


def prepare_fresh(paths: Sequence[Path], count: int) -> None:
    for path in paths:
        copies = FRESH.setdefault(path, [])
        for number in range(count):
            fresh = path.with_name(f"{path.stem}.{number}{path.suffix}")
            shutil.copyfile(path, fresh)
            with fresh.open("rb") as stream:
                os.fsync(stream.fileno())
            copies.append(fresh)


async def swap(models: ModelInstaller, paths: Sequence[Path]) -> Window:
    """Swap in whichever of `paths` is not serving; the window it took."""
    brain = models.brain
    path = not_serving(brain, paths)
    if models.layout.is_private(path):
        path = FRESH[path].pop()  # the install takes (moves) it, as it takes an extracted file
    started = time.perf_counter()
    result = await models.swap_in([Candidate(brain.settings.decision_slot, path)])
    ended = time.perf_counter()
    if not result.ok or not result.installed:
        raise SystemExit(f"swap of {path.name} did not install: {result.reason}")
    return Window(started, ended)


@dataclass(slots=True)
class Rounds:
    """The windows of everything timed in one phase (idle, or under decision load)."""

    bare: list[Window] = field(default_factory=list)
    sync: list[Window] = field(default_factory=list)
    copy: list[Window] = field(default_factory=list)
    steady: list[Window] = field(default_factory=list)
    inline: list[Window] = field(default_factory=list)


def seconds_of(windows: Iterable[Window]) -> list[float]:
    return [window.end - window.start for window in windows]


def with_tail(windows: Iterable[Window]) -> list[Window]:
    return [Window(window.start, window.end + TAIL_SECONDS) for window in windows]


async def bare_load_in_thread(path: Path) -> Window:
    """A bare load in a worker thread, as the brain builds its sessions; the build's window.

    The session is freed right after, in the same thread: that lands in the window's tail, as
    the free of the replaced session lands in a swap's.
    """
    started = time.perf_counter()
    seconds = await asyncio.to_thread(bare_load, path)
    return Window(started, started + seconds)


async def steady_then(rounds: Rounds, work: Awaitable[Window], into: list[Window]) -> None:
    """Settle, record a steady window, then time `work` (its tail is left unmeasured)."""
    await asyncio.sleep(SETTLE_SECONDS)
    steady_start = time.perf_counter()
    await asyncio.sleep(STEADY_SECONDS)
    rounds.steady.append(Window(steady_start, time.perf_counter()))
    into.append(await work)
    await asyncio.sleep(TAIL_SECONDS)


async def idle_rounds(
    models: ModelInstaller, synced: Sequence[Path], elsewhere: Sequence[Path], count: int
) -> Rounds:
    """Bare load, sync-path swap and copy-path swap in turn, with nothing else running."""
    rounds = Rounds()
    for index in range(count):
        rounds.bare.append(await bare_load_in_thread(synced[index % len(synced)]))
        rounds.sync.append(await swap(models, synced))
        rounds.copy.append(await swap(models, elsewhere))
    return rounds


async def loaded_rounds(
    models: ModelInstaller, synced: Sequence[Path], elsewhere: Sequence[Path], count: int
) -> Rounds:
    """The same, under load, each after a steady window; then the inline baseline."""
    rounds = Rounds()
    for index in range(count):
        await steady_then(rounds, swap(models, synced), rounds.sync)
        await steady_then(rounds, bare_load_in_thread(synced[index % len(synced)]), rounds.bare)
        await steady_then(rounds, swap(models, elsewhere), rounds.copy)
    for path in synced:
        await asyncio.sleep(SETTLE_SECONDS)
        started = time.perf_counter()
        bare_load(path)  # the naive way: built on the event loop itself
        await asyncio.sleep(0)
        rounds.inline.append(Window(started, time.perf_counter()))
    await asyncio.sleep(TAIL_SECONDS)
    return rounds


def per_call_seconds(call: Callable[[], object], iterations: int) -> float:
    started = time.perf_counter()
    for _ in range(iterations):
        call()
    return (time.perf_counter() - started) / iterations


def decide_versus_raw(brain: TradingBrain, iterations: int, batches: int) -> tuple[float, float]:
    """Median per-call seconds of decide() and of session.run on the same session and input."""
    model = brain.snapshot.models[brain.settings.decision_slot]
    row = np.random.default_rng(3).standard_normal((1, len(brain.settings.features)))
    row = row.astype(np.float32)
    session, input_name = model.session, model.signature.inputs[0].name
    output_names = [model.signature.outputs[0].name]

    def raw() -> object:
        return session.run(output_names, {input_name: row})

    def decide() -> object:
        return brain.decide(row)

    per_call_seconds(raw, iterations // 10)  # warm both paths before timing
    per_call_seconds(decide, iterations // 10)
    raw_times, decide_times = [], []
    for _ in range(batches):  # interleaved, so drift hits both alike
        raw_times.append(per_call_seconds(raw, iterations))
        decide_times.append(per_call_seconds(decide, iterations))
    return statistics.median(decide_times), statistics.median(raw_times)


# -- set-up -----------------------------------------------------------------------------------


def build_models(folder: Path, size_mb: float) -> list[Path]:
    """Two large decision models, fsynced like the sync service's extraction does."""
    paths = []
    for seed, name in ((1, "bench-a"), (2, "bench-b")):
        model = decision_model(seed=seed, version=name, padding_mb=size_mb)
        path = save(model, folder / f"{name}.onnx")
        del model
        with path.open("rb") as stream:
            os.fsync(stream.fileno())
        paths.append(path)
    return paths


def warm_page_cache(paths: Iterable[Path]) -> None:
    for path in paths:
        with path.open("rb") as stream:
            while stream.read(1 << 24):
                pass


def linked_elsewhere(paths: Iterable[Path], folder: Path) -> list[Path]:
    """The same files (hard links) at a path the store does not own, so it copies them."""
    folder.mkdir(parents=True)
    linked = []
    for path in paths:
        os.link(path, folder / path.name)
        linked.append(folder / path.name)
    return linked


async def start_models(work: Path) -> ModelInstaller:
    models_dir = work / "models"
    models_dir.mkdir()
    shutil.copyfile(EMBEDDED_MODEL, models_dir / "unified_brain.onnx")
    settings_file = work / "settings.yaml"
    settings_file.write_text("{}\n")  # nothing from the working directory's settings
    settings = load_settings(
        settings_file,
        models={"dir": str(models_dir), "lock_wait_seconds": 0},
        brain={"intra_op_threads": THREADS, "inter_op_threads": THREADS},
    )
    models = ModelInstaller(settings, TradingBrain(settings.brain))
    await models.start()
    return models


# -- report -----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us"


def p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99))


def loop_figures(
    label: str, recorder: Recorder, swaps: list[Window], steady: list[Window]
) -> list[Figure]:
    """Failures, worst lag and the p99 ratio of one hand-over path's swaps under load."""
    during = with_tail(swaps)
    failures = recorder.failures_in(during)
    decided = recorder.decisions_in(during)
    settled = recorder.decisions_in(steady)
    per_swap = [float(recorder.lags_in([window]).max()) for window in during]
    worst_lag = max(per_swap)
    each = " ".join(f"{lag * 1e3:.0f}" for lag in per_swap)
    ratio = p99(decided) / p99(settled)
    first = f" (first: {failures[0]})" if failures else ""
    return [
        Figure(
            f"{label}: decisions failed during swaps",
            f"{len(failures)} of {len(decided) + len(failures)}{first}",
            "0",
            not failures,
        ),
        Figure(
            f"{label}: worst loop lag during swaps",
            f"{ms(worst_lag)} (each swap: {each})",
            "<= 10 ms",
            worst_lag <= 0.010,
        ),
        Figure(
            f"{label}: decision p99 swap / steady",
            f"{ratio:.2f} ({us(p99(decided))} / {us(p99(settled))})",
            "<= 1.5",
            ratio <= 1.5,
        ),
    ]


def swap_time_figure(name: str, swaps: list[Window], bare: list[Window]) -> Figure:
    swap_median = statistics.median(seconds_of(swaps))
    bare_median = statistics.median(seconds_of(bare))
    ratio = swap_median / bare_median
    return Figure(
        name, f"{ratio:.2f} ({ms(swap_median)} / {ms(bare_median)})", "<= 1.3", ratio <= 1.3
    )


def contrast(
    name: str, recorder: Recorder, windows: list[Window], steady: list[Window] | None = None
) -> Figure:
    """Worst lag (and p99 ratio against `steady`) while something other than a swap runs."""
    during = with_tail(windows)
    value = f"lag {ms(float(recorder.lags_in(during).max()))}"
    if steady is not None:
        ratio = p99(recorder.decisions_in(during)) / p99(recorder.decisions_in(steady))
        value += f", p99 ratio {ratio:.2f}"
    return Figure(name, value, "", None)


# -- the run ----------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, work: Path) -> list[Figure]:
    models = await start_models(work)
    brain = models.brain
    decide_median, raw_median = decide_versus_raw(brain, args.iterations, args.batches)
    ratio = decide_median / raw_median
    figures = [
        Figure(
            "decide() median / raw session.run (default model)",
            f"{ratio:.2f} ({us(decide_median)} / {us(raw_median)})",
            "<= 1.3",
            ratio <= 1.3,
        )
    ]

    # Where the sync service leaves an extracted artifact; the store hard-links from there.
    synced = build_models(models.layout.downloads_dir, args.size_mb)
    prepare_fresh(synced, args.repeats + args.swaps + 2)
    elsewhere = linked_elsewhere(synced, work / "elsewhere")
    warm_page_cache(synced)
    bare_load(synced[0])  # the process's first load pays one-off costs: not measured
    await swap(models, synced)  # a big model serves from here on; not measured either
    settle_heap()  # as `python -m app` does once it has started

    idle = await idle_rounds(models, synced, elsewhere, args.repeats)
    recorder = Recorder()
    allowed = frozenset({*brain.snapshot.versions.values(), *(p.stem for p in synced)})
    async with decisions_running(brain, args.tasks, allowed, recorder):
        loaded = await loaded_rounds(models, synced, elsewhere, args.swaps)

    figures += loop_figures("sync path", recorder, loaded.sync, loaded.steady)
    figures += [
        Figure(
            "reference: worst lag in the steady windows (no swap)",
            ms(float(recorder.lags_in(loaded.steady).max())),
            "",
            None,
        ),
        contrast("contrast: bare session built in a thread", recorder, loaded.bare, loaded.steady),
        # No p99 here: the loop is blocked, so no decision runs while the session is built.
        contrast("baseline: bare session built inline", recorder, loaded.inline),
        swap_time_figure("sync path: swap / bare load, idle", idle.sync, idle.bare),
        swap_time_figure("sync path: swap / bare load, under load", loaded.sync, loaded.bare),
    ]
    figures += loop_figures("copy path", recorder, loaded.copy, loaded.steady)
    figures += [
        swap_time_figure("copy path: swap / bare load, idle", idle.copy, idle.bare),
        swap_time_figure("copy path: swap / bare load, under load", loaded.copy, loaded.bare),
    ]
    stray = recorder.failures_in([Window(0, float("inf"))])
    if stray:
        figures.append(
            Figure("decisions failed over the whole run", str(len(stray)), "0", passed=False)
        )
    return figures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=300, help="size of each big model")
    parser.add_argument("--tasks", type=int, default=4, help="asyncio tasks calling decide()")
    parser.add_argument("--swaps", type=int, default=4, help="swaps under load, per path")
    parser.add_argument("--repeats", type=int, default=5, help="bare loads and idle swaps")
    parser.add_argument("--iterations", type=int, default=20_000, help="calls per timing batch")
    parser.add_argument("--batches", type=int, default=5, help="timing batches (median)")
    return parser.parse_args(argv)


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (Linux), else None."""
    try:
        ticks = [int(tick) for tick in Path("/proc/stat").read_text().split()[1:8]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tunables = os.environ.get("GLIBC_TUNABLES")
    print(
        f"cpus={os.cpu_count()} onnxruntime={ort.__version__} numpy={np.__version__} "
        f"python={platform.python_version()} model={args.size_mb:g} MB tasks={args.tasks}"
        + (f" GLIBC_TUNABLES={tunables}" if tunables else "")
    )
    started, busy, own = time.perf_counter(), busy_cpu_seconds(), own_cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="swap-bench-") as folder:
        figures = asyncio.run(measure(args, Path(folder)))
    elapsed, busy_after = time.perf_counter() - started, busy_cpu_seconds()
    print_figures(figures)
    print(f"run time {elapsed:.0f} s", end="")
    if busy is not None and busy_after is not None:
        # Other processes competing for the 2 cores skew lags and ratios: say how much they ran.
        others = max(0.0, busy_after - busy - (own_cpu_seconds() - own))
        print(f"; other processes used {others:.1f} CPU-s ({100 * others / elapsed:.0f}% of a CPU)")
    else:
        print()
    return 0 if all(figure.passed is not False for figure in figures) else 1


if __name__ == "__main__":
    # Measure the process as `python -m app` runs it (see app/process.py); an explicit
    # GLIBC_TUNABLES (even empty) is respected, which is how to measure without the tunable.
    reexec_with_malloc_tunables()
    raise SystemExit(main())
