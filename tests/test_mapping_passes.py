"""Mapping passes on the digits CNN: quantize keeps accuracy; tiling, sharing, converters and
placement follow the target and reject what it does not offer."""

from __future__ import annotations

import numpy as np
import pytest

from imcc.backend.reference import collect
from imcc.errors import MappingError
from imcc.examples import example_path
from imcc.frontend.datasets import load_dataset
from imcc.frontend.onnx import import_onnx
from imcc.ir.mapping import ConverterChoice, InputStreaming, Placement, Tiling, WeightMapping
from imcc.passes.context import Context
from imcc.passes.layers import crossbar_layers
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline, print_pipeline
from imcc.target import (
    Converter,
    ConverterKind,
    Crossbar,
    Hierarchy,
    InputDriver,
    Target,
    Technology,
)

MAPPING = "assign-input-precision,quantize,tile-crossbar,select-adc,share-columns,place"


def small_target(tiles_per_chip: int = 0, **changes) -> Target:
    """An ISAAC-like target written in Python (the .hw files are tested elsewhere)."""
    fields = dict(
        name="test",
        description="ISAAC-like test target",
        technology=Technology(32, 1.2e9),
        crossbar=Crossbar(rows=128, columns=128, cell="rram", bits_per_cell=2),
        input_driver=InputDriver(bits_per_cycle=(1, 2), input_bits=(4, 6, 8)),
        converters=(
            Converter("sar", ConverterKind.SAR, bits=(6, 7, 8)),
            Converter("mtj", ConverterKind.MTJ, bits=(1,), samples=(1, 4, 16)),
        ),
        column_sharing=(8, 16, 32, 128),
        hierarchy=Hierarchy(crossbars_per_tile=2, tiles_per_chip=tiles_per_chip),
    )
    fields.update(changes)
    return Target(**fields)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits-cnn")


def compile_digits(pipeline: str, target: Target, data) -> object:
    graph = import_onnx(example_path("digits-cnn"))
    ctx = Context(target=target, options={"calibration": data.images[:64]})
    return PassManager(parse_pipeline(f"{DEFAULT_PIPELINE},{pipeline}")).run(graph, ctx)


def accuracy(graph, data) -> float:
    logits = collect(graph, data.images, [graph.outputs[0]])[graph.outputs[0]]
    return float(np.mean(logits.argmax(axis=1) == data.labels))


def test_quantized_digits_keep_their_accuracy(digits):
    graph = compile_digits("quantize", small_target(), digits)
    assert accuracy(graph, digits) >= 0.96  # float: 0.9667
    assert [n.op for n in graph.nodes].count("quantize") == 3


def test_mapping_attributes_follow_the_target(digits):
    graph = compile_digits(MAPPING, small_target(), digits)
    layers = crossbar_layers(graph)
    assert [n.attr("tiling") for n in layers] == [
        Tiling(128, 128, 1, 1, 1),  # K = 9, N = 8 x 4 slices
        Tiling(128, 128, 1, 1, 1),  # K = 72, N = 16 x 4
        Tiling(128, 128, 2, 1, 1),  # K = 256, N = 10 x 4
    ]
    assert layers[0].attr("weights") == WeightMapping("offset", (2, 2, 2, 2), 1)
    assert layers[0].attr("input") == InputStreaming(8, (1,) * 8, False, False)
    assert all(n.attr("column_share") == 8 for n in layers)
    assert layers[2].attr("converter") == ConverterChoice("sar", "sar", 8, 1)
    assert [n.attr("placement") for n in layers] == [
        Placement(0, 1, 1),  # tiles of 2 crossbars: the convs share tile 0
        Placement(1, 1, 1),
        Placement(2, 2, 1),
    ]


def test_per_layer_options_are_replayable(digits):
    pipeline = (
        "assign-input-precision{bits=0 slice=0 speculate=false per_layer_bits=[8,6,4] "
        "per_layer_slice=[1,2,2] slices=[] per_layer_speculate=[]},quantize{weight_bits=0 "
        "input_bits=8 "
        "method=minmax percentile=99.99 samples=64 weight_granularity=channel},"
        "tile-crossbar{rows=0 columns=0 "
        'slices=[] encoding=""},select-adc{'
        'converter="" type="" bits=0 samples=0 first_samples=0 last_converter="" '
        "per_layer_converter=[sar,mtj,sar] "
        "per_layer_bits=[6,1,8] per_layer_samples=[1,16,1]},share-columns{factor=0 "
        'per_layer=[16,32,128]},place{replicate=false tiles=0 speedup=0 floorplan=""}'
    )
    assert print_pipeline(parse_pipeline(pipeline)) == pipeline
    layers = crossbar_layers(compile_digits(pipeline, small_target(), digits))
    assert [n.attr("input").slices for n in layers] == [(1,) * 8, (2, 2, 2), (2, 2)]
    assert [n.attr("column_share") for n in layers] == [16, 32, 128]
    assert layers[1].attr("converter") == ConverterChoice("mtj", "mtj", 1, 16)
    graph = compile_digits(pipeline, small_target(), digits)
    assert accuracy(graph, digits) >= 0.9


