"""Building blocks shared by the backbones: pointwise MLPs, normalisation, activation."""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}
NORMS = ("none", "instance_norm", "layer_norm")


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channel axis of ``(batch, channel, lat, lon)`` tensors.

    Parameters
    ----------
    channels : int
        Size of the channel axis.
    eps : float
        Added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, channel, lat, lon) -> (batch, channel, lat, lon)``."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``"none"``, ``"instance_norm"`` (per channel over space) or ``"layer_norm"`` (over channels)."""
    if kind == "none":
        return nn.Identity()
    if kind == "instance_norm":
        return nn.InstanceNorm2d(channels, eps=1e-6, affine=True, track_running_stats=False)
    if kind == "layer_norm":
        return ChannelLayerNorm(channels)
    raise ValueError(f"unknown normalisation {kind!r}; use one of {', '.join(NORMS)}")


def _channel_mlp(x, w1, b1, w2, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward pass of :class:`_ChannelMLP`: its output and the pre-activation."""
    z = torch.baddbmm(
        b1.to(x.dtype)[None, :, None].expand(x.shape[0], -1, -1),
        w1.to(x.dtype).expand(x.shape[0], -1, -1),
        x,
    )
    h = _activate(z, activation)
    return torch.bmm(w2.to(h.dtype).expand(x.shape[0], -1, -1), h), z


def _row_mlp(x, w1, b1, w2, b2, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward pass of :class:`_RowMLP`: its output and the pre-activation."""
    z = torch.addmm(b1.to(x.dtype), x, w1.to(x.dtype).t())
    h = _activate(z, activation)
    return torch.addmm(b2.to(h.dtype), h, w2.to(h.dtype).t()), z


def _wants_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records an operation on ``tensors`` (False under no_grad/inference mode).

    Without a gradient the MLPs run their forward pass as plain operations,
    not through their autograd functions: the same result, and one that
    ``torch.vmap`` can batch (a multi-checkpoint ensemble steps its models
    as one, :mod:`forecast.models.stacked`).
    """
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class _ChannelMLP(torch.autograd.Function):
    """``W2 @ act(W1 @ x + b1)`` over the channels of ``(batch, channel, points)`` tensors.

    Saves only the input and the pre-activation for the backward pass and
    recomputes the activation there: one hidden-size tensor less per MLP than
    two convolutions and an activation module, for an elementwise recompute.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, activation: str):
        y, z = _channel_mlp(x, w1, b1, w2, activation)
        ctx.save_for_backward(x, z, w1, w2)
        ctx.activation = activation
        return y

    @staticmethod
    def backward(ctx, grad):
        x, z, w1, w2 = ctx.saved_tensors
        dtype = z.dtype
        grad = grad.to(dtype)
        h = _activate(z, ctx.activation)
        batch = x.shape[0]
        grad_w2 = torch.bmm(grad, h.transpose(1, 2)).sum(0)
        grad_h = torch.bmm(w2.to(dtype).t().expand(batch, -1, -1), grad)
        del h
        grad_z = _activate_backward(grad_h, z, ctx.activation)
        del grad_h
        grad_w1 = torch.bmm(grad_z, x.to(dtype).transpose(1, 2)).sum(0)
        grad_b1 = grad_z.sum(dim=(0, 2))
        grad_x = torch.bmm(w1.to(dtype).t().expand(batch, -1, -1), grad_z)
        return (
            grad_x.to(x.dtype),
            grad_w1.to(w1.dtype),
            grad_b1.to(w1.dtype),
            grad_w2.to(w2.dtype),
            None,
        )


class _RowMLP(torch.autograd.Function):
    """``act(x @ W1.T + b1) @ W2.T + b2`` on ``(rows, channel)`` tensors, recomputing the activation in backward."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, activation: str):
        y, z = _row_mlp(x, w1, b1, w2, b2, activation)
        ctx.save_for_backward(x, z, w1, w2)
        ctx.activation = activation
        return y

    @staticmethod
    def backward(ctx, grad):
        x, z, w1, w2 = ctx.saved_tensors
        dtype = z.dtype
        grad = grad.to(dtype)
        h = _activate(z, ctx.activation)
        grad_w2 = grad.t() @ h
        grad_b2 = grad.sum(0)
        del h
        grad_z = _activate_backward(grad @ w2.to(dtype), z, ctx.activation)
        grad_w1 = grad_z.t() @ x.to(dtype)
        grad_b1 = grad_z.sum(0)
        grad_x = grad_z @ w1.to(dtype)
        cast = w1.dtype
        return (
            grad_x.to(x.dtype),
            grad_w1.to(cast),
            grad_b1.to(cast),
            grad_w2.to(cast),
            grad_b2.to(cast),
            None,
        )


class TokenMLP(nn.Module):
    """Two linear layers with an activation on the last axis of ``(..., channel)`` tokens.

    Same parameters as ``nn.Sequential(nn.Linear, activation, nn.Linear)``;
    the backward pass recomputes the activation instead of storing it.
    """

    def __init__(
        self, in_features: int, hidden_features: int, out_features: int, activation: str = "gelu"
    ):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features) -> (..., out_features)``."""
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        fc1, fc2 = self.fc1, self.fc2
        if _wants_grad(rows, fc1.weight, fc1.bias, fc2.weight, fc2.bias):
            y = _RowMLP.apply(rows, fc1.weight, fc1.bias, fc2.weight, fc2.bias, self.activation)
        else:
            y = _row_mlp(rows, fc1.weight, fc1.bias, fc2.weight, fc2.bias, self.activation)[0]
        return y.reshape(*shape[:-1], -1)


