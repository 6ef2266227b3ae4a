"""The published sizes: FourCastNet v2-small (721x1440, 288 M parameters) and v1 (720x1440, 75 M).

The publishers' networks with their default (published) hyperparameters and
random weights, saved in the published layout, imported with the default
flags, and one step compared as in ``test_import_fourcastnet`` (fp32, CPU,
1e-5 relative: L2 over the state and per channel). Slow: several GB of memory
and about a minute per model on two cores.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from forecast.importers import convert_published
from tests.forecast import fourcastnet_reference as reference
from tests.forecast.test_import_fourcastnet import relative_errors

pytestmark = pytest.mark.slow


def _check(tmp_path, build, name, shape, channels, rows=None):
    network = reference.randomize(build(), seed=7)
    weights = reference.save_published(network, tmp_path / "weights")
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=channels), rng.uniform(0.5, 2.0, size=channels)
    means, stds = reference.save_statistics(mean, std, tmp_path)
    stepper = convert_published(name, weights, means, stds).stepper
    x = torch.randn(1, channels, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = network(x if rows is None else x[..., :rows, :])
        del network
        gc.collect()
        ours = stepper._backbone(x)
    ours = ours if rows is None else ours[..., :rows, :]
    state = float((ours - ref).norm() / ref.norm())
    assert state < 1e-5
    assert relative_errors(ours.numpy(), ref.numpy(), channel_axis=1).max() < 1e-5


def test_v2_small_at_the_published_size(tmp_path):
    torch.set_grad_enabled(False)
    try:
        build = reference.sfnonet().FourierNeuralOperatorNet
        _check(tmp_path, build, "fourcastnet-v2-small", (721, 1440), 73)
    finally:
        torch.set_grad_enabled(True)


@pytest.mark.parametrize("channels", [20, 26])
def test_v1_at_the_published_size(tmp_path, channels):
    def build():
        return reference.afnonet().AFNONet(in_chans=channels, out_chans=channels)

    _check(tmp_path, build, "fourcastnet", (721, 1440), channels, rows=720)
