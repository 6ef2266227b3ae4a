"""FourCastNet v2-small (NVIDIA's SFNO with the non-linear filter) into a checkpoint of ours.

The files, as ECMWF's ``ai-models-fourcastnetv2`` plugin fetches them:
``weights.tar`` (``model_state`` of ``FourierNeuralOperatorNet`` saved under
``DistributedDataParallel``), ``global_means.npy`` and ``global_stds.npy``
(shape ``(1, 73, 1, 1)``). The network maps the normalised state at ``t`` to
the normalised state at ``t + 6 h`` on the 721 x 1440 equiangular grid: no
time forcings, no residual.

Read off the weights: ``embed_dim``, ``num_layers``, ``spectral_layers``,
``mlp_ratio``, ``big_skip``, the grid (the positional embedding's shape) and the
channel count (73). Taken as the publisher's defaults (flags override them):
``scale_factor`` 6, ``hard_thresholding_fraction`` 1.0, ``complex_activation``
``"real"``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from forecast.errors import CheckpointError
from forecast.grid import Grid
from forecast.importers.published import (
    PublishedWeights,
    Rule,
    describe_architecture,
    match_weights,
    published_stepper,
    read_normalizer,
)
from forecast.importers.spec import Imported, Importer, Option
from forecast.models.sfno_nonlinear import SFNONonlinearHParams
from forecast.steppers.backbone import BackboneStepper

#: The 73 channels in the publisher's order (ai-models-fourcastnetv2 ``ordering``), as our ids.
LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
CHANNELS: tuple[str, ...] = (
    "u10m",
    "v10m",
    "u100m",
    "v100m",
    "t2m",
    "sp",
    "msl",
    "tcwv",
    *(f"{base}{level}" for base in ("u", "v", "z", "t", "r") for level in LEVELS),
)

#: Our parameter names -> the publisher's (regex substitutions, applied in order).
_NAMES = (
    (r"^pos_embed\.embedding$", "pos_embed"),
    (r"^(encoder|decoder)\.(\d+)\.", r"\1.fwd.\2."),
    (r"^blocks\.(\d+)\.filter\.weights\.(\d+)$", r"blocks.\1.filter_layer.filter.w.\2"),
    (r"^blocks\.(\d+)\.filter\.weight_out$", r"blocks.\1.filter_layer.filter.wout"),
    (r"^blocks\.(\d+)\.mlp\.(\d+)\.", r"blocks.\1.mlp.fwd.\2."),
)
#: Buffers of the publisher's transforms (recomputed here) and its unused final norm.
_IGNORED_PREFIXES = ("trans_down.", "itrans_up.", "trans.", "itrans.", "norm.")
_READ_OFF = ("embed_dim", "num_layers", "spectral_layers", "mlp_ratio", "big_skip")
_DEFAULTED = ("scale_factor", "hard_thresholding_fraction", "complex_activation")


def published_name(ours: str) -> str:
    """The publisher's key (without ``module.``) of one of our parameter names."""
    for pattern, replacement in _NAMES:
        ours = re.sub(pattern, replacement, ours)
    return ours


def read_hparams(weights: PublishedWeights) -> tuple[dict[str, Any], Grid]:
    """The hyperparameters and the grid that the shapes of the weights tell.

    Raises
    ------
    CheckpointError
        A key needed to read them is missing, or the channel count is not 73.
    """
    in_channels = weights.shape("encoder.fwd.0.weight", ndim=4)[1]
    _, embed_dim, nlat, nlon = weights.shape("pos_embed", ndim=4)
    out_channels = weights.shape("decoder.fwd.2.weight", ndim=4)[0]
    if (in_channels, out_channels) != (len(CHANNELS), len(CHANNELS)):
        raise CheckpointError(
            f"the network maps {in_channels} channels to {out_channels}; FourCastNet v2-small has {len(CHANNELS)} in and out",
            path=weights.path,
            hint="pass the weights.tar of FourCastNet v2-small",
        )
    hidden = weights.shape("blocks.0.filter_layer.filter.w.0", ndim=3)[1]
    decoder_in = weights.shape("decoder.fwd.0.weight", ndim=4)[1]
    hparams = {
        "embed_dim": embed_dim,
        "num_layers": weights.count(r"^blocks\.(\d+)\."),
        "spectral_layers": weights.count(r"^blocks\.0\.filter_layer\.filter\.w\.(\d+)$"),
        "mlp_ratio": hidden / embed_dim,
        "big_skip": decoder_in == embed_dim + in_channels,
    }
    return hparams, Grid.equiangular(nlat, nlon)


def _rules(stepper: BackboneStepper) -> dict[str, Rule]:
    return {
        name: Rule(published_name(name), tuple(tensor.shape), lambda t: t)
        for name, tensor in stepper.model.state_dict().items()
    }


def convert(
    weights: PublishedWeights, means: Path, stds: Path, options: dict[str, Any]
) -> Imported:
    """Build the stepper of FourCastNet v2-small and fill it with the published weights."""
    read, grid = read_hparams(weights)
    hparams = {**read, **{k: options[k] for k in _DEFAULTED}}
    normalizer, extra = read_normalizer(means, stds, list(CHANNELS))
    stepper = published_stepper("sfno-nonlinear", hparams, list(CHANNELS), grid, normalizer)
    full = SFNONonlinearHParams(**hparams).model_dump()
    architecture = describe_architecture("FourCastNet v2-small", full, (*_READ_OFF, *_DEFAULTED))
    layers = stepper.hparams["num_layers"]
    ignored = {f"blocks.{i}.filter_layer.filter.activation.bias": (1,) for i in range(layers)}
    state = match_weights(weights, _rules(stepper), ignored, _IGNORED_PREFIXES, architecture)
    stepper.model.load_state_dict(state)
    stepper.eval()
    provenance = {
        "read_from_weights": {k: full[k] for k in _READ_OFF} | {"grid": grid.describe()},
        "not_in_weights": {k: full[k] for k in _DEFAULTED},
        "statistics_channels_ignored": extra,
    }
    return Imported(stepper, provenance)


IMPORTER = Importer(
    name="fourcastnet-v2-small",
    description="NVIDIA FourCastNet v2-small (SFNO, non-linear filter, 73 channels, 721x1440, 6 h)",
    source="weights.tar, global_means.npy, global_stds.npy as ai-models-fourcastnetv2 downloads them",
    licence="Apache License 2.0 (LICENSE_FourCastNetv2 of the ai-models-fourcastnetv2 distribution)",
    options=(
        Option("scale_factor", int, 6, "inner grid is NLAT//S x NLON//S"),
        Option("hard_thresholding_fraction", float, 1.0, "fraction of the spectral modes kept"),
        Option(
            "complex_activation",
            str,
            "real",
            "complex ReLU of the spectral MLP: real (real part only) or cartesian",
        ),
    ),
    convert=convert,
)
