"""Backbones and their registry.

>>> from forecast.grid import Grid
>>> from forecast.models import build_model
>>> model = build_model("sfno", 4, 4, Grid.equiangular(16, 32), embed_dim=16, num_layers=2)

``MODELS`` maps a name to a :class:`~forecast.models.registry.ModelSpec`
(hyperparameter class, builder, description). ``PRESETS`` holds published
configurations; :func:`preset_parameter_count` counts their parameters on the
meta device, without allocating them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from forecast.errors import ConfigError, GridError
from forecast.grid import Grid
from forecast.models import afno, fno, sfno, sfno_nonlinear
from forecast.models.registry import (
    HParams,
    ModelSpec,
    describe_hparams,
    hparams_to_dict,
    validate_hparams,
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec for spec in (sfno.SPEC, sfno_nonlinear.SPEC, afno.SPEC, fno.SPEC)
}

__all__ = [
    "MODELS",
    "PRESETS",
    "HParams",
    "ModelSpec",
    "Preset",
    "build_model",
    "build_preset",
    "count_parameters",
    "describe_hparams",
    "get_spec",
    "hparams_to_dict",
    "model_names",
    "preset_parameter_count",
    "validate_hparams",
]


def model_names() -> list[str]:
    """Names of the registered backbones, sorted."""
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``.

    Raises
    ------
    ConfigError
        For an unknown name, listing the known ones.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}", hint=f"use one of {', '.join(model_names())}")
    return MODELS[name]


def build_model(
    name: str, in_channels: int, out_channels: int, grid: Grid, **hparams: Any
) -> nn.Module:
    """Build a backbone by name.

    Parameters
    ----------
    name : str
        One of :func:`model_names` (``"sfno"``, ``"afno"``, ``"fno"``).
    in_channels, out_channels : int
        Channels of the input ``(batch, in_channels, nlat, nlon)`` and of the
        output ``(batch, out_channels, nlat, nlon)``.
    grid : Grid
        The grid of input and output.
    **hparams
        Hyperparameters of that backbone (see ``MODELS[name].hparams``).

    Raises
    ------
    ConfigError
        Unknown name, unknown or invalid hyperparameter, bad channel count.
    GridError
        A global-only backbone (SFNO) asked for a regional grid.
    """
    spec = get_spec(name)
    for label, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{label} must be a positive integer, got {value!r}")
    if not isinstance(grid, Grid):
        raise ConfigError(
            f"grid must be a forecast.grid.Grid, got {type(grid).__name__}",
            hint="use Grid.equiangular(nlat, nlon)",
        )
    if spec.global_only and not grid.is_global:
        raise GridError(
            f"model {name!r} needs a global equiangular or legendre-gauss grid, got {grid.describe()}",
            hint="use the afno or fno model for regional grids",
        )
    validated = validate_hparams(spec, hparams)
    try:
        return spec.build(in_channels, out_channels, grid, validated)
    except (RuntimeError, MemoryError) as err:
        if not _out_of_memory(err):
            raise
        raise ConfigError(
            f"the {name} model with {_size_hparams(validated)} does not fit in memory"
            f"{_parameter_size(spec, in_channels, out_channels, grid, validated)}",
            hint="lower embed_dim or num_layers in --hparams (or the config's model section)",
        ) from err


def _out_of_memory(err: BaseException) -> bool:
    """Whether an error is an allocation failure (CPU allocator, CUDA, Python)."""
    text = str(err).lower()
    return (
        isinstance(err, MemoryError) or "out of memory" in text or "can't allocate memory" in text
    )


def _size_hparams(hparams: HParams) -> str:
    values = hparams_to_dict(hparams)
    shown = [
        f"{key}={values[key]}" for key in ("embed_dim", "num_layers", "depth") if key in values
    ]
    return ", ".join(shown) or "these hyperparameters"


def _parameter_size(
    spec: ModelSpec, in_channels: int, out_channels: int, grid: Grid, hparams: HParams
) -> str:
    """`` (N parameters, X GB)`` from a build on the meta device, or empty when that fails too."""
    try:
        with torch.device("meta"):
            model = spec.build(in_channels, out_channels, grid, hparams)
    except Exception:  # only for the message
        return ""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return f" ({count_parameters(model):,} parameters, {size / 1e9:.3g} GB of weights alone)"


@dataclass(frozen=True)
class Preset:
    """A published configuration.

    Attributes
    ----------
    model : str
        Registry name.
    in_channels, out_channels : int
        Channel counts.
    grid_kind : str
        Grid kind.
    shape : (int, int)
        ``(nlat, nlon)``.
    hparams : dict
        Hyperparameters.
    source : str
        Where the figures come from.
    """

    model: str
    in_channels: int
    out_channels: int
    grid_kind: str
    shape: tuple[int, int]
    hparams: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def grid(self) -> Grid:
        """The preset's grid (a regional kind is built as an equally spaced rectangle)."""
        return _preset_grid(self)


