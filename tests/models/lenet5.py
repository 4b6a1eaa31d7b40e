"""LeNet5 of advertorch 0.2.3 (Conv32-Conv64-FC200-FC10) and its export to ONNX.

advertorch itself does not import on torch 2, so the module is defined here with the same layer
names as `advertorch.test_utils.LeNet5`; the state dict `mnist_lenet5_clntrained.pt` of the
advertorch sdist (98.89% on MNIST t10k) loads into it strictly. Usage:

    python tests/models/lenet5.py WEIGHTS.pt OUT.onnx

The export uses torch's TorchScript-based exporter (`dynamo=False`, which works offline; the
dynamo exporter needs onnxscript). If it is unavailable, the same graph is written with
onnx.helper from the state dict.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EXPECTED_KEYS = {
    "conv1.weight": (32, 1, 3, 3),
    "conv1.bias": (32,),
    "conv2.weight": (64, 32, 3, 3),
    "conv2.bias": (64,),
    "linear1.weight": (200, 3136),
    "linear1.bias": (200,),
    "linear2.weight": (10, 200),
    "linear2.bias": (10,),
}
OPSET = 13


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load the advertorch state dict and check its keys and shapes."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != EXPECTED_KEYS:
        raise ValueError(f"{path}: unexpected LeNet5 state dict {shapes}")
    return {k: v.numpy() for k, v in state.items()}


def make_module(state: dict[str, np.ndarray]):
    """Return the torch LeNet5 module with the given weights, in eval mode."""
    import torch
    from torch import nn

    class LeNet5(nn.Module):
        """advertorch.test_utils.LeNet5 with the same layer names."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1, stride=1)
            self.relu1 = nn.ReLU(inplace=True)
            self.maxpool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1, stride=1)
            self.relu2 = nn.ReLU(inplace=True)
            self.maxpool2 = nn.MaxPool2d(2)
            self.linear1 = nn.Linear(7 * 7 * 64, 200)
            self.relu3 = nn.ReLU(inplace=True)
            self.linear2 = nn.Linear(200, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.maxpool1(self.relu1(self.conv1(x)))
            out = self.maxpool2(self.relu2(self.conv2(out)))
            out = torch.flatten(out, 1)  # advertorch: out.view(out.size(0), -1)
            out = self.relu3(self.linear1(out))
            return self.linear2(out)

    module = LeNet5()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return module.eval()


def export_with_torch(state: dict[str, np.ndarray], out: Path) -> None:
    """Export with torch.onnx (TorchScript exporter), batch dimension symbolic."""
    import torch

    module = make_module(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        torch.onnx.export(
            module,
            (torch.zeros(1, 1, 28, 28),),
            str(out),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def build_with_helper(state: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Build the same graph with onnx.helper (fallback when torch cannot export)."""
    window = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1]}
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], **window),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], **pool),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], **window),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], **pool),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "linear1.weight", "linear1.bias"], ["g1"], transB=1),
        helper.make_node("Relu", ["g1"], ["r3"]),
        helper.make_node("Gemm", ["r3", "linear2.weight", "linear2.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "lenet5",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v, k) for k, v in state.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    return model


def main(argv: list[str]) -> int:
    """Export the LeNet5 weights at argv[0] to the ONNX file argv[1]."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    state = load_state_dict(argv[0])
    out = Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        export_with_torch(state, out)
    except Exception as exc:  # any exporter failure selects the fallback
        print(f"torch.onnx.export failed ({exc}); building the graph with onnx.helper")
        onnx.save(build_with_helper(state), out)
    onnx.checker.check_model(onnx.load(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
