"""The NASWOT score: a training-free accuracy proxy of an untrained network.

Mellor, Turner, Storkey and Crowley, "Neural Architecture Search without Training", ICML 2021
(arXiv 2006.04647), §3: a mini-batch of N inputs x_i gives each input a binary code c_i, one
bit per rectified unit of the network (1 where the unit's input is positive). Two inputs the
network separates well have codes far apart in Hamming distance d_H. With N_A the number of
rectified units, the kernel

    K_H[i, j] = N_A - d_H(c_i, c_j)

is computed, and the score is log |det K_H|: networks whose activation patterns tell the batch's
inputs apart score higher, and the score ranks untrained architectures by how well they train.
XPert (Moitra et al., DAC 2023, arXiv 2303.17646) guards its phase-1 channel search with it.

Summed over the ReLU layers, K_H = sum_l (C_l C_l^T + (1 - C_l)(1 - C_l)^T), C_l the N x n_l
code matrix of layer l: agreements on ones plus agreements on zeros. The determinant is taken
in float64 by `slogdet`; a batch with two inputs the network cannot tell apart has a singular
kernel and scores -inf. Batch normalisation normalises with the batch's own statistics (the
network is in training mode while it is scored, as an untrained network is used), and
nothing is updated: the score is a pure function of the network and the batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def hamming_kernel(codes: list[np.ndarray] | list[torch.Tensor]) -> np.ndarray:
    """Return K_H (N x N, float64) of binary codes given per layer as N x n_l arrays."""
    total = None
    for layer in codes:
        c = torch.as_tensor(layer).reshape(len(layer), -1).to(torch.float64)
        k = c @ c.T + (1 - c) @ (1 - c).T
        total = k if total is None else total + k
    if total is None:
        raise ValueError("no rectified units: the NASWOT kernel needs at least one ReLU")
    return total.numpy()


def log_det(kernel: np.ndarray) -> float:
    """Return log |det kernel| (-inf for a singular kernel)."""
    sign, value = np.linalg.slogdet(kernel)
    return float(value) if sign != 0 else -math.inf


def relu_codes(model: nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
    """Return the binary codes (input > 0) of every `nn.ReLU` of `model` on `batch`, in the
    order the ReLUs run, each N x n_l (uint8)."""
    codes: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        codes.append((inputs[0].detach() > 0).reshape(len(inputs[0]), -1).to(torch.uint8))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    was_training = model.training
    saved = {name: buffer.clone() for name, buffer in model.named_buffers()}
    try:
        model.train()
        with torch.no_grad():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        with torch.no_grad():  # batch norm's statistics moved; restore them
            buffers = dict(model.named_buffers())
            for name, value in saved.items():
                buffers[name].copy_(value)
    return codes


def naswot_score(model: nn.Module, batch: torch.Tensor) -> float:
    """Return the NASWOT score log |K_H| of `model` on `batch` (N inputs, N >= 2)."""
    if len(batch) < 2:
        raise ValueError("the NASWOT score needs a batch of at least two inputs")
    return log_det(hamming_kernel(relu_codes(model, batch)))
