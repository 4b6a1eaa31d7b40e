"""encode-weights (RAELLA's center+offset) and slice-weights (uniform, per layer, adaptive) on
the digits CNN and on small products: centers beat c = 0, programs stay exact, adaptive slicing
keeps its error budget, bad options are user errors with hints."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest

from imcc.backend.datapath import Statistics, chunk_products, partial_sums, product
from imcc.backend.reference import collect
from imcc.backend.simulator import CrossbarInterpreter, run_mapped
from imcc.cli import main
from imcc.costmodel.conductance import clear_cache, conductance_sums
from imcc.errors import MappingError
from imcc.examples import example_path
from imcc.frontend.datasets import load_dataset
from imcc.frontend.hw import load_target
from imcc.frontend.onnx import import_onnx
from imcc.ir.mapping import InputStreaming, WeightMapping
from imcc.ir.rebatch import rebatch
from imcc.passes.calibration import layer_products
from imcc.passes.context import Context
from imcc.passes.encode_weights import (
    EncodeWeights,
    best_centers,
    mean_abs_partial_sum,
    slice_centers,
    slice_score,
)
from imcc.passes.layers import crossbar_layers
from imcc.passes.manager import PassManager
from imcc.passes.pipeline import DEFAULT_PIPELINE, parse_pipeline
from imcc.passes.slice_weights import (
    SliceWeights,
    compositions,
    relative_error,
)
from imcc.plan import LOSSLESS, Converter, LayerPlan, graph_plan
from imcc.target import ConverterKind

HEAD = (
    "assign-input-precision{bits=8 slice=3 speculate=false per_layer_bits=[] "
    "per_layer_slice=[]},quantize,tile-crossbar"
)
ISAAC_HEAD = "assign-input-precision,quantize,tile-crossbar"
TAIL = "share-columns,place"


@functools.cache
def digits():
    return load_dataset("digits-cnn")


@functools.cache
def raella():
    return load_target("raella")


def compile_digits(mapping: str, target: str = "raella") -> tuple[object, Context]:
    """Compile the digits CNN through `mapping` (after the clean-up); return graph and context."""
    ctx = Context(target=load_target(target), options={"calibration": digits().images[:64]})
    graph = PassManager(parse_pipeline(f"{DEFAULT_PIPELINE},{mapping}")).run(
        import_onnx(example_path("digits-cnn")), ctx
    )
    return graph, ctx


@functools.cache
def centered():
    return compile_digits(f"{HEAD},encode-weights,select-adc")


# --- centers ----------------------------------------------------------------------------------


def test_the_weighted_median_is_the_best_feasible_integer_center():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 16, size=(300, 40))
    w = np.clip(rng.integers(-20, 21, size=(40, 5)) + np.array([30, -25, 0, 90, -120]), -127, 127)
    plan = LayerPlan(  # 16 rows read at a time: 3 row chunks, the last one short
        "t",
        InputStreaming(8, (1,) * 8, False, False),
        WeightMapping("differential", (4, 4), 2),
        8,
        False,
        40,
        5,
        1,
        128,
        16,
        LOSSLESS,
    )
    assert plan.chunk_bounds == ((0, 16), (16, 32), (32, 40))
    sums, inputs = chunk_products(plan, x, w)  # [P, C, N], [P, C]
    assert sums.shape == (300, 3, 5) and np.allclose(sums[0].sum(axis=0), x[0] @ w)
    assert np.array_equal(inputs[:, 2], x[:, 32:].sum(axis=1))
    sums, inputs = sums.reshape(-1, 5), inputs.reshape(-1)
    chosen = best_centers(sums, inputs, w, weight_bits=8)
    for n in range(5):  # brute force over every feasible integer center
        feasible = np.arange(w[:, n].max() - 127, w[:, n].min() + 128)
        costs = [
            mean_abs_partial_sum(sums[:, [n]], inputs, np.array([c], float))[0] for c in feasible
        ]
        assert mean_abs_partial_sum(sums[:, [n]], inputs, np.array([chosen[n]], float))[
            0
        ] == pytest.approx(min(costs))
        assert np.abs(w[:, n] - chosen[n]).max() <= 127
    zero = mean_abs_partial_sum(sums, inputs, np.zeros(5))
    after = mean_abs_partial_sum(sums, inputs, chosen.astype(float))
    assert np.all(after[[0, 1, 3, 4]] < 0.5 * zero[[0, 1, 3, 4]])  # the non-zero-mean filters


def test_slice_centers_are_the_brute_force_best_on_the_converted_sums():
    """The slices criterion: per filter the feasible center whose partial sums (every row
    chunk, input slice and weight slice) hit the ADC's extreme codes least, then have the
    smallest mean |value|; checked against every feasible center, one at a time."""
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, size=(120, 40)) * (rng.random((120, 40)) < 0.5)
    w = np.clip(rng.integers(-30, 31, size=(40, 4)) + np.array([20, -15, 0, 60]), -127, 127)
    plan = LayerPlan(  # 16 rows read at a time: 3 row chunks; 3-3-2 inputs, 4-2-1 weights
        "t",
        InputStreaming(8, (3, 3, 2), False, True),
        WeightMapping("center-offset", (4, 2, 1), 2),
        8,
        True,
        40,
        4,
        1,
        128,
        16,
        LOSSLESS,
        (0, 0, 0, 0),
    )
    codes = (-64.0, 63.0)
    start = np.array([20, -15, 0, 60])
    window = 127  # wide enough to hold every feasible center
    chosen, chosen_score = slice_centers(plan, x, w, codes, start, window)
    for n in range(4):
        feasible = range(w[:, n].max() - 127, w[:, n].min() + 128)
        keys = []
        for c in feasible:
            centers = np.zeros(4, np.int64)
            centers[n] = c
            score = slice_score(plan, x, w, centers, codes)
            keys.append((score.saturated[n], score.mean_abs[n], abs(c - start[n])))
        best = min(keys)
        picked = np.zeros(4, np.int64)
        picked[n] = chosen[n]
        score = slice_score(plan, x, w, picked, codes)
        assert (score.saturated[n], score.mean_abs[n]) == pytest.approx(best[:2])
    at_zero = slice_score(plan, x, w, np.zeros(4, np.int64), codes)
    centered = slice_score(plan, x, w, chosen, codes)
    np.testing.assert_array_equal(chosen_score.saturated, centered.saturated)  # the score kept
    np.testing.assert_array_equal(chosen_score.mean_abs, centered.mean_abs)
    assert centered.saturated.sum() < at_zero.saturated.sum()
    for n in range(4):  # never worse than c = 0 (plain differential), in the criterion's order
        assert (centered.saturated[n], centered.mean_abs[n]) <= (
            at_zero.saturated[n],
            at_zero.mean_abs[n],
        )


def test_slice_centers_stay_within_their_window_and_feasible():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 64, size=(50, 20))
    w = np.clip(rng.integers(-40, 41, size=(20, 3)) + np.array([100, -90, 5]), -127, 127)
    plan = LayerPlan(
        "t",
        InputStreaming(8, (4, 4), False, False),
        WeightMapping("center-offset", (4, 3), 2),
        8,
        True,
        20,
        3,
        1,
        128,
        128,
        LOSSLESS,
        (0, 0, 0),
    )
    start = np.array([100, -90, 5])
    chosen, _ = slice_centers(plan, x, w, None, start, 3)
    assert np.all(np.abs(chosen - np.clip(start, w.max(0) - 127, w.min(0) + 127)) <= 3)
    assert np.abs(w - chosen).max() <= 127


def test_centers_beat_c_zero_on_the_digits_cnn():
    graph, ctx = centered()
    rows = ctx.decisions.tables["encode-weights"]
    assert [r["scheme"] for r in rows] == ["center-offset"] * 3
    assert all(r["mean_ps_after"] < r["mean_ps_before"] for r in rows)
    for node in crossbar_layers(graph):
        w = graph.constant_data(node.inputs[1]).astype(np.int64)
        filters = w.reshape(w.shape[0], -1) if node.op == "conv" else w.T
        centers = np.asarray(node.attr("centers"))
        assert len(centers) == len(filters)
        assert np.abs(filters - centers[:, None]).max() <= 127


def test_centers_are_deterministic():
    first, _ = centered()
    again, _ = compile_digits(f"{HEAD},encode-weights,select-adc")
    assert [n.attr("centers") for n in crossbar_layers(first)] == [
        n.attr("centers") for n in crossbar_layers(again)
    ]


def test_a_center_offset_program_is_exact_without_converter_loss():
    graph, ctx = centered()
    target = raella()
    products = layer_products(graph, ctx, crossbar_layers(graph), samples=2, positions=256)
    sliced = 0
    for node in crossbar_layers(graph):
        plan = graph_plan(node, graph, target)
        assert plan.centers == node.attr("centers")
        got = products[node.outputs[0]]
        for group, (x, w) in enumerate(zip(got.patches, got.filters, strict=True)):
            # an ADC just wide enough for the sums these products produce, usually narrower
            # than the read's whole range: the datapath then takes no exact shortcut, and the
            # slices, the offsets w - c and the digital c * sum(x) all run
            largest = float(np.abs(partial_sums(plan, x, w, group)).max())
            bits = math.ceil(math.log2(largest + 1)) + (1 if plan.sum_range[0] < 0 else 0)
            narrow = plan.with_converter(Converter(ConverterKind.SAR, bits, range_rule="saturate"))
            sliced += not narrow.lossless
            stats = Statistics()
            y = product(narrow, x, w, group, stats=stats)
            assert stats.saturated == 0 and np.array_equal(y, got.exact(group))
            assert np.array_equal(product(plan.with_converter(LOSSLESS), x, w, group), y)
    assert sliced
    program = rebatch(PassManager(parse_pipeline(TAIL)).run(graph, ctx), 16)
    images = digits().images[:16]
    reference = collect(program, images, [program.outputs[0]])[program.outputs[0]]
    mapped = run_mapped(
        program,
        target,
        {program.inputs[0].name: images},
        CrossbarInterpreter(target, 0, lossless=True),
    )
    assert np.array_equal(mapped[program.outputs[0]], reference)


def test_offset_and_differential_drop_centers_and_retile():
    graph, ctx = compile_digits(f"{HEAD},encode-weights,encode-weights{{scheme=offset}}")
    for node in crossbar_layers(graph):
        assert node.attr("weights") == WeightMapping("offset", (4, 4), 2)
        assert "centers" not in node.attributes
    assert EncodeWeights().search_space(graph, ctx) == {
        "scheme": ["offset", "differential", "center-offset"]
    }
    assert EncodeWeights().search_space(graph, Context(target=load_target("isaac"))) == {
        "scheme": ["offset"]
    }


def test_the_cost_model_prices_the_centers_the_program_carries():
    clear_cache()
    w = np.full((16, 4), 40) + np.arange(4)  # linear [K, N]: filter n is constant 40 + n
    mapping = WeightMapping("center-offset", (4, 3), 2)
    median = conductance_sums(w, "d", mapping, 1, w.size)
    zero = conductance_sums(w, "d", mapping, 1, w.size, (0, 0, 0, 0))
    exact = conductance_sums(w, "d", mapping, 1, w.size, (40, 41, 42, 43))
    assert median.level_sum == exact.level_sum == 0.0  # the fallback: rounded medians
    assert zero.level_sum > 0  # the centers are part of the cache key
    with pytest.raises(MappingError, match="3 centers for 4 filters"):
        conductance_sums(w, None, mapping, 1, w.size, (0, 0, 0))


# --- slices -----------------------------------------------------------------------------------


def test_compositions_are_msb_first_and_widest_first():
    assert compositions(7, 2, 4) == [(4, 3), (3, 4)]
    assert compositions(8, 3, 4)[0] == (4, 3, 1)
    assert all(sum(c) == 7 and max(c) <= 4 for c in compositions(7, 3, 4))
    assert compositions(7, 1, 4) == []


def adaptive(budget: float, last_bitwise: bool = False) -> tuple[object, Context, list[dict]]:
    graph, ctx = centered()
    ctx = Context(target=ctx.target, options=ctx.options)
    spec = SliceWeights(
        adaptive=True, error_budget=budget, last_bitwise=last_bitwise, samples=4, positions=512
    )
    return spec.run(graph, ctx), ctx, ctx.decisions.tables["slice-weights"]


def test_adaptive_slicing_takes_fewer_slices_with_a_looser_budget():
    _, _, loose_rows = adaptive(0.09)
    _, _, tight_rows = adaptive(0.001)
    assert sum(len(r["slices"]) for r in loose_rows) < sum(len(r["slices"]) for r in tight_rows)
    assert all(r["within_budget"] for r in loose_rows)


@pytest.mark.parametrize("budget", [0.09, 0.005])
def test_adaptive_slicing_keeps_its_budget_on_the_calibration_data(budget):
    graph, ctx, rows = adaptive(budget)
    target = raella()
    layers = crossbar_layers(graph)
    products = layer_products(graph, ctx, layers, samples=4, positions=512, salt="slice-weights")
    for node, row in zip(layers, rows, strict=True):
        assert list(node.attr("weights").slices) == row["slices"]
        assert sum(row["slices"]) == 7 and max(row["slices"]) <= 4
        if not row["within_budget"]:
            continue
        error = relative_error(
            graph_plan(node, graph, target),
            products[node.outputs[0]],
            node.attr("weights"),
            ctx.draw_seed("slice-weights", node.outputs[0]),
        )
        assert error == pytest.approx(row["error"]) and error <= budget


def test_last_bitwise_gives_the_last_layer_one_bit_slices():
    graph, _, rows = adaptive(0.09, last_bitwise=True)
    layers = crossbar_layers(graph)
    assert layers[-1].attr("weights").slices == (1,) * 7
    assert layers[-1].attr("tiling").column_tiles == 1  # 10 filters x 7 columns
    assert rows[-1]["slices"] == [1] * 7 and "error" not in rows[-1]


def test_uniform_and_per_layer_slices_retile():
    graph, _ = compile_digits(
        f"{ISAAC_HEAD},select-adc,slice-weights{{slices=[2,2,2,2]}}", target="isaac"
    )
    assert {n.attr("weights").slices for n in crossbar_layers(graph)} == {(2, 2, 2, 2)}
    graph, _ = compile_digits(
        f"{HEAD},select-adc,slice-weights{{per_layer_slices=[4-4,4-2-2,auto]}}"
    )
    assert [n.attr("weights").slices for n in crossbar_layers(graph)][:2] == [(4, 4), (4, 2, 2)]


@pytest.mark.parametrize(
    ("passes", "target", "message", "hint"),
    [
        (
            "encode-weights{scheme=center-offset}",
            "isaac",
            "center-offset encoding needs two devices per slice",
            "schemes of isaac: offset",
        ),
        (
            "select-adc,slice-weights{slices=[4,4] adaptive=true}",
            "raella",
            "give slices or adaptive=true, not both",
            "error_budget=0.09",
        ),
        (
            "select-adc,slice-weights{per_layer_slices=[4-4,x,4-4]}",
            "raella",
            "weight slices 'x' are not widths like 4-2-2",
            "joined by '-'",
        ),
        (
            "select-adc,slice-weights{slices=[8]}",
            "raella",
            "must cover 7 bits with at most 4 bits per cell",
            "[4, 3]",
        ),
        ("slice-weights{adaptive=true}", "raella", "has no converter", "select-adc"),
    ],
)
def test_bad_options_are_mapping_errors_with_hints(passes, target, message, hint):
    with pytest.raises(MappingError) as info:
        compile_digits(f"{HEAD if target == 'raella' else ISAAC_HEAD},{passes}", target=target)
    assert message in str(info.value) and hint in (info.value.hint or "")


def test_tile_crossbar_leaves_center_offset_to_encode_weights():
    with pytest.raises(MappingError) as info:
        compile_digits("assign-input-precision,quantize,tile-crossbar{encoding=center-offset}")
    assert "encode-weights{scheme=center-offset}" in info.value.hint


# --- end to end -------------------------------------------------------------------------------

PIPELINE = (
    "canonicalize,fold-constants,fold-batchnorm,canonicalize,"
    "assign-input-precision,quantize,tile-crossbar,encode-weights,select-adc,"
    "slice-weights{adaptive=true error_budget=0.09 last_bitwise=true},"
    "share-columns,place"
)


def cli_accuracy(tmp_path, capsys, target: str, *passes: str) -> float:
    """Compile the digits CNN with the CLI and return its simulated accuracy on 160 samples."""
    program = tmp_path / f"{target}.imcir"
    assert main(["compile", "digits-cnn", "--target", target, *passes, "-o", str(program)]) == 0
    capsys.readouterr()
    assert main(["simulate", str(program), "--data", "digits-cnn", "--limit", "160", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["accuracy"]


def test_the_cli_compiles_raella_with_both_passes_and_keeps_accuracy(tmp_path, capsys):
    assert (
        main(
            [
                "compile",
                "digits-cnn",
                "--target",
                "raella",
                "--passes",
                PIPELINE,
                "--stats",
                "-o",
                str(tmp_path / "stats.imcir"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "encode-weights:" in err and "slice-weights:" in err and "mean_ps_after" in err
    ours = cli_accuracy(tmp_path, capsys, "raella", "--passes", PIPELINE)
    isaac = cli_accuracy(tmp_path, capsys, "isaac")
    assert ours >= isaac - 0.02


def test_bad_options_exit_2_from_the_cli_without_a_traceback(capsys):
    pipeline = PIPELINE.replace("adaptive=true", "slices=[4,4] adaptive=true")
    assert main(["compile", "digits-cnn", "--target", "raella", "--passes", pipeline]) == 2
    err = capsys.readouterr().err
    assert "give slices or adaptive=true, not both" in err and "hint:" in err
    assert "Traceback" not in err


def test_speculating_layers_also_bound_their_failure_share():
    """With speculation the recovered error stays small whatever the slicing; max_failures
    makes adaptive slicing pay for the re-run conversions instead."""
    head = (
        "assign-input-precision{speculate=true slices=3,3,2},quantize,tile-crossbar,"
        "encode-weights{scheme=center-offset},select-adc"
    )
    graph, ctx = compile_digits(head)
    chosen = {}
    for limit in (1.0, 0.05):
        ctx = Context(target=ctx.target, options=ctx.options)
        SliceWeights(adaptive=True, max_failures=limit, samples=4, positions=512).run(graph, ctx)
        chosen[limit] = ctx.decisions.tables["slice-weights"]
    loose, strict = chosen[1.0], chosen[0.05]
    assert sum(len(r["slices"]) for r in strict) > sum(len(r["slices"]) for r in loose)
    assert all(r["failures"] <= 0.05 for r in strict if r["within_budget"])
    assert any(r["failures"] > 0.05 for r in loose)


def test_conversions_objective_takes_the_fewest_conversions_within_the_budget():
    """objective=conversions against brute force: every slicing of every count priced on the
    pass's own calibration products; the choice makes the fewest conversions (recoveries
    included) of those within the error budget, and never more than the fewest-slices rule."""
    head = (
        "assign-input-precision{speculate=true slices=3,3,2},quantize,tile-crossbar,"
        "encode-weights{scheme=center-offset},select-adc"
    )
    graph, ctx = compile_digits(head)
    target = raella()
    runs = {}
    for objective in ("slices", "conversions"):
        ctx = Context(target=ctx.target, options=ctx.options)
        spec = SliceWeights(adaptive=True, objective=objective, samples=4, positions=512)
        runs[objective] = (spec.run(graph, ctx), ctx.decisions.tables["slice-weights"])
    layers = crossbar_layers(graph)
    products = layer_products(graph, ctx, layers, samples=4, positions=512, salt="slice-weights")
    for index, node in enumerate(layers):
        plan = graph_plan(node, graph, target)
        seed = ctx.draw_seed("slice-weights", node.outputs[0])
        made = {}
        for count in range(2, 8):
            for slices in compositions(7, count, 4):
                stats = Statistics()
                mapping = WeightMapping("center-offset", slices, 2)
                error = relative_error(plan, products[node.outputs[0]], mapping, seed, stats)
                if error <= 0.09:
                    made[slices] = stats.conversions + stats.recoveries
        chosen = tuple(runs["conversions"][1][index]["slices"])
        fewest_slices = tuple(runs["slices"][1][index]["slices"])
        assert made[chosen] == min(made.values())
        assert made[chosen] <= made[fewest_slices]
        assert runs["conversions"][1][index]["conversions"] == made[chosen]


def test_per_tensor_weight_scales_share_one_grid():
    from imcc.passes.quantize import quantize_weights

    rng = np.random.default_rng(4)
    w = (
        rng.normal(size=(6, 3, 3, 3))
        * np.array([1.0, 0.5, 0.1, 2.0, 0.3, 1.5])[:, None, None, None]
    )
    per_channel, _ = quantize_weights(w, 0, 8)
    per_tensor, tensor_scales = quantize_weights(w, 0, 8, "tensor")
    assert np.allclose(tensor_scales, np.abs(w).max() / 127)
    assert np.all(np.abs(per_channel).reshape(6, -1).max(axis=1) == 127)  # each channel full
    assert np.abs(per_tensor).max() == 127 and np.abs(per_tensor[2]).max() < 20  # small filter
    np.testing.assert_allclose(
        per_tensor * tensor_scales[:, None, None, None], w, atol=tensor_scales[0] / 2 + 1e-12
    )


def test_the_quantize_pass_takes_the_weight_grid_from_its_option():
    graph, _ = compile_digits(f"{HEAD.replace('quantize', 'quantize{weight_granularity=tensor}')}")
    for node in crossbar_layers(graph):
        scales = graph.constant_data(
            next(
                n for n in graph.nodes if n.op == "dequantize" and node.outputs[0] in n.inputs
            ).inputs[1]
        )
        x_scale = next(n for n in graph.nodes if n.outputs[0] == node.inputs[0]).attr("scale")
        np.testing.assert_allclose(scales / x_scale, scales[0] / x_scale, rtol=1e-6)
