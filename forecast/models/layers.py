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
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Conv2d(hidden_channels, out_channels, 1, bias=False)
        nn.init.normal_(self.fc1.weight, std=math.sqrt(2.0 / in_channels))
        nn.init.zeros_(self.fc1.bias)
        nn.init.normal_(self.fc2.weight, std=math.sqrt(gain / hidden_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, lat, lon) -> (batch, out_channels, lat, lon)``."""
        return self.fc2(self.act(self.fc1(x)))


def pointwise_linear(
    in_channels: int, out_channels: int, gain: float = 1.0, bias: bool = False
) -> nn.Conv2d:
    """A 1x1 convolution with variance-preserving initialisation (times ``gain``)."""
    layer = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
    nn.init.normal_(layer.weight, std=math.sqrt(gain / in_channels))
    if bias:
        nn.init.zeros_(layer.bias)
    return layer
