"""Our FourCastNet architectures against the publishers' networks: options, counts, precision.

The non-linear SFNO (FourCastNet v2-small) and the AFNO with FourCastNet's
mode truncation are checked against ``FourierNeuralOperatorNet`` of
ai-models-fourcastnetv2 and ``AFNONet`` of ai-models-fourcastnet over the
hyperparameters a user can override on import, with the weights moved by the
importers' own key mapping.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecast.grid import Grid
from forecast.importers import convert_published
from forecast.models import build_model, count_parameters, preset_parameter_count
from forecast.models.sfno_nonlinear import SFNONonlinearHParams, spectral_modes
from tests.forecast import fourcastnet_reference as reference


def _relative(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).norm() / ref.norm())


def _import(tmp_path, network, name, channels, **options):
    weights = reference.save_published(network, tmp_path / "weights.tar")
    means, stds = reference.save_statistics(np.zeros(channels), np.ones(channels), tmp_path)
    return convert_published(name, weights, means, stds, options).stepper


@pytest.mark.parametrize(
    ("shape", "options", "reference_options"),
    [
        ((17, 32), {"scale_factor": 2}, {"scale_factor": 2}),
        (
            (17, 32),
            {
                "scale_factor": 2,
                "hard_thresholding_fraction": 0.5,
                "complex_activation": "cartesian",
            },
            {
                "scale_factor": 2,
                "hard_thresholding_fraction": 0.5,
                "complex_activation": "cartesian",
            },
        ),
        ((25, 48), {"scale_factor": 3}, {"scale_factor": 3, "spectral_layers": 1, "num_layers": 5}),
        ((9, 16), {"scale_factor": 1}, {"scale_factor": 1, "num_layers": 1, "big_skip": False}),
    ],
)
def test_nonlinear_sfno_matches_reference_over_options(tmp_path, shape, options, reference_options):
    settings = {"embed_dim": 8, "num_layers": 3, "spectral_layers": 2, **reference_options}
    network = reference.sfnonet().FourierNeuralOperatorNet(
        img_size=shape, in_chans=73, out_chans=73, **settings
    )
    reference.randomize(network, seed=4)
    stepper = _import(tmp_path, network, "fourcastnet-v2-small", 73, **options)
    assert stepper.hparams["num_layers"] == settings["num_layers"]
    assert stepper.hparams["spectral_layers"] == settings["spectral_layers"]
    assert stepper.hparams["big_skip"] == settings.get("big_skip", True)
    assert count_parameters(stepper.model) == sum(p.numel() for p in network.parameters())
    x = torch.randn(2, 73, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert _relative(stepper.model(x), network(x)) < 1e-5


def test_spectral_truncation_follows_the_publisher():
    """721 x 1440, scale factor 6: inner grid 120 x 240 (floor), 120 degrees and orders."""
    grid = Grid.equiangular(721, 1440)
    hparams = SFNONonlinearHParams()
    assert spectral_modes(grid, hparams) == 120
    assert (
        spectral_modes(grid, hparams.model_copy(update={"hard_thresholding_fraction": 0.5})) == 60
    )
    with pytest.raises(Exception, match="inner grid of 1x2 points"):
        build_model("sfno-nonlinear", 4, 4, Grid.equiangular(9, 16))


def test_nonlinear_sfno_under_bf16_autocast_stays_close():
    torch.manual_seed(0)
    model = build_model(
        "sfno-nonlinear", 6, 6, Grid.equiangular(17, 32), embed_dim=16, num_layers=3, scale_factor=2
    ).eval()
    x = torch.randn(1, 6, 17, 32)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert torch.isfinite(low).all()
    assert _relative(low.float(), full) < 0.05  # bf16 has 8 bits of mantissa


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_afno_fourcastnet_truncation_matches_reference(tmp_path, fraction):
    """Also with fewer modes, where AFNO2D keeps the middle latitude rows of the spectrum."""
    network = reference.afnonet().AFNONet(
        img_size=(24, 48),
        patch_size=(4, 4),
        in_chans=20,
        out_chans=20,
        embed_dim=16,
        depth=2,
        num_blocks=4,
        hard_thresholding_fraction=fraction,
    )
    reference.randomize(network, seed=5)
    stepper = _import(
        tmp_path, network, "fourcastnet", 21, grid="25x48", hard_thresholding_fraction=fraction
    )
    x = torch.randn(2, 20, 25, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = stepper._backbone(x)[..., :-1, :]
        ref = network(x[..., :-1, :])
        assert _relative(ours, ref) < 1e-5
        per_axis = build_model(
            "afno",
            20,
            20,
            stepper.model.grid,
            **{**stepper.hparams, "mode_truncation": "per_axis"},
        )
        per_axis.load_state_dict(stepper.model.state_dict())
        assert _relative(per_axis(x[..., :-1, :]), ref) > 1e-3  # the truncation matters


def test_v1_count_against_the_reference_at_the_published_size():
    """Ours on the meta device; the publisher's AFNONet (75 M parameters) on the CPU."""
    unused_norm = 2 * 768  # AFNONet.norm: built and saved, never applied in its forward
    for channels, ours in ((20, 74_690_304), (26, 74_690_304 + 6 * (768 * 64 + 768 * 64))):
        network = reference.afnonet().AFNONet(in_chans=channels, out_chans=channels)
        counted = sum(p.numel() for p in network.parameters())
        del network
        assert counted - unused_norm == ours
    assert preset_parameter_count("fourcastnet-afno") == 74_690_304


