"""A model's signature (its inputs and outputs) and whether a candidate may replace the current one.

Pure: no onnxruntime here, so the rules are tested on plain data.
"""

from __future__ import annotations

from dataclasses import dataclass

Dim = int | str | None  # a fixed size, a symbolic name ("batch"), or unknown


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: its name, element type (as ``tensor(float)``) and shape."""

    name: str
    element_type: str
    shape: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        dims = ", ".join("?" if dim is None else str(dim) for dim in self.shape)
        return f"{self.name}: {self.element_type} [{dims}]"


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """The inputs and outputs of a model, in the model's order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def describe(self) -> str:
        ins = "; ".join(spec.describe() for spec in self.inputs)
        outs = "; ".join(spec.describe() for spec in self.outputs)
        return f"inputs ({ins}) -> outputs ({outs})"


def _tensor_problems(kind: str, current: TensorSpec, candidate: TensorSpec) -> list[str]:
    problems = []
    if candidate.element_type != current.element_type:
        problems.append(
            f"{kind} {current.name!r} type is {candidate.element_type}, "
            f"expected {current.element_type}"
        )
    if candidate.rank != current.rank:
        problems.append(
            f"{kind} {current.name!r} has rank {candidate.rank}, expected {current.rank}"
        )
        return problems
    for axis, (want, got) in enumerate(zip(current.shape, candidate.shape, strict=True)):
        # A fixed size in the serving model is part of the contract: the candidate must keep it.
        if isinstance(want, int) and got != want:
            problems.append(f"{kind} {current.name!r} dimension {axis} is {got}, expected {want}")
    return problems


def _side_problems(
    kind: str, current: tuple[TensorSpec, ...], candidate: tuple[TensorSpec, ...]
) -> list[str]:
    by_name = {spec.name: spec for spec in candidate}
    problems = []
    for spec in current:
        other = by_name.get(spec.name)
        if other is None:
            found = ", ".join(repr(s.name) for s in candidate) or "none"
            problems.append(f"{kind} {spec.name!r} is missing (candidate has {found})")
        else:
            problems.extend(_tensor_problems(kind, spec, other))
    if kind == "input":
        # Extra inputs would have to be fed by a caller that does not know them.
        problems.extend(
            f"input {spec.name!r} is not in the serving model"
            for spec in candidate
            if spec.name not in {s.name for s in current}
        )
    return problems


def incompatibilities(current: ModelSignature, candidate: ModelSignature) -> list[str]:
    """Why `candidate` cannot replace `current`; empty when it can.

    Names, element types, ranks and every fixed dimension of the serving model's inputs and
    outputs must be kept. Extra outputs are allowed (nobody reads them); extra inputs are not.
    """
    return _side_problems("input", current.inputs, candidate.inputs) + _side_problems(
        "output", current.outputs, candidate.outputs
    )


FLOAT_TENSOR = "tensor(float)"


def decision_contract_problems(
    signature: ModelSignature, *, n_features: int, n_actions: int = 3
) -> list[str]:
    """Why a model cannot make decisions: one float input [batch, n_features], first output
    float [batch, n_actions] (sell, hold, buy probabilities)."""
    problems = []
    if len(signature.inputs) != 1:
        problems.append(f"expected exactly one input, found {len(signature.inputs)}")
    else:
        problems.extend(
            _tensor_problems(
                "input",
                TensorSpec(signature.inputs[0].name, FLOAT_TENSOR, (None, n_features)),
                signature.inputs[0],
            )
        )
    if not signature.outputs:
        problems.append("the model has no output")
    else:
        first = signature.outputs[0]
        problems.extend(
            _tensor_problems(
                "output", TensorSpec(first.name, FLOAT_TENSOR, (None, n_actions)), first
            )
        )
    return problems
