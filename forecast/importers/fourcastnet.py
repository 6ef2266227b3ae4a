"""FourCastNet v1 (NVIDIA's AFNO) into a checkpoint of ours.

The files, as ECMWF's ``ai-models-fourcastnet`` plugin fetches them:
``backbone.ckpt`` (``model_state`` of ``AFNONet`` saved under
``DistributedDataParallel``), ``global_means.npy`` and ``global_stds.npy``
(shape ``(1, C, 1, 1)``, ``C`` at least the network's channels). Two releases:
the original one (0.0) with 20 channels and the 0.1 weights with 26; the
channel count of the patch embedding tells them apart. The network maps the
normalised state at ``t`` to the one at ``t + 6 h`` on the 720 northernmost
rows of the 0.25-degree grid (90 .. -89.75): our stepper takes states on the
721 x 1440 grid, drops the south-pole row before the network and copies the
row next to the pole into it afterwards.

Read off the weights: the channels, ``patch_size``, ``embed_dim``, ``depth``,
``num_blocks``, ``hidden_size_factor``, ``mlp_ratio``. Taken as the publisher's
defaults (flags override them): the grid 721 x 1440 (whose northern rows the
positional embedding must cover), ``sparsity_threshold`` 0.01,
``hard_thresholding_fraction`` 1.0. The filter keeps the Fourier modes that
FourCastNet's ``AFNO2D`` keeps (``mode_truncation="fourcastnet"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from forecast.errors import CheckpointError, ForecastError
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
from forecast.models.afno import AFNO, AFNOHParams
from forecast.steppers.backbone import BackboneStepper, without_south_pole

#: The original release (0.0): 20 channels in the publisher's order, as our ids.
CHANNELS_20: tuple[str, ...] = (
    "u10m",
    "v10m",
    "t2m",
    "sp",
    "msl",
    "t850",
    "u1000",
    "v1000",
    "z1000",
    "u850",
    "v850",
    "z850",
    "u500",
    "v500",
    "z500",
    "t500",
    "z50",
    "r500",
    "r850",
    "tcwv",
)
#: The 0.1 weights: the same 20, then the 100 m winds and four fields at 250 hPa.
CHANNELS_26: tuple[str, ...] = (*CHANNELS_20, "u100m", "v100m", "u250", "v250", "z250", "t250")
#: Channel count of the weights -> (release, channels).
RELEASES: dict[int, tuple[str, tuple[str, ...]]] = {
    len(CHANNELS_20): ("0.0", CHANNELS_20),
    len(CHANNELS_26): ("0.1", CHANNELS_26),
}
#: The reference network's final layer norm, which its forward pass never applies.
_UNUSED = ("norm.weight", "norm.bias")
_READ_OFF = ("patch_size", "embed_dim", "depth", "num_blocks", "hidden_size_factor", "mlp_ratio")
_DEFAULTED = ("sparsity_threshold", "hard_thresholding_fraction")


def release_of(weights: PublishedWeights) -> tuple[str, tuple[str, ...]]:
    """The release and its channels, told by the input channels of the patch embedding.

    Raises
    ------
    CheckpointError
        When the count is neither 20 nor 26.
    """
    channels = weights.shape("patch_embed.proj.weight", ndim=4)[1]
    if channels not in RELEASES:
        known = " or ".join(f"{n} (release {r})" for n, (r, _) in RELEASES.items())
        raise CheckpointError(
            f"the network takes {channels} channels; FourCastNet v1 takes {known}",
            path=weights.path,
            hint="pass the backbone.ckpt of FourCastNet",
        )
    return RELEASES[channels]


def read_hparams(weights: PublishedWeights) -> dict[str, Any]:
    """The AFNO hyperparameters that the shapes of the weights tell."""
    embed_dim, _, patch_h, patch_w = weights.shape("patch_embed.proj.weight", ndim=4)
    _, num_blocks, block_size, hidden = weights.shape("blocks.0.filter.w1", ndim=4)
    return {
        "patch_size": (patch_h, patch_w),
        "embed_dim": embed_dim,
        "depth": weights.count(r"^blocks\.(\d+)\."),
        "num_blocks": num_blocks,
        "hidden_size_factor": hidden // block_size,
        "mlp_ratio": weights.shape("blocks.0.mlp.fc1.weight", ndim=2)[0] / embed_dim,
    }


def _rules(stepper: BackboneStepper) -> dict[str, Rule]:
    """Our names -> the publisher's, with the two tensors laid out differently."""
    model = stepper.model
    assert isinstance(model, AFNO), "FourCastNet v1 is an AFNO"
    (height, width), (ph, pw) = model.tokens, model.patch
    channels, dim = len(stepper.channels), stepper.hparams["embed_dim"]
    rules = {}
    for name, tensor in model.state_dict().items():
        rules[name] = Rule(name, tuple(tensor.shape), lambda t: t)
    rules["patch_embed.weight"] = Rule(
        "patch_embed.proj.weight", rules["patch_embed.weight"].shape, lambda t: t
    )
    rules["patch_embed.bias"] = Rule(
        "patch_embed.proj.bias", rules["patch_embed.bias"].shape, lambda t: t
    )
    # tokens flattened row-major: (1, h * w, dim) -> (1, h, w, dim)
    rules["pos_embed"] = Rule(
        "pos_embed", (1, height * width, dim), lambda t: t.reshape(1, height, width, dim)
    )

    # the head's rows are ordered (ph, pw, channel) there and (channel, ph, pw) here
    def head(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(ph, pw, channels, dim).permute(2, 0, 1, 3).reshape(-1, dim)

    rules["head.weight"] = Rule("head.weight", (ph * pw * channels, dim), head)
    return rules


def convert(
    weights: PublishedWeights, means: Path, stds: Path, options: dict[str, Any]
) -> Imported:
    """Build the stepper of FourCastNet v1 and fill it with the published weights."""
    release, channels = release_of(weights)
    read = read_hparams(weights)
    hparams = {
        **read,
        **{k: options[k] for k in _DEFAULTED},
        "mode_truncation": "fourcastnet",
    }
    grid = Grid.parse(str(options["grid"]))
    try:
        model_grid = without_south_pole(grid)
    except ForecastError as err:
        raise CheckpointError(f"--grid {options['grid']}: {err}") from err
    (ph, pw), tokens = read["patch_size"], weights.shape("pos_embed", ndim=3)[1]
    if (
        model_grid.nlat % ph
        or model_grid.nlon % pw
        or (model_grid.nlat // ph) * (model_grid.nlon // pw) != tokens
    ):
        raise CheckpointError(
            f"the positional embedding has {tokens} tokens; {model_grid.nlat}x{model_grid.nlon} "
            f"(grid {grid.describe()} without its south-pole row) in patches of {ph}x{pw} is not that",
            path=weights.path,
            hint="pass --grid with the data grid of these weights (default 721x1440)",
        )
    normalizer, extra = read_normalizer(means, stds, list(channels))
    stepper = published_stepper(
        "afno", hparams, list(channels), grid, normalizer, drop_south_pole=True
    )
    full = AFNOHParams(**hparams).model_dump()
    architecture = describe_architecture(
        f"FourCastNet v1 release {release}", full, (*_READ_OFF, *_DEFAULTED)
    )
    ignored = {name: (full["embed_dim"],) for name in _UNUSED}
    state = match_weights(weights, _rules(stepper), ignored, (), architecture)
    stepper.model.load_state_dict(state)
    stepper.eval()
    provenance = {
        "release": release,
        "read_from_weights": {k: full[k] for k in _READ_OFF} | {"channels": len(channels)},
        "not_in_weights": {k: full[k] for k in _DEFAULTED} | {"grid": grid.describe()},
        "model_grid": f"the {model_grid.nlat} northernmost rows of {grid.describe()}",
        "statistics_channels_ignored": extra,
    }
    return Imported(stepper, provenance)


IMPORTER = Importer(
    name="fourcastnet",
    description="NVIDIA FourCastNet v1 (AFNO, 20 or 26 channels, 720x1440 of the 0.25-degree grid, 6 h)",
    source="backbone.ckpt, global_means.npy, global_stds.npy as ai-models-fourcastnet downloads them",
    licence="BSD 3-Clause (LICENSE_fourcastnet of the ai-models-fourcastnet distribution; NVlabs/FourCastNet)",
    options=(
        Option(
            "grid",
            str,
            "721x1440",
            "data grid NLATxNLON (equiangular); the model sees all but its last row",
        ),
        Option("sparsity_threshold", float, 0.01, "soft-shrinkage lambda of the AFNO filter"),
        Option("hard_thresholding_fraction", float, 1.0, "fraction of the Fourier modes kept"),
    ),
    convert=convert,
)
