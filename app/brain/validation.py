"""Everything a model must pass before it may serve a slot (blocking: run in a thread)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.brain.budget import (
    LATENCY_RUNS,
    Budget,
    Validations,
    check_construction_time,
    check_latency,
)
from app.brain.runtime import (
    check_probabilities,
    decision_seconds,
    open_session,
    run_failure,
    signature_of,
    warm_up,
)
from app.brain.signature import ModelSignature, decision_contract_problems, incompatibilities
from app.errors import ModelIncompatible, ModelLoadFailed, ModelOutputInvalid


@dataclass(frozen=True, slots=True)
class SlotContract:
    """What a slot requires of its model."""

    slot: str
    serving: ModelSignature | None  # the current model's signature; None at first load
    decision_features: int | None  # the decision slot's input width; None for other slots


@dataclass(frozen=True, slots=True)
class ValidatedSession:
    session: Any
    signature: ModelSignature
    declared_version: str | None
    decision_seconds: float | None = None  # p99 of a single-row decision (decision slot)


def check_file(path: Path) -> None:
    """Refuse what is plainly not a model file before any work is done on it."""
    if path.is_dir():
        raise ModelLoadFailed(f"{path} is a directory, not a model file")
    if not path.exists():
        raise ModelLoadFailed(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ModelLoadFailed(f"{path} is empty")


def validate_model(
    path: Path,
    contract: SlotContract,
    *,
    intra_op_threads: int,
    inter_op_threads: int,
    budget: Budget | None = None,
    validations: Validations | None = None,
    warmup_rows: np.ndarray | None = None,
) -> ValidatedSession:
    """Load `path` and prove it can serve `contract.slot` within `budget`, or raise ModelError
    saying why (a validation over its time is stopped, see ``budget.py``).

    `warmup_rows`: recent real feature rows (the decision journal's) for the decision slot;
    the model must give finite, well-shaped probabilities on them too, as TF Serving warms up
    on recorded requests. Without them (an empty journal) the probe input is all there is.

    The error's type says which check failed (ModelLoadFailed, ModelIncompatible,
    ModelOutputInvalid), and with it the metric reason code.
    """
    started = time.monotonic()
    limits = budget or Budget()
    session = open_session(
        path, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads
    )
    check_construction_time(limits, started)
    signature = signature_of(session)
    problems: list[str] = []
    if contract.serving is not None:
        problems += incompatibilities(contract.serving, signature)
    if contract.decision_features is not None:
        problems += decision_contract_problems(signature, n_features=contract.decision_features)
    problems = list(dict.fromkeys(problems))  # both checks may see the same fault
    if problems:
        raise ModelIncompatible(f"incompatible with slot {contract.slot!r}: " + "; ".join(problems))
    latency = None
    with (validations or Validations()).running(limits, started) as run_options:
        warm_up(session, signature, run_options)
        width = contract.decision_features
        if width is not None:
            check_probabilities(session, signature, width, run_options)
            if warmup_rows is not None and len(warmup_rows):
                warm_up_on_recorded(session, signature, warmup_rows, width, run_options)
            latency = decision_seconds(
                session, signature, width, run_options, runs=LATENCY_RUNS, recorded=warmup_rows
            )
    if latency is not None:
        check_latency(limits, latency)
    metadata = session.get_modelmeta().custom_metadata_map
    return ValidatedSession(session, signature, metadata.get("version") or None, latency)


def warm_up_on_recorded(
    session: Any,
    signature: ModelSignature,
    rows: np.ndarray,
    n_features: int,
    run_options: Any = None,
) -> None:
    """Run the decision model on recorded feature rows; refuse non-finite or ill-shaped output."""
    batch = np.ascontiguousarray(rows, dtype=np.float32)
    if batch.ndim != 2 or batch.shape[1] != n_features:
        return  # recorded under another feature list: not this model's inputs
    feed = {signature.inputs[0].name: batch}
    try:
        output = session.run([signature.outputs[0].name], feed, run_options)[0]
    except Exception as error:
        raise run_failure(error, f"warm-up on {len(batch)} journaled feature rows") from None
    probs = np.asarray(output)
    if probs.shape != (len(batch), 3):
        raise ModelOutputInvalid(
            f"decision output has shape {list(probs.shape)} on {len(batch)} journaled feature "
            f"rows, expected [{len(batch)}, 3]"
        )
    if probs.dtype.kind in "fc" and not np.isfinite(probs).all():
        bad = int(np.count_nonzero(~np.isfinite(probs).all(axis=1)))
        raise ModelOutputInvalid(
            f"decision output is not finite (NaN or infinity) on {bad} of {len(batch)} "
            "journaled feature rows"
        )