def _activate(z: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "gelu":
        return torch.nn.functional.gelu(z)
    if activation == "relu":
        return torch.relu(z)
    if activation == "silu":
        return torch.nn.functional.silu(z)
    return z


def _activate_backward(grad: torch.Tensor, z: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "gelu":
        return torch.ops.aten.gelu_backward(grad, z)
    if activation == "relu":
        return grad * (z > 0)
    if activation == "silu":
        sig = torch.sigmoid(z)
        return grad * sig * (1 + z * (1 - sig))
    return grad


class PointwiseMLP(nn.Module):
    """Two 1x1 convolutions with an activation between: a per-grid-point MLP over channels.

    Parameters
    ----------
    in_channels, hidden_channels, out_channels : int
        Channel sizes.
    activation : str
        Key of :data:`ACTIVATIONS`.
    gain : float
        Variance gain of the output layer's initialisation (halve it when the
        output is added to a skip connection).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        activation: str = "gelu",
        gain: float = 1.0,
    ):
        super().__init__()
        self.fc1 = nn.Conv2d(in_channels, hidden_channels, 1, bias=True)
        self.activation = activation
        self.fc2 = nn.Conv2d(hidden_channels, out_channels, 1, bias=False)
        nn.init.normal_(self.fc1.weight, std=math.sqrt(2.0 / in_channels))
        nn.init.zeros_(self.fc1.bias)  # type: ignore[arg-type]  # made with bias=True
        nn.init.normal_(self.fc2.weight, std=math.sqrt(gain / hidden_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, lat, lon) -> (batch, out_channels, lat, lon)``."""
        batch, _, nlat, nlon = x.shape
        if torch.is_autocast_enabled(x.device.type):
            x = x.to(torch.get_autocast_dtype(x.device.type))
        w1 = self.fc1.weight.flatten(1)
        w2 = self.fc2.weight.flatten(1)
        flat = x.reshape(batch, x.shape[1], nlat * nlon)
        if _wants_grad(flat, w1, self.fc1.bias, w2):
            y = _ChannelMLP.apply(flat, w1, self.fc1.bias, w2, self.activation)
        else:
            y = _channel_mlp(flat, w1, self.fc1.bias, w2, self.activation)[0]
        return y.reshape(batch, -1, nlat, nlon)


def zero_output_layer(network: nn.Module) -> nn.Module:
    """Zero the weights (and bias) of ``network``'s output layer, so that it starts at 0.

    The output layer is the last ``nn.Conv2d`` or ``nn.Linear`` in module order:
    the projection or decoder of every registered backbone (FNO, SFNO,
    FourCastNet v2's SFNO, AFNO), which none follows with a parametrised layer.
    Its weight still gets a gradient (the features it maps are not zero), so
    training moves it from the first step on; the layers before it follow.

    Returns
    -------
    nn.Module
        ``network``, changed in place.

    Raises
    ------
    ValueError
        ``network`` has no convolution or linear layer.
    """
    layers = [m for m in network.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if not layers:
        raise ValueError(f"{type(network).__name__} has no convolution or linear output layer")
    with torch.no_grad():
        layers[-1].weight.zero_()
        if layers[-1].bias is not None:
            layers[-1].bias.zero_()
    return network


def pointwise_linear(
    in_channels: int, out_channels: int, gain: float = 1.0, bias: bool = False
) -> nn.Conv2d:
    """A 1x1 convolution with variance-preserving initialisation (times ``gain``)."""
    layer = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
    nn.init.normal_(layer.weight, std=math.sqrt(gain / in_channels))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


def pointwise_stack(
    in_channels: int,
    hidden: int,
    out_channels: int,
    layers: int,
    activation: str,
    output_bias: bool = False,
) -> nn.Module:
    """Encoder/decoder MLP of 1x1 convolutions: ``layers`` hidden layers of width ``hidden``.

    ``layers == 0`` gives a single linear map. Hidden layers have a bias; the
    output layer has one only with ``output_bias``. Acts on
    ``(batch, in_channels, lat, lon)`` and returns ``(batch, out_channels, lat, lon)``;
    with one hidden layer the parameters are ``0.weight``, ``0.bias`` and ``2.weight``.
    """
    if layers == 0:
        return pointwise_linear(in_channels, out_channels, bias=output_bias)
    modules: list[nn.Module] = []
    current = in_channels
    for _ in range(layers):
        modules += [
            pointwise_linear(current, hidden, gain=2.0, bias=True),
            ACTIVATIONS[activation](),
        ]
        current = hidden
    modules.append(pointwise_linear(current, out_channels, bias=output_bias))
    return nn.Sequential(*modules)
