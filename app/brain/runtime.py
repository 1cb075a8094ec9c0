"""Loading a model file into an ONNX Runtime session, and proving it serves.

Everything here blocks (file reads, session construction, a warm-up inference): callers run it
in a worker thread so the event loop keeps serving decisions.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.brain.signature import ModelSignature, TensorSpec
from app.errors import ModelError, ModelIncompatible, ModelLoadFailed, ModelOutputInvalid

_PROBE_BATCH = 2  # a batch of two also proves the batch dimension is really dynamic

_NUMPY_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What changes when a file is replaced: lets a watcher notice another process's install."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        stat = path.stat()
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int | str) else None for dim in (arg.shape or ()))
    return TensorSpec(name=str(arg.name), element_type=str(arg.type), shape=shape)


def signature_of(session: ort.InferenceSession) -> ModelSignature:
    """The inputs and outputs a session declares."""
    return ModelSignature(
        inputs=tuple(_spec(arg) for arg in session.get_inputs()),
        outputs=tuple(_spec(arg) for arg in session.get_outputs()),
    )


MIB = 1 << 20
_ARENA_REFUSAL = re.compile(r"Available memory of (\d+) is smaller than requested bytes of (\d+)")
_memory_budget_bytes: int | None = None


def set_memory_budget(limit_bytes: int) -> None:
    """Cap what every session of this process allocates while it runs, at `limit_bytes`.

    One ONNX Runtime arena, shared by all sessions that are built afterwards: a run that asks
    for more fails at once, before touching the memory (a shape-expanding graph asking for
    gigabytes is refused at warm-up with the figure). It is process-wide, so the program that
    owns the process sets it, once (``python -m app`` does; an embedding host may).
    """
    global _memory_budget_bytes  # noqa: PLW0603 - the arena is process-wide in ONNX Runtime
    if _memory_budget_bytes is not None:
        if _memory_budget_bytes != limit_bytes:
            raise ModelError("the memory budget is already set for this process")
        return
    memory = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    # Extend the arena by what is asked, not by powers of two, so the cap is what is counted.
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg(limit_bytes, 1, -1, -1))
    _memory_budget_bytes = limit_bytes


def memory_budget_set() -> bool:
    """Whether this process's sessions share the capped arena of :func:`set_memory_budget`."""
    return _memory_budget_bytes is not None


def memory_refusal(message: str) -> str | None:
    """The one-line reason when `message` is the arena refusing an allocation, else None."""
    found = _ARENA_REFUSAL.search(message)
    if found is None:
        return None
    available, requested = (int(group) for group in found.groups())
    return (
        f"a run asked for {requested / MIB:,.0f} MB, over the {available / MIB:,.0f} MB "
        "that memory.limit_mb leaves to running models"
    )


def open_session(path: Path, *, intra_op_threads: int, inter_op_threads: int) -> Any:
    """An ONNX Runtime session on the CPU; any load failure becomes a one-line ModelError."""
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        raise ModelLoadFailed(f"{path} is {what}, not a model file")
    if path.stat().st_size == 0:
        raise ModelLoadFailed(f"{path} is empty")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 4  # fatal only: our own log line says what went wrong
    if _memory_budget_bytes is not None:
        options.add_session_config_entry("session.use_env_allocators", "1")
    try:
        # Constant folding would run the model's own constant subgraphs while the session is
        # built, where no deadline, stop or memory arena reaches; at run time all three do.
        return ort.InferenceSession(
            str(path),
            sess_options=options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=["ConstantFolding"],
        )
    except Exception as error:  # onnxruntime raises several unrelated types for bad files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ModelLoadFailed(
            f"{path.name} cannot be loaded by ONNX Runtime: {first_line}"
        ) from None


def _probe_feed(signature: ModelSignature) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(20250108)
    feed = {}
    for spec in signature.inputs:
        dtype = _NUMPY_TYPES.get(spec.element_type)
        if dtype is None:
            raise ModelIncompatible(f"input {spec.name!r} has unsupported type {spec.element_type}")
        shape = tuple(dim if isinstance(dim, int) else _PROBE_BATCH for dim in spec.shape)
        feed[spec.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def run_failure(error: Exception, what: str) -> ModelError:
    """A one-line ModelError for a failed run (memory refusals and terminations said plainly)."""
    message = str(error).strip()
    refusal = memory_refusal(message)
    if refusal is not None:
        return ModelError(f"{what}: {refusal}")
    if "terminate flag" in message:
        return ModelError(f"{what}: stopped")
    return ModelOutputInvalid(
        f"{what} failed: {message.splitlines()[0][:200] if message else error}"
    )


def warm_up(session: Any, signature: ModelSignature, run_options: Any = None) -> None:
    """Run the model once on probe input; outputs must be finite and shaped as declared."""
    try:
        outputs = session.run(None, _probe_feed(signature), run_options)
    except ModelError:
        raise
    except Exception as error:
        raise run_failure(error, "warm-up inference") from None
    for spec, value in zip(signature.outputs, outputs, strict=True):
        array = np.asarray(value)
        if array.ndim != spec.rank:
            raise ModelOutputInvalid(
                f"output {spec.name!r} has rank {array.ndim}, declared {spec.rank}"
            )
        for axis, (declared, actual) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if isinstance(declared, int) and declared != actual:
                raise ModelOutputInvalid(
                    f"output {spec.name!r} dimension {axis} is {actual}, declared {declared}"
                )
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise ModelOutputInvalid(
                f"output {spec.name!r} is not finite (NaN or infinity) on probe input"
            )


def decision_seconds(
    session: Any,
    signature: ModelSignature,
    n_features: int,
    run_options: Any,
    *,
    runs: int,
    recorded: np.ndarray[Any, Any] | None = None,
) -> float:
    """The p99 of `runs` single-row decisions (after the warm-up), in seconds.

    On probe rows, and on the newest `recorded` real rows too when there are some: a model can
    be fast on noise and slow on the market (a loop that runs only above some feature value).
    """
    probe = np.random.default_rng(11).standard_normal((runs, n_features)).astype(np.float32)
    rows = probe
    if recorded is not None and recorded.ndim == 2 and recorded.shape[1] == n_features:
        rows = np.concatenate([probe, recorded[-runs:].astype(np.float32)])
    names, feed_name = [signature.outputs[0].name], signature.inputs[0].name
    timings = []
    try:
        for row in rows:
            started = time.perf_counter()
            session.run(names, {feed_name: row.reshape(1, -1)}, run_options)
            timings.append(time.perf_counter() - started)
    except Exception as error:
        raise run_failure(error, "latency measurement") from None
    return float(np.percentile(timings, 99))


def check_probabilities(
    session: Any, signature: ModelSignature, n_features: int, run_options: Any = None
) -> None:
    """A decision model's first output must be a probability row per input row."""
    batch = np.random.default_rng(7).standard_normal((_PROBE_BATCH, n_features)).astype(np.float32)
    try:
        outputs = session.run(
            [signature.outputs[0].name], {signature.inputs[0].name: batch}, run_options
        )
    except Exception as error:
        raise run_failure(error, "probability check") from None
    probs = np.asarray(outputs[0])
    if probs.shape[0] != _PROBE_BATCH:
        raise ModelOutputInvalid(
            f"decision output has {probs.shape[0]} rows for {_PROBE_BATCH} inputs"
        )
    sums = probs.sum(axis=1)
    if (probs < -1e-6).any() or not all(math.isclose(s, 1.0, abs_tol=1e-3) for s in sums):
        raise ModelOutputInvalid(
            "decision output is not a probability distribution (rows must sum to 1)"
        )
