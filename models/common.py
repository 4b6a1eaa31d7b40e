"""What the reference-model scripts share: top-1 accuracy and the ONNX export.

Every reference network is exported the same way: the TorchScript exporter at opset 13, in
eval mode without constant folding (so BatchNormalization stays its own node for imcc's
fold-batchnorm), batch 1, input `image`, output `logits`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

EVAL_BATCH = 1000
"""Images per forward when measuring accuracy."""


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Return the top-1 accuracy of `model` in eval mode on (x, y)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH].to(device))
            correct += int((logits.argmax(1).cpu() == y[start : start + EVAL_BATCH]).sum())
    return correct / max(len(x), 1)


def export_onnx(model: nn.Module, path: str | Path, example: torch.Tensor) -> Path:
    """Write `model` (moved to the CPU, eval mode) as ONNX, traced on `example` (one input of
    the network's shape); return the path."""
    model = model.cpu().eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=13,
            input_names=["image"],
            output_names=["logits"],
            do_constant_folding=False,
            training=torch.onnx.TrainingMode.EVAL,
        )
    return path