PRESETS: dict[str, Preset] = {
    # Bonev et al. 2023 (arXiv 2306.03838), FourCastNet v2: 0.25 deg ERA5 on 721 x 1440, 73 channels,
    # embed 384, 8 blocks, scale factor 3 (makani config "sfno_linear_73chq_sc3_layers8_edim384").
    "fourcastnet-v2-sfno": Preset(
        "sfno",
        73,
        73,
        "equiangular",
        (721, 1440),
        {
            "embed_dim": 384,
            "num_layers": 8,
            "scale_factor": 3,
            "normalization": "instance_norm",
            "encoder_layers": 1,
            "big_skip": True,
        },
        "Bonev et al. 2023 (arXiv 2306.03838), section 5 and appendix; makani sfno_linear_73chq_sc3_layers8_edim384",
    ),
    # Pathak et al. 2022 (arXiv 2202.11214): 720 x 1440 (ERA5 without the south-pole row), 20 channels,
    # patch 8, embed 768, depth 12, 8 blocks, MLP ratio 4, sparsity 0.01.
    "fourcastnet-afno": Preset(
        "afno",
        20,
        20,
        "regional",
        (720, 1440),
        {
            "patch_size": 8,
            "embed_dim": 768,
            "depth": 12,
            "num_blocks": 8,
            "mlp_ratio": 4.0,
            "sparsity_threshold": 0.01,
            "mode_truncation": "fourcastnet",
        },
        "Pathak et al. 2022 (arXiv 2202.11214), section 3; FourCastNet repository config/AFNO.yaml (afno_backbone)",
    ),
    # NVIDIA's FourCastNet v2-small as ECMWF's ai-models-fourcastnetv2 runs it: 721 x 1440, 73 channels,
    # non-linear spectral filter (3 complex layers), embed 256, 12 blocks, scale factor 6, learned
    # positional embedding, big skip; the defaults of SFNONonlinearHParams.
    "fourcastnet-v2-small": Preset(
        "sfno-nonlinear",
        73,
        73,
        "equiangular",
        (721, 1440),
        {},
        "ai-models-fourcastnetv2 0.0.3, FourierNeuralOperatorNet defaults; Bonev et al. 2023 (arXiv 2306.03838)",
    ),
}


def _preset_grid(preset: Preset) -> Grid:
    if preset.grid_kind == "regional":
        nlat, nlon = preset.shape  # e.g. FourCastNet: 90 .. -89.75 every 0.25 deg
        latitude = 90.0 - 180.0 * np.arange(nlat) / nlat
        longitude = 360.0 * np.arange(nlon) / nlon
        return Grid("regional", latitude, longitude)
    return Grid.from_kind(preset.grid_kind, *preset.shape)


def build_preset(name: str, device: str | torch.device = "meta") -> nn.Module:
    """Build a preset, by default on the meta device (shapes only, no memory)."""
    if name not in PRESETS:
        raise ConfigError(
            f"unknown preset {name!r}", hint=f"use one of {', '.join(sorted(PRESETS))}"
        )
    preset = PRESETS[name]
    grid = _preset_grid(preset)  # outside the device context: grids are built with numpy
    if torch.device(device).type != "meta":
        # some transform tables are made from numpy arrays, which a device context does not
        # move; built on the CPU and moved, every buffer lands on the device
        model = build_model(
            preset.model, preset.in_channels, preset.out_channels, grid, **preset.hparams
        )
        return model.to(device)
    with torch.device(device):
        return build_model(
            preset.model, preset.in_channels, preset.out_channels, grid, **preset.hparams
        )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (a complex weight stored as a real pair counts twice)."""
    return sum(
        p.numel() * (2 if p.is_complex() else 1) for p in model.parameters() if p.requires_grad
    )


def preset_parameter_count(name: str) -> int:
    """Parameter count of a preset, built on the meta device."""
    return count_parameters(build_preset(name, "meta"))
