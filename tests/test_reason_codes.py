"""A refused model is counted under the reason code of the check it failed, taken from the
error's type (never its text): load_failed, incompatible, invalid_output, install_failed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app import errors
from app.brain.validation import SlotContract, validate_model
from app.services.monitoring import ARTIFACT_REASONS
from tests.conftest import ROOT
from tests.onnx_models import decision_model, save

SLOT = "unified_brain"


def _contract(features: int = 16) -> SlotContract:
    return SlotContract(slot=SLOT, serving=None, decision_features=features)


def _refusal(path: Path) -> errors.ModelError:
    with pytest.raises(errors.ModelError) as raised:
        validate_model(path, _contract(), intra_op_threads=1, inter_op_threads=1)
    return raised.value


def test_a_file_onnx_runtime_cannot_load_is_load_failed(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_bytes(b"this is not a model\n" * 10)

    refusal = _refusal(path)

    assert refusal.reason_code == "load_failed"
    assert "cannot be loaded by ONNX Runtime" in str(refusal)


def test_a_model_of_the_wrong_shape_is_incompatible(tmp_path: Path) -> None:
    refusal = _refusal(save(decision_model(n_features=8), tmp_path / "wide.onnx"))

    assert refusal.reason_code == "incompatible"
    assert "incompatible with slot" in str(refusal)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: decision_model(nan_output=True), "not finite"),
        (lambda: decision_model(softmax=False), "not a probability distribution"),
    ],
    ids=["nan", "not probabilities"],
)
def test_a_model_whose_output_is_unusable_is_invalid_output(
    tmp_path: Path, build: Any, message: str
) -> None:
    refusal = _refusal(save(build(), tmp_path / "bad.onnx"))

    assert refusal.reason_code == "invalid_output"
    assert message in str(refusal)


def test_every_error_s_reason_code_is_a_documented_one() -> None:
    classes = [
        item
        for item in vars(errors).values()
        if isinstance(item, type) and issubclass(item, errors.AppError)
    ]

    assert {cls.reason_code for cls in classes} <= set(ARTIFACT_REASONS)
    assert {"load_failed", "incompatible", "invalid_output", "install_failed"} <= {
        cls.reason_code for cls in classes
    }


def test_the_readme_lists_exactly_the_reason_codes() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("`reason` codes:")
    listing = text[start : text.index("A refusal's code", start)]
    # The codes are the listing's top-level words: what is in parentheses explains them.
    codes = re.findall(r"`([a-z_]+)`", re.sub(r"\([^()]*\)", "", listing))

    assert codes[0] == "reason"
    assert sorted(codes[1:]) == sorted(ARTIFACT_REASONS)
