"""Real ONNX models for tests, benchmarks and the embedded default model, built with `onnx`.

The decision model is ``probs = softmax(features @ W + b)``: input ``features`` float32
[batch, n_features], output ``probs`` float32 [batch, n_actions]. Keyword arguments break it in
the ways a bad training run would (wrong width, renamed input, integer input, NaN output), or
pad it with a large weight table that is really read at run time (for load-time benchmarks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime this project supports


def decision_model(
    *,
    n_features: int = 16,
    n_actions: int = 3,
    seed: int = 0,
    version: str | None = None,
    input_name: str = "features",
    output_name: str = "probs",
    integer_input: bool = False,
    nan_output: bool = False,
    softmax: bool = True,
    padding_mb: float = 0,
    work_loops: int = 0,
    expand_rows: int = 0,
    nan_above: float | None = None,
    wide_above: float | None = None,
    weights: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> onnx.ModelProto:
    """A small, valid (unless told otherwise) decision model.

    Hostile variants that pass a probe but hurt a host: ``work_loops`` multiplies a 256x256
    matrix that many times per run (slow), ``expand_rows`` expands the input to that many rows
    at run time (memory), ``nan_above`` gives NaN once a feature exceeds it (real rows, never
    the probe), ``wide_above`` gives 5 columns instead of 3 once a feature exceeds it.
    ``weights`` and ``bias`` replace the seeded ones (a model that trades a known rule).
    """
    rng = np.random.default_rng(seed)
    drawn = rng.standard_normal((n_features, n_actions)).astype(np.float32)
    weights = drawn if weights is None else np.asarray(weights, np.float32)
    drawn_bias = rng.standard_normal(n_actions).astype(np.float32) * 0.1
    bias = drawn_bias if bias is None else np.asarray(bias, np.float32)
    initializers = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")]
    nodes = []
    source = input_name
    if integer_input:
        nodes.append(helper.make_node("Cast", [input_name], ["features_f"], to=TensorProto.FLOAT))
        source = "features_f"
    nodes += [
        helper.make_node("MatMul", [source, "W"], ["matmul_out"]),
        helper.make_node("Add", ["matmul_out", "b"], ["logits0"]),
    ]
    logits = "logits0"
    if padding_mb > 0:
        logits = _add_padding(nodes, initializers, source, logits, padding_mb, n_actions, rng)
    if work_loops:
        logits = _add_work(nodes, initializers, logits, work_loops)
    if expand_rows:
        logits = _add_expansion(nodes, initializers, source, logits, expand_rows, n_features)
    if nan_above is not None:
        logits = _add_nan_above(nodes, initializers, source, logits, nan_above)
    if wide_above is not None:  # still declares [batch, 3]: the lie is in what it returns
        logits = _add_wide_above(nodes, initializers, source, logits, wide_above)
    if nan_output:
        initializers.append(numpy_helper.from_array(np.array([np.nan], np.float32), "nan"))
        nodes.append(helper.make_node("Mul", [logits, "nan"], ["logits_nan"]))
        logits = "logits_nan"
    if softmax:
        nodes.append(helper.make_node("Softmax", [logits], [output_name], axis=1))
    else:
        nodes.append(helper.make_node("Identity", [logits], [output_name]))
    in_type = TensorProto.INT64 if integer_input else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "decision",
        [helper.make_tensor_value_info(input_name, in_type, ["batch", n_features])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", n_actions])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="tests.onnx_models",
        ir_version=IR_VERSION,
    )
    if version is not None:
        helper.set_model_props(model, {"version": version})
    onnx.checker.check_model(model)
    return model


def momentum_model(sign: float = 1.0, *, version: str | None = None) -> onnx.ModelProto:
    """Buys after a rising bar and sells after a falling one (``sign`` -1: the inverse), from
    ``return_1m`` (feature 0); holds when the last bar barely moved."""
    weights = np.zeros((16, 3), np.float32)
    weights[0] = [-40000.0 * sign, 0.0, 40000.0 * sign]  # 1 bp of return: 4 in the logits
    return decision_model(weights=weights, bias=np.array([0.0, 2.0, 0.0]), version=version)


def _add_padding(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    source: str,
    logits: str,
    padding_mb: float,
    n_actions: int,
    rng: np.random.Generator,
) -> str:
    """A [rows, n_actions] table added to the logits through a Gather whose index depends on
    the input (always 0), so ONNX Runtime cannot fold it away and must load every byte."""
    rows = max(1, int(padding_mb * (1 << 20) / (4 * n_actions)))
    table = (rng.standard_normal((rows, n_actions)) * 1e-3).astype(np.float32)
    initializers += [
        numpy_helper.from_array(table, "pad_table"),
        numpy_helper.from_array(np.array([0], np.int64), "first_col"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes += [
        helper.make_node("Slice", [source, "first_col", "one", "axis1"], ["col0"]),
        helper.make_node("Mul", ["col0", "zero"], ["col0_zero"]),
        helper.make_node("Cast", ["col0_zero"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["pad_table", "index"], ["pad_rows"], axis=0),
        helper.make_node("Squeeze", ["pad_rows", "axis1"], ["pad"]),
        helper.make_node("Add", [logits, "pad"], ["logits_padded"]),
    ]
    return "logits_padded"


def _add_work(
    nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], logits: str, loops: int
) -> str:
    """A Loop multiplying a 256x256 matrix `loops` times; its result (zero) joins the logits."""
    square = np.eye(256, dtype=np.float32)
    initializers += [
        numpy_helper.from_array(square, "work_m"),
        numpy_helper.from_array(np.array(loops, np.int64), "work_trips"),
        numpy_helper.from_array(np.array(True), "work_cond"),
        numpy_helper.from_array(np.array(0.0, np.float32), "work_zero"),
    ]
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["acc_in", "work_m"], ["acc_out"]),
        ],
        "work_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [256, 256]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [256, 256]),
        ],
    )
    nodes += [
        helper.make_node("Loop", ["work_trips", "work_cond", "work_m"], ["work_acc"], body=body),
        helper.make_node("ReduceMax", ["work_acc"], ["work_max"], keepdims=0),
        helper.make_node("Mul", ["work_max", "work_zero"], ["work_nil"]),
        helper.make_node("Add", [logits, "work_nil"], ["logits_worked"]),
    ]
    return "logits_worked"


def _add_expansion(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    source: str,
    logits: str,
    rows: int,
    n_features: int,
) -> str:
    """The input expanded to `rows` rows at run time (rows * n_features floats), summed away."""
    initializers += [
        numpy_helper.from_array(np.array([rows, n_features], np.int64), "expand_shape"),
        numpy_helper.from_array(np.array(0.0, np.float32), "expand_zero"),
        numpy_helper.from_array(np.array([0], np.int64), "expand_start"),
        numpy_helper.from_array(np.array([1], np.int64), "expand_end"),
    ]
    nodes += [
        helper.make_node("Slice", [source, "expand_start", "expand_end"], ["expand_row"]),
        helper.make_node("Expand", ["expand_row", "expand_shape"], ["expanded"]),
        helper.make_node("ReduceSum", ["expanded"], ["expanded_sum"], keepdims=0),
        helper.make_node("Mul", ["expanded_sum", "expand_zero"], ["expanded_nil"]),
        helper.make_node("Add", [logits, "expanded_nil"], ["logits_expanded"]),
    ]
    return "logits_expanded"


def _add_nan_above(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    source: str,
    logits: str,
    threshold: float,
) -> str:
    """NaN logits for any row holding a feature above `threshold`: fine on probe input (small
    normal numbers), broken on real feature rows (an RSI of 50, a volume of thousands)."""
    initializers += [
        numpy_helper.from_array(np.array(threshold, np.float32), "nan_threshold"),
        numpy_helper.from_array(np.array(np.nan, np.float32), "nan_value"),
        numpy_helper.from_array(np.array(0.0, np.float32), "no_nan"),
    ]
    nodes += [
        helper.make_node("ReduceMax", [source], ["row_max"], axes=[1], keepdims=1),
        helper.make_node("Greater", ["row_max", "nan_threshold"], ["too_big"]),
        helper.make_node("Where", ["too_big", "nan_value", "no_nan"], ["poison"]),
        helper.make_node("Add", [logits, "poison"], ["logits_poisoned"]),
    ]
    return "logits_poisoned"


def _add_wide_above(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    source: str,
    logits: str,
    threshold: float,
) -> str:
    """Two more (zero) columns once a feature exceeds `threshold`: [batch, 5] instead of 3."""
    initializers += [
        numpy_helper.from_array(np.array(threshold, np.float32), "wide_threshold"),
        numpy_helper.from_array(np.array([0], np.int64), "wide_first"),
        numpy_helper.from_array(np.array([1], np.int64), "wide_one"),
        numpy_helper.from_array(np.array([1], np.int64), "wide_axis"),
        numpy_helper.from_array(np.array([2], np.int64), "wide_two"),
        numpy_helper.from_array(np.array(0.0, np.float32), "wide_zero"),
    ]
    nodes += [
        helper.make_node("Slice", [source, "wide_first", "wide_one", "wide_axis"], ["wide_col"]),
        helper.make_node("Mul", ["wide_col", "wide_zero"], ["wide_zeros"]),
        helper.make_node("ReduceMax", [source], ["wide_max"], keepdims=0),
        helper.make_node("Greater", ["wide_max", "wide_threshold"], ["wide_on"]),
        helper.make_node("Cast", ["wide_on"], ["wide_on_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["wide_on_int", "wide_two"], ["wide_count"]),
        helper.make_node("Concat", ["wide_one", "wide_count"], ["wide_repeats"], axis=0),
        helper.make_node("Tile", ["wide_zeros", "wide_repeats"], ["wide_extra"]),
        helper.make_node("Concat", [logits, "wide_extra"], ["logits_wide"], axis=1),
    ]
    return "logits_wide"


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write `model` to `path` (parents created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path
