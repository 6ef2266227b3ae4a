"""Backbones: shapes, gradients, equivariance, resolution change, registry errors, presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecast.errors import ConfigError, GridError
from forecast.grid import Grid
from forecast.models import (
    MODELS,
    PRESETS,
    build_model,
    build_preset,
    count_parameters,
    model_names,
    preset_parameter_count,
)

SMALL = {
    "sfno": {"embed_dim": 8, "num_layers": 2},
    "afno": {"embed_dim": 16, "depth": 2, "num_blocks": 4, "patch_size": 4},
    "fno": {"embed_dim": 8, "num_layers": 2, "modes_lat": 4, "modes_lon": 4},
}


def regional_grid(nlat: int = 18, nlon: int = 26) -> Grid:
    """A limited-area rectangle over Europe, 1 degree spacing, sizes not multiples of the patch."""
    return Grid("regional", 60.0 - np.arange(nlat), -10.0 + np.arange(nlon))


GRIDS = {
    "equiangular": lambda: Grid.equiangular(16, 32),
    "legendre-gauss": lambda: Grid.legendre_gauss(16, 32),
    "regional": regional_grid,
}
CASES = [
    (name, kind)
    for name in ("sfno", "afno", "fno")
    for kind in GRIDS
    if not (name == "sfno" and kind == "regional")
]
CASES.append(("sfno-scaled", "equiangular"))


def _build(
    name: str, grid: Grid, in_channels: int = 5, out_channels: int = 3, **extra
) -> torch.nn.Module:
    if name == "sfno-scaled":
        return build_model(
            "sfno",
            in_channels,
            out_channels,
            grid,
            **SMALL["sfno"],
            scale_factor=2,
            big_skip=True,
            **extra,
        )
    return build_model(name, in_channels, out_channels, grid, **SMALL[name], **extra)


def test_registry_names():
    assert model_names() == ["afno", "fno", "sfno", "sfno-nonlinear"]
    assert set(MODELS) == {"afno", "fno", "sfno", "sfno-nonlinear"}
    assert MODELS["sfno"].global_only and not MODELS["afno"].global_only
    assert MODELS["sfno-nonlinear"].global_only


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_shapes_and_gradients(name, kind):
    torch.manual_seed(0)
    grid = GRIDS[kind]()
    model = _build(name, grid)
    x = torch.randn(2, 5, *grid.shape, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 3, *grid.shape)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert 0.01 < y.std().item() < 100.0
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    without = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert without == []
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert zero == []


@pytest.mark.parametrize("name", ["sfno", "afno", "fno"])
def test_bf16_autocast_on_cpu(name):
    torch.manual_seed(0)
    grid = Grid.equiangular(16, 32)
    model = _build(name, grid)
    x = torch.randn(1, 5, *grid.shape)
    reference = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == reference.shape and torch.isfinite(y).all()
    # bf16 has ~3 significant digits: the outputs agree to a few percent of their spread
    assert (y.float() - reference).abs().max() < 0.1 * reference.abs().max()


@pytest.mark.parametrize(
    ("grid", "scale_factor", "shift"),
    [
        (Grid.equiangular(16, 32), 1, 3),
        (Grid.legendre_gauss(16, 32), 1, 5),
        (Grid.equiangular(17, 32), 2, 4),
    ],
    ids=["equiangular", "legendre-gauss", "scaled"],
)
def test_sfno_longitude_equivariance(grid, scale_factor, shift):
    torch.manual_seed(1)
    model = build_model("sfno", 3, 3, grid, embed_dim=8, num_layers=3, scale_factor=scale_factor)
    x = torch.randn(2, 3, *grid.shape)
    rotated_output = model(torch.roll(x, shift, dims=-1))
    output_rotated = torch.roll(model(x), shift, dims=-1)
    scale = output_rotated.abs().max()
    assert (rotated_output - output_rotated).abs().max() < 1e-5 * scale


def test_sfno_learned_position_breaks_equivariance():
    torch.manual_seed(1)
    grid = Grid.equiangular(16, 32)
    model = build_model("sfno", 3, 3, grid, embed_dim=8, num_layers=2, pos_embed="learned")
    with torch.no_grad():
        model.pos_embed.embedding.normal_(0.0, 1.0)
    x = torch.randn(1, 3, *grid.shape)
    difference = model(torch.roll(x, 4, dims=-1)) - torch.roll(model(x), 4, dims=-1)
    assert difference.abs().max() > 1e-2


def test_sfno_spherical_harmonic_position_embedding():
    grid = Grid.legendre_gauss(16, 32)
    model = build_model(
        "sfno",
        3,
        2,
        grid,
        embed_dim=8,
        num_layers=2,
        pos_embed="spherical_harmonics",
        pos_embed_degree=3,
    )
    functions = model.pos_embed.functions
    assert functions.shape == (1, 16, 16, 32)  # (degree + 1) ** 2 harmonics
    weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32).reshape(1, 1, -1, 1)
    mean_square = (functions.square() * weights).mean(dim=(0, 2, 3))
    assert torch.allclose(
        mean_square, torch.ones(16), atol=1e-2
    )  # band-area quadrature is approximate
    assert model(torch.randn(1, 3, *grid.shape)).shape == (1, 2, 16, 32)


def _smooth_field(grid: Grid, channels: int) -> torch.Tensor:
    lat = np.deg2rad(grid.latitude)[:, None]
    lon = np.deg2rad(grid.longitude)[None, :]
    fields = [np.cos(lat) * np.cos(lon + k) + 0.5 * np.sin(lat) ** (k + 1) for k in range(channels)]
    return torch.as_tensor(np.stack(fields)[None], dtype=torch.float32)


def test_sfno_discretisation_agnostic():
    """The same weights on a grid twice as fine give the same function at the shared points."""
    torch.manual_seed(2)
    coarse = Grid.equiangular(17, 32)
    fine = Grid.equiangular(33, 64)  # every other row and column is a coarse point
    model = build_model("sfno", 3, 3, coarse, embed_dim=8, num_layers=2, normalization="none")
    fine_model = model.with_grid(fine)
    assert fine_model.lmax == model.lmax
    with torch.no_grad():
        y_coarse = model(_smooth_field(coarse, 3))
        y_fine = fine_model(_smooth_field(fine, 3))
    shared = y_fine[..., ::2, ::2]
    relative = ((shared - y_coarse).norm() / y_coarse.norm()).item()
    assert relative < 0.01, relative  # measured 5e-4
    # smooth: neighbouring fine points differ little compared with the field's range
    jumps = (y_fine[..., 1:, :] - y_fine[..., :-1, :]).abs().max()
    assert jumps < 0.25 * (y_fine.max() - y_fine.min())


def test_sfno_with_grid_refuses_learned_embedding():
    model = build_model(
        "sfno", 2, 2, Grid.equiangular(16, 32), embed_dim=4, num_layers=1, pos_embed="learned"
    )
    with pytest.raises(GridError, match="learned positional embedding"):
        model.with_grid(Grid.equiangular(32, 64))


def test_afno_regional_grid_padding():
    torch.manual_seed(3)
    grid = regional_grid(21, 30)
    model = build_model("afno", 4, 2, grid, embed_dim=16, depth=1, num_blocks=2, patch_size=(4, 8))
    assert model.padded == (24, 32) and model.tokens == (6, 4)
    y = model(torch.randn(2, 4, *grid.shape))
    assert y.shape == (2, 2, 21, 30) and torch.isfinite(y).all()


def test_afno_hard_thresholding_drops_high_modes():
    """With a fraction below one, an input made only of high modes leaves the filter as its bias path."""
    from forecast.models.afno import AFNOFilter

    torch.manual_seed(4)
    filt = AFNOFilter(
        8, 2, sparsity_threshold=0.0, hard_thresholding_fraction=0.25, hidden_size_factor=1
    )
    with torch.no_grad():
        filt.b1.zero_()
        filt.b2.zero_()
    checker = torch.ones(1, 8, 8, 8)
    checker[:, 1::2] *= -1
    checker[:, :, 1::2] *= -1  # Nyquist mode in both directions
    assert torch.allclose(filt(checker), checker, atol=1e-6)


def test_sfno_regional_grid_is_an_error():
    with pytest.raises(GridError, match="afno or fno"):
        build_model("sfno", 2, 2, regional_grid())


def test_unknown_model_lists_names():
    with pytest.raises(ConfigError, match=r"unknown model 'unet'.*afno, fno, sfno"):
        build_model("unet", 2, 2, Grid.equiangular(16, 32))


@pytest.mark.parametrize(
    ("name", "hparams", "pattern"),
    [
        ("sfno", {"embed_dim": 0}, r"embed_dim=0: .*greater than 0.*allowed: embed_dim"),
        ("sfno", {"embed": 8}, r"unknown hyperparameter 'embed'.*allowed: .*num_layers"),
        ("sfno", {"pos_embed": "sinusoidal"}, r"pos_embed='sinusoidal'.*'learned'"),
        ("sfno", {"hard_thresholding_fraction": 1.5}, r"hard_thresholding_fraction=1.5"),
        ("afno", {"embed_dim": 30, "num_blocks": 8}, r"num_blocks=8: .*must divide embed_dim=30"),
        ("afno", {"patch_size": (4, 0)}, r"patch_size"),
        ("fno", {"num_layers": "many"}, r"num_layers='many'"),
    ],
)
def test_bad_hyperparameters(name, hparams, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model(name, 2, 2, Grid.equiangular(16, 32), **hparams)


def test_patch_size_pair_and_int():
    grid = Grid.equiangular(16, 32)
    assert build_model(
        "afno", 2, 2, grid, embed_dim=8, depth=1, num_blocks=2, patch_size=4
    ).patch == (4, 4)
    assert build_model(
        "afno", 2, 2, grid, embed_dim=8, depth=1, num_blocks=2, patch_size=[2, 8]
    ).patch == (2, 8)


@pytest.mark.parametrize("name", ["sfno", "afno", "fno"])
def test_default_hyperparameters_build_and_run(name):
    """Every backbone with no hyperparameters given: the defaults pass their own validators."""
    grid = Grid.equiangular(32, 64)
    model = build_model(name, 4, 4, grid)
    out = model(torch.randn(1, 4, *grid.shape))
    assert out.shape == (1, 4, *grid.shape) and torch.isfinite(out).all()
    if name == "afno":
        assert model.patch == (8, 8)


def test_bad_channel_count():
    with pytest.raises(ConfigError, match="in_channels must be a positive integer"):
        build_model("fno", 0, 2, Grid.equiangular(16, 32))


def test_preset_parameter_counts_on_meta_device():
    assert PRESETS["fourcastnet-v2-sfno"].shape == (721, 1440)
    assert PRESETS["fourcastnet-afno"].shape == (720, 1440)
    sfno_count = preset_parameter_count("fourcastnet-v2-sfno")
    afno_count = preset_parameter_count("fourcastnet-afno")
    # SFNO: 8 blocks x (384 x 384 x 240 complex spectral weights + MLP 384->768->384 + norm)
    spectral = 8 * 384 * 384 * 240 * 2
    assert sfno_count == 571_341_696 and sfno_count - spectral == 5_110_656
    assert afno_count == 74_690_304


def test_count_parameters_small():
    model = build_model(
        "fno", 2, 2, Grid.equiangular(16, 32), embed_dim=4, num_layers=1, modes_lat=2, modes_lon=3
    )
    # lift 2*4+4, spectral 2*4*4*2*3*2, skip 4*4+4, projection 4*8+8 + 8*2
    assert count_parameters(model) == 12 + 384 + 20 + 40 + 16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["sfno", "sfno-scaled", "afno", "fno"])
def test_cuda_float32_and_bf16(name):
    torch.manual_seed(0)
    grid = Grid.equiangular(16, 32)
    model = _build(name, grid).cuda()
    x = torch.randn(2, 5, *grid.shape, device="cuda", requires_grad=True)
    reference = model.cpu()(x.detach().cpu())
    model.cuda()
    y = model(x)
    torch.testing.assert_close(y.cpu(), reference, atol=1e-3, rtol=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        z = model(x)
    z.float().square().mean().backward()
    assert torch.isfinite(z).all() and torch.isfinite(x.grad).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_build_preset_on_cuda_places_every_tensor():
    model = build_preset("fourcastnet-v2-sfno", "cuda")
    tensors = [*model.parameters(), *model.buffers()]
    assert {t.device.type for t in tensors} == {"cuda"}
