"""Layers, blocks and MACs of the INT8 sensitivity analysis, on hand-made graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from posenet_train.quantize_search import (
    LayerGroup,
    block_groups,
    format_table,
    layer_groups,
    node_macs,
)


def _graph() -> onnx.ModelProto:
    """x[1,2,8,8] -> Pad -> Conv A (4x2x3x3) -> Relu -> depthwise Conv (4x1x3x3, pads 1) ->
    Clip -> Add (with the Relu output) -> GlobalAveragePool -> Flatten -> Gemm (16x4) -> Relu."""
    rng = np.random.default_rng(0)

    def init(name, shape):
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["padded"], name="/a/Pad"),
        helper.make_node("Conv", ["padded", "wa", "ba"], ["a"], name="/a/Conv"),
        helper.make_node("Relu", ["a"], ["a_relu"], name="/a/Relu"),
        helper.make_node(
            "Conv", ["a_relu", "wd"], ["d"], name="/dw/Conv", group=4, pads=[1, 1, 1, 1]
        ),
        helper.make_node("Clip", ["d", "lo", "hi"], ["d_clip"], name="/dw/Clip"),
        helper.make_node("Add", ["d_clip", "a_relu"], ["sum"], name="/Add"),
        helper.make_node("GlobalAveragePool", ["sum"], ["pooled"], name="/pool/GAP"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="/fc/Flatten"),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["f"], name="/fc/Gemm", transB=1),
        helper.make_node("Relu", ["f"], ["y"], name="/fc/Relu"),
    ]
    initializers = [
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        init("wa", (4, 2, 3, 3)),
        init("ba", (4,)),
        init("wd", (4, 1, 3, 3)),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        init("wf", (16, 4)),
        init("bf", (16,)),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def test_node_macs():
    macs = node_macs(_graph())
    # Conv: output elements x (input channels / groups) x kernel area; Gemm: weight size.
    assert macs == {"/a/Conv": 4 * 8 * 8 * 2 * 9, "/dw/Conv": 4 * 8 * 8 * 1 * 9, "/fc/Gemm": 64}


def test_layer_groups():
    groups = layer_groups(_graph())
    assert [(g.name, g.nodes) for g in groups] == [
        ("/a/Conv", ("/a/Pad", "/a/Conv", "/a/Relu")),  # input padding and activation join
        ("/dw/Conv", ("/dw/Conv", "/dw/Clip")),
        ("/Add", ("/Add",)),  # a quantised op without weights is a layer of its own
        ("/pool/GAP", ("/pool/GAP",)),
        ("/fc/Gemm", ("/fc/Flatten", "/fc/Gemm", "/fc/Relu")),
    ]
    assert [g.macs for g in groups] == [4608, 2304, 0, 0, 64]
    # Excluded nodes (the regression tail) belong to no layer.
    excluded = layer_groups(_graph(), exclude=["/fc/Gemm", "/fc/Relu", "/Add"])
    names = {n for g in excluded for n in g.nodes}
    assert not names & {"/fc/Gemm", "/fc/Relu", "/Add"}
    assert ("/fc/Flatten",) in [g.nodes for g in excluded]


def _layers(*names: str) -> list[LayerGroup]:
    return [LayerGroup(name, (name,), ("Conv",), 10) for name in names]


@pytest.mark.parametrize(
    "names, blocks",
    [
        (  # EfficientNet: blocks at the first depth
            [
                "/_conv_stem/Conv",
                "/_blocks.0/_depthwise_conv/Conv",
                "/_blocks.0/_project_conv/Conv",
                "/_blocks.1/_expand_conv/Conv",
                "/_blocks.1/Add",
                "/_conv_head/Conv",
                "/heads.0/regressor/fc/Gemm",
            ],
            ["/_conv_stem", "/_blocks.0", "/_blocks.1", "/_conv_head", "/heads.0"],
        ),
        (  # GoogLeNet: everything is under /backbone, so the second depth
            [
                "/backbone/conv1/conv/Conv",
                "/backbone/conv2/conv/Conv",
                "/backbone/inception3a/branch1/conv/Conv",
                "/backbone/inception3a/branch2/branch2.0/conv/Conv",
                "/backbone/inception3a/Concat",
                "/heads.2/regressor/fc/Gemm",
            ],
            [
                "/backbone/conv1",
                "/backbone/conv2",
                "/backbone/inception3a",
                "/heads.2/regressor",
            ],
        ),
        (["/Add", "/Mul"], ["/Add", "/Mul"]),  # no module path: each stays itself
        ([], []),
    ],
)
def test_block_groups(names, blocks):
    merged = block_groups(_layers(*names))
    assert [b.name for b in merged] == blocks
    assert sorted(n for b in merged for n in b.nodes) == sorted(names)
    assert sum(b.macs for b in merged) == 10 * len(names)


def test_format_table_truncates_long_names_and_rows():
    rows = [
        {
            "rank": i + 1,
            "layer": "/very" * 20 + f"/{i}",
            "mac_share": 0.1,
            "deviation": 0.5,
            "deviation_position_median_m": 0.01,
            "deviation_rotation_median_deg": 0.2,
        }
        for i in range(3)
    ]
    text = format_table(rows, ground_truth=False, limit=2)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[-1].strip().startswith("... 1 more")
    assert all(len(line) < 100 for line in lines)


class _FakeQuantizer:
    """Writes the excluded node names into the 'model file'."""

    def __init__(self, folder, total_macs):
        self.folder, self.macs, self.count = folder, total_macs, 0

    def total_macs(self):
        return self.macs

    def temp_path(self, label):
        self.count += 1
        return self.folder / f"{self.count}_{label}"

    def quantize(self, path, method, *, exclude=()):
        path.write_text(",".join(sorted(exclude)))
        return path


class _FakeEvaluator:
    """Error increase looked up by the set of layers kept in FP32."""

    has_ground_truth = True

    def __init__(self, table):
        self.table = table

    def evaluate(self, path):
        kept = frozenset(n for n in path.read_text().split(",") if n)
        increase = self.table[kept]
        return {
            "increase_translation": increase,
            "increase_rotation": 0.0,
            "error_increase": increase,
        }


@pytest.mark.parametrize(
    "table, share, expected, met, tried",
    [
        (  # B does not help: put back; C reaches the budget
            {"A": 0.3, "AB": 0.35, "AC": 0.04},
            1.0,
            ["A", "C"],
            True,
            ["A", "B", "C"],
        ),
        (  # C alone is too many MACs: not tried; the budget is never met
            {"A": 0.3, "AB": 0.2, "ABD": 0.25},
            0.5,
            ["A", "B"],
            False,
            ["A", "B", "C", "D"],
        ),
        ({"A": 0.6, "B": 0.7, "C": 0.55, "D": 0.9}, 1.0, [], False, ["A", "B", "C", "D"]),
    ],
)
def test_choose_float_layers_keeps_only_layers_that_help(
    tmp_path, table, share, expected, met, tried
):
    from posenet_train.quantize_search import choose_float_layers

    groups = [LayerGroup(name, (name,), ("Conv",), 60 if name == "C" else 10) for name in "ABCD"]
    ranked = [{"layer": name} for name in "ABCD"]
    result = choose_float_layers(
        _FakeQuantizer(tmp_path, 100),
        _FakeEvaluator({frozenset(k): v for k, v in table.items()}),
        "minmax",
        ranked,
        groups,
        baseline={"error_increase": 0.5},
        max_error_increase=0.05,
        max_float_mac_share=share,
        max_float_layers=4,
        log=lambda _: None,
    )
    assert result["float_layers"] == expected and result["met"] is met
    assert [step["layer"] for step in result["steps"]] == tried
    assert (result["path"] is None) == (not expected)
    if expected:
        assert result["path"].read_text() == ",".join(sorted(expected))
