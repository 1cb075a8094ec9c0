"""Loading a model file into an ONNX Runtime session, and proving it serves.

Everything here blocks (file reads, session construction, a warm-up inference): callers run it
in a worker thread so the event loop keeps serving decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.brain.signature import ModelSignature, TensorSpec
from app.errors import ModelError

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


def open_session(path: Path, *, intra_op_threads: int, inter_op_threads: int) -> Any:
    """An ONNX Runtime session on the CPU; any load failure becomes a one-line ModelError."""
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        raise ModelError(f"{path} is {what}, not a model file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path} is empty")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.log_severity_level = 3  # errors only: our own log line says what went wrong
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises several unrelated types for bad files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ModelError(f"{path.name} cannot be loaded by ONNX Runtime: {first_line}") from None


def _probe_feed(signature: ModelSignature) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(20250108)
    feed = {}
    for spec in signature.inputs:
        dtype = _NUMPY_TYPES.get(spec.element_type)
        if dtype is None:
            raise ModelError(f"input {spec.name!r} has unsupported type {spec.element_type}")
        shape = tuple(dim if isinstance(dim, int) else _PROBE_BATCH for dim in spec.shape)
        feed[spec.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def warm_up(session: Any, signature: ModelSignature) -> None:
    """Run the model once on probe input; outputs must be finite and shaped as declared."""
    try:
        outputs = session.run(None, _probe_feed(signature))
    except ModelError:
        raise
    except Exception as error:
        raise ModelError(f"warm-up inference failed: {str(error).strip()[:200]}") from None
    for spec, value in zip(signature.outputs, outputs, strict=True):
        array = np.asarray(value)
        if array.ndim != spec.rank:
            raise ModelError(f"output {spec.name!r} has rank {array.ndim}, declared {spec.rank}")
        for axis, (declared, actual) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if isinstance(declared, int) and declared != actual:
                raise ModelError(
                    f"output {spec.name!r} dimension {axis} is {actual}, declared {declared}"
                )
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise ModelError(f"output {spec.name!r} is not finite (NaN or infinity) on probe input")


def check_probabilities(session: Any, signature: ModelSignature, n_features: int) -> None:
    """A decision model's first output must be a probability row per input row."""
    batch = np.random.default_rng(7).standard_normal((_PROBE_BATCH, n_features)).astype(np.float32)
    probs = np.asarray(
        session.run([signature.outputs[0].name], {signature.inputs[0].name: batch})[0]
    )
    if probs.shape[0] != _PROBE_BATCH:
        raise ModelError(f"decision output has {probs.shape[0]} rows for {_PROBE_BATCH} inputs")
    sums = probs.sum(axis=1)
    if (probs < -1e-6).any() or not all(math.isclose(s, 1.0, abs_tol=1e-3) for s in sums):
        raise ModelError("decision output is not a probability distribution (rows must sum to 1)")
