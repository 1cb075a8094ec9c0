"""The brain's pure rules: signature compatibility, backup names and retention, actions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.brain.decision import choose_action
from app.brain.signature import (
    ModelSignature,
    TensorSpec,
    decision_contract_problems,
    incompatibilities,
)
from app.install.backups import backups_to_prune, next_backup_name, parse_backup_name

SERVING = ModelSignature(
    inputs=(TensorSpec("features", "tensor(float)", ("batch", 16)),),
    outputs=(TensorSpec("probs", "tensor(float)", ("batch", 3)),),
)


def signature(**changes: object) -> ModelSignature:
    inp = {"name": "features", "element_type": "tensor(float)", "shape": ("batch", 16)}
    out = {"name": "probs", "element_type": "tensor(float)", "shape": ("batch", 3)}
    for key, value in changes.items():
        side, field = key.split("_", 1)
        (inp if side == "in" else out)[field] = value
    return ModelSignature((TensorSpec(**inp),), (TensorSpec(**out),))  # type: ignore[arg-type]


def test_the_same_signature_is_compatible() -> None:
    assert incompatibilities(SERVING, signature()) == []


def test_a_symbolic_batch_may_be_named_differently() -> None:
    assert incompatibilities(SERVING, signature(in_shape=("N", 16), out_shape=(None, 3))) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"in_shape": ("batch", 15)}, "input 'features' dimension 1 is 15, expected 16"),
        ({"in_name": "x"}, "input 'features' is missing (candidate has 'x')"),
        (
            {"in_element_type": "tensor(int64)"},
            "input 'features' type is tensor(int64), expected tensor(float)",
        ),
        ({"in_shape": ("batch", 16, 1)}, "input 'features' has rank 3, expected 2"),
        ({"out_shape": ("batch", 4)}, "output 'probs' dimension 1 is 4, expected 3"),
        ({"out_name": "scores"}, "output 'probs' is missing (candidate has 'scores')"),
        (
            {"out_element_type": "tensor(double)"},
            "output 'probs' type is tensor(double), expected tensor(float)",
        ),
    ],
)
def test_each_incompatibility_is_named(changes: dict[str, object], expected: str) -> None:
    assert expected in incompatibilities(SERVING, signature(**changes))


def test_an_extra_input_is_refused_but_an_extra_output_is_not() -> None:
    extra_in = ModelSignature(
        (*SERVING.inputs, TensorSpec("mask", "tensor(float)", (1,))), SERVING.outputs
    )
    extra_out = ModelSignature(
        SERVING.inputs, (*SERVING.outputs, TensorSpec("logits", "tensor(float)", ("b", 3)))
    )
    assert incompatibilities(SERVING, extra_in) == ["input 'mask' is not in the serving model"]
    assert incompatibilities(SERVING, extra_out) == []


def test_the_decision_contract() -> None:
    assert decision_contract_problems(SERVING, n_features=16) == []
    assert decision_contract_problems(signature(in_shape=("b", 8)), n_features=16) == [
        "input 'features' dimension 1 is 8, expected 16"
    ]
    two_inputs = ModelSignature(SERVING.inputs * 2, SERVING.outputs)
    assert decision_contract_problems(two_inputs, n_features=16) == [
        "expected exactly one input, found 2"
    ]


def test_backup_names_follow_the_seed_format() -> None:
    when = datetime(2025, 1, 8, 14, 30, 22, 999, tzinfo=UTC)
    assert next_backup_name("unified_brain", when, []) == "unified_brain_20250108_143022.onnx"
    taken = ["unified_brain_20250108_143022.onnx", "unified_brain_20250108_143022_2.onnx"]
    assert next_backup_name("unified_brain", when, taken) == "unified_brain_20250108_143022_3.onnx"


def test_backup_names_parse_back() -> None:
    parsed = parse_backup_name("unified_brain_20250108_143022_2.onnx")
    assert parsed is not None
    assert (parsed.slot, parsed.sequence) == ("unified_brain", 2)
    assert parsed.taken_at == datetime(2025, 1, 8, 14, 30, 22, tzinfo=UTC)
    assert parse_backup_name("unified_brain.onnx") is None
    assert parse_backup_name("notes.txt") is None


def test_retention_prunes_oldest_of_one_slot_only() -> None:
    names = [
        "unified_brain_20250101_000000.onnx",
        "unified_brain_20250102_000000.onnx",
        "unified_brain_20250102_000000_2.onnx",
        "unified_brain_20250103_000000.onnx",
        "risk_20240101_000000.onnx",
        "README.txt",
    ]
    assert backups_to_prune("unified_brain", names, keep=2) == [
        "unified_brain_20250102_000000.onnx",
        "unified_brain_20250101_000000.onnx",
    ]
    assert backups_to_prune("risk", names, keep=1) == []


@given(
    st.lists(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)), max_size=30
    ),
    st.integers(1, 10),
)
def test_retention_keeps_exactly_the_newest(stamps: list[datetime], keep: int) -> None:
    names: list[str] = []
    for stamp in stamps:
        names.append(next_backup_name("s", stamp.replace(tzinfo=UTC), names))
    pruned = backups_to_prune("s", names, keep)
    kept = sorted(set(names) - set(pruned), key=parse_backup_name)  # type: ignore[arg-type,return-value]
    assert len(kept) == min(keep, len(names))
    assert all(parse_backup_name(p) < parse_backup_name(k) for p in pruned for k in kept)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("probs", "action"),
    [
        ((0.7, 0.2, 0.1), "sell"),
        ((0.1, 0.2, 0.7), "buy"),
        ((0.1, 0.8, 0.1), "hold"),
        ((0.5, 0.1, 0.4), "hold"),
        ((0.2, 0.15, 0.65), "buy"),
    ],
)
def test_actions_respect_the_confidence_threshold(
    probs: tuple[float, float, float], action: str
) -> None:
    assert choose_action(probs, 0.65) == (action, max(probs))
