"""The NASWOT score (search/naswot.py) against hand-computed kernels and determinants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from imcc.models.vgg_cifar import VggCifar, conv_widths
from imcc.search.naswot import hamming_kernel, log_det, naswot_score, relu_codes


def identity_relu() -> nn.Module:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(2))
        layer.bias.zero_()
    return nn.Sequential(layer, nn.ReLU())


def test_hand_computed_case():
    # codes (1,1), (1,0), (0,0): N_A = 2, K = N_A - Hamming = [[2,1,0],[1,2,1],[0,1,2]],
    # det = 2 * (4 - 1) - 1 * (2 - 0) = 4
    batch = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    codes = relu_codes(identity_relu(), batch)
    assert [c.tolist() for c in codes] == [[[1, 1], [1, 0], [0, 0]]]
    assert hamming_kernel(codes).tolist() == [[2, 1, 0], [1, 2, 1], [0, 1, 2]]
    assert naswot_score(identity_relu(), batch) == pytest.approx(math.log(4.0), abs=1e-12)


def test_kernel_is_units_minus_hamming_over_layers():
    rng = np.random.default_rng(0)
    layers = [rng.integers(0, 2, (5, n)) for n in (3, 7, 4)]
    kernel = hamming_kernel(layers)
    joined = np.concatenate(layers, axis=1)
    for i, j in itertools.product(range(5), repeat=2):
        assert kernel[i, j] == joined.shape[1] - np.sum(joined[i] != joined[j])


def test_indistinguishable_inputs_score_minus_infinity():
    batch = torch.tensor([[1.0, 2.0], [2.0, 1.0], [-1.0, -1.0]])  # the first two share a code
    assert naswot_score(identity_relu(), batch) == -math.inf
    assert log_det(np.eye(3)) == 0.0


def test_score_is_pure_and_leaves_the_network_as_it_was():
    torch.manual_seed(0)
    model = VggCifar("vgg11", widths=[8, 8, 16, 16, 16, 16, 16, 16]).eval()
    batch = torch.rand(16, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = naswot_score(model, batch)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert naswot_score(model, batch) == first
    assert math.isfinite(first)
    # 8 ReLU layers of the given widths at 32, 16, 8, 8, 4, 4, 2, 2 pixels
    units = sum(c.shape[1] for c in relu_codes(model, batch))
    assert units == 8 * 1024 + 8 * 256 + 16 * 64 * 2 + 16 * 16 * 2 + 16 * 4 * 2


def test_per_layer_widths():
    assert conv_widths("vgg16") == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert conv_widths("vgg16", 0.5)[:2] == [32, 32]
    widths = [128, 128, 256, 64, 64, 256, 512, 64, 256, 512, 512, 128, 128]
    model = VggCifar("vgg16", widths=widths)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == widths
    assert model.classifier[-1].in_features == 128
    with pytest.raises(ValueError, match="13 convs"):
        VggCifar("vgg16", widths=[64] * 12)