def test_place_replicates_the_slowest_layers_into_spare_tiles(digits):
    pipeline = MAPPING.replace("place", "place{replicate=true}")
    layers = crossbar_layers(compile_digits(pipeline, small_target(tiles_per_chip=8), digits))
    placements = [n.attr("placement") for n in layers]
    # 8 tiles of 2 crossbars; the network takes 1 + 1 + 2: the 12 spare crossbars go to the
    # convs (64 positions x 8 slices each, against 1 x 8 for the linear layer) in turn
    assert [p.replicas for p in placements] == [7, 7, 1]
    assert placements[-1].end == 16
    assert [p.first_crossbar for p in placements] == [0, 7, 14]


@pytest.mark.parametrize(
    ("pipeline", "target", "message"),
    [
        (
            "assign-input-precision{bits=5 slice=0 speculate=false per_layer_bits=[] "
            "per_layer_slice=[]}",
            small_target(),
            "layer 0 (/features/features.0/Conv): input precision 5 is not offered by the target",
        ),
        (
            "assign-input-precision,quantize,tile-crossbar,select-adc,"
            "share-columns{factor=3 per_layer=[]}",
            small_target(),
            "layer 0 (/features/features.0/Conv): column sharing 3 is not offered with "
            "converter sar",
        ),
        (
            "assign-input-precision,quantize,tile-crossbar,select-adc,"
            "share-columns{factor=0 per_layer=[8]}",
            small_target(),
            "option per_layer has 1 entries but the model has 3 crossbar layers",
        ),
        ("tile-crossbar", small_target(), "layer 0 (/features/features.0/Conv) is not quantized"),
    ],
)
def test_illegal_mappings_are_rejected_with_a_reason(pipeline, target, message, digits):
    with pytest.raises(MappingError) as info:
        compile_digits(pipeline, target, digits)
    assert message in str(info.value)


def test_place_spills_onto_more_chips_and_fills_their_spare_tiles(digits):
    pipeline = MAPPING.replace("place", "place{replicate=true}")
    target = small_target(hierarchy=Hierarchy(crossbars_per_tile=3, tiles_per_chip=1))
    layers = crossbar_layers(compile_digits(pipeline, target, digits))
    # 4 crossbars need 2 chips of one 3-crossbar tile: the 2 spare crossbars take a copy of
    # each conv
    assert [n.attr("placement").replicas for n in layers] == [2, 2, 1]


def test_place_sizes_the_chip_to_the_network_by_default(digits):
    layers = crossbar_layers(compile_digits(MAPPING, small_target(tiles_per_chip=8), digits))
    assert [n.attr("placement").replicas for n in layers] == [1, 1, 1]
    # a tile budget on a chip sized to the network: the spare crossbars as on the fixed chip
    pipeline = MAPPING.replace("place", "place{replicate=true tiles=8}")
    layers = crossbar_layers(compile_digits(pipeline, small_target(), digits))
    assert [n.attr("placement").replicas for n in layers] == [7, 7, 1]


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("replicate=true", "sizes its chip to the network, so there are no spare tiles to fill"),
        ("replicate=true tiles=1", "the network needs 2 tiles"),
    ],
)
def test_place_refuses_a_budget_it_cannot_fill(option, message, digits):
    with pytest.raises(MappingError, match=message):
        compile_digits(MAPPING.replace("place", f"place{{{option}}}"), small_target(), digits)


def test_mapping_passes_need_a_target(digits):
    graph = import_onnx(example_path("digits-cnn"))
    with pytest.raises(MappingError, match="tile-crossbar needs a hardware target"):
        PassManager(parse_pipeline("tile-crossbar")).run(graph, Context())


def test_tunable_passes_declare_their_search_space(digits):
    from imcc.passes.registry import load_pass

    graph = compile_digits("quantize", small_target(), digits)
    ctx = Context(target=small_target(tiles_per_chip=8))  # a fixed chip: copies may fill it
    spaces = {
        name: load_pass(name)().search_space(graph, ctx)
        for name in (
            "assign-input-precision",
            "tile-crossbar",
            "share-columns",
            "select-adc",
            "place",
        )
    }
    assert spaces == {
        "assign-input-precision": {"bits": [4, 6, 8], "slice": [1, 2]},
        "tile-crossbar": {"slices": [(1,) * 8, (2, 2, 2, 2)]},
        "share-columns": {"factor": [8, 16, 32, 128]},
        "select-adc": {"converter": ["sar", "mtj"], "bits": [1, 6, 7, 8], "samples": [1, 4, 16]},
        "place": {"replicate": [False, True]},
    }
