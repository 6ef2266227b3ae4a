"""The hand-written backward passes of forecast/models/layers.py against finite differences."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from forecast.models.layers import PointwiseMLP, TokenMLP, _ChannelMLP, _RowMLP

ACTIVATIONS = ["gelu", "relu", "silu", "identity"]


def _inputs(*shapes: tuple[int, ...], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_()
        for shape in shapes
    ]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_channel_mlp_backward_matches_finite_differences(activation):
    # x (batch, channel, points), w1 (hidden, channel), b1 (hidden,), w2 (out, hidden)
    x, w1, b1, w2 = _inputs((2, 3, 5), (4, 3), (4,), (2, 4))
    if activation == "relu":  # keep pre-activations away from the kink, where differences jump
        with torch.no_grad():
            z = torch.einsum("hc,bcp->bhp", w1, x) + b1[None, :, None]
            b1 += torch.where(z.abs().amin(dim=(0, 2)) < 0.05, 0.2, 0.0)
    assert gradcheck(
        lambda *a: _ChannelMLP.apply(*a, activation), (x, w1, b1, w2), eps=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_row_mlp_backward_matches_finite_differences(activation):
    # x (rows, in), w1 (hidden, in), b1 (hidden,), w2 (out, hidden), b2 (out,)
    x, w1, b1, w2, b2 = _inputs((6, 3), (5, 3), (5,), (2, 5), (2,), seed=1)
    if activation == "relu":
        with torch.no_grad():
            z = x @ w1.t() + b1
            b1 += torch.where(z.abs().amin(dim=0) < 0.05, 0.2, 0.0)
    assert gradcheck(
        lambda *a: _RowMLP.apply(*a, activation), (x, w1, b1, w2, b2), eps=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("activation", ["gelu", "silu"])
def test_modules_equal_their_plain_torch_twins_forward_and_backward(activation):
    """PointwiseMLP and TokenMLP against conv/linear + activation modules with the same weights."""
    torch.manual_seed(0)
    act = {"gelu": torch.nn.GELU(), "silu": torch.nn.SiLU()}[activation]
    pointwise = PointwiseMLP(3, 8, 2, activation=activation)
    reference = torch.nn.Sequential(pointwise.fc1, act, pointwise.fc2)
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    ours, theirs = pointwise(x), reference(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(ours)
    grads = torch.autograd.grad((ours * weights).sum(), [x, *pointwise.parameters()])
    expected = torch.autograd.grad((theirs * weights).sum(), [x, *pointwise.parameters()])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    token = TokenMLP(3, 8, 2, activation=activation)
    reference = torch.nn.Sequential(token.fc1, act, token.fc2)
    tokens = torch.randn(2, 7, 3, requires_grad=True)
    ours, theirs = token(tokens), reference(tokens)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(ours.square().sum(), [tokens, *token.parameters()])
    expected = torch.autograd.grad(theirs.square().sum(), [tokens, *token.parameters()])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