@pytest.mark.slow
def test_v2_small_count_against_the_reference_at_the_published_size():
    network = reference.sfnonet().FourierNeuralOperatorNet()  # the published defaults, 721 x 1440
    counted = sum(p.numel() for p in network.parameters())
    assert counted == preset_parameter_count("fourcastnet-v2-small") == 288_413_696


def test_stepper_drop_south_pole_hook():
    import datetime as dt

    from forecast.errors import GridError
    from forecast.normalize import Normalizer
    from forecast.steppers.backbone import BackboneStepper as Stepper

    channels = ["z500", "t850"]
    normalizer = Normalizer(tuple(channels), np.zeros(2), np.ones(2), np.ones(2))
    grid = Grid.equiangular(9, 16)
    hparams = {"patch_size": 4, "embed_dim": 8, "depth": 1, "num_blocks": 2}
    stepper = Stepper(
        "afno",
        hparams,
        channels,
        grid,
        dt.timedelta(hours=6),
        normalizer,
        forcings=False,
        residual=False,
        drop_south_pole=True,
    )
    assert stepper.model.grid.shape == (8, 16) and stepper.model.grid.latitude[-1] == -67.5
    config = stepper.config()
    assert config["drop_south_pole"] is True and config["grid"]["nlat"] == 9
    assert Stepper.from_config(config).drop_south_pole
    del config["drop_south_pole"]  # checkpoints written before the hook existed
    assert not Stepper.from_config(config).drop_south_pole
    state = torch.randn(1, 2, 9, 16)
    out = stepper.eval().advance(state, np.array(["2020-01-01T00"], dtype="datetime64[ns]"))
    assert out.shape == (1, 2, 9, 16)
    assert torch.equal(out[..., -1, :], out[..., -2, :])
    changed = state.clone()
    changed[..., -1, :] += 100.0  # the pole row of the input is not seen
    again = stepper.advance(changed, np.array(["2020-01-01T00"], dtype="datetime64[ns]"))
    assert torch.equal(again, out)
    with pytest.raises(GridError, match="needs an equiangular grid with poles"):
        Stepper(
            "afno",
            hparams,
            channels,
            Grid.legendre_gauss(8, 16),
            dt.timedelta(hours=6),
            normalizer,
            forcings=False,
            residual=False,
            drop_south_pole=True,
        )
