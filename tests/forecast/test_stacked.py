"""Networks of one architecture stepped as one batch (forecast/models/stacked.py, forecast/steppers/stacked.py)."""

from __future__ import annotations

import gc
import weakref
from unittest import mock

import numpy as np
import pytest
import torch
from torch import nn

from forecast.grid import Grid
from forecast.models import build_model
from forecast.models.layers import PointwiseMLP, TokenMLP
from forecast.models.stacked import StackedNetworks, stack_in_place
from forecast.normalize import Normalizer
from forecast.steppers import BackboneStepper
from forecast.steppers.stacked import (
    NotStackableError,
    StackedBackbones,
    stack_backbones,
    why_not_stackable,
)
from tests.inference.conftest import CHANNELS, MEANS, STDS, make_stepper

GRID = Grid.equiangular(8, 16)
HPARAMS = {
    "sfno": {"embed_dim": 8, "num_layers": 2, "pos_embed": "learned"},
    "sfno-nonlinear": {"embed_dim": 8, "num_layers": 1, "scale_factor": 2},
    "afno": {"embed_dim": 8, "depth": 1, "patch_size": [2, 2], "num_blocks": 2},
    "fno": {"embed_dim": 8, "num_layers": 1},
}


def _networks(name: str, count: int) -> list[nn.Module]:
    networks = []
    for seed in range(count):
        torch.manual_seed(seed)
        networks.append(build_model(name, 5, 3, GRID, **HPARAMS[name]).eval())
    return networks


@pytest.mark.parametrize("name", sorted(HPARAMS))
def test_each_row_goes_through_its_own_network_in_one_vmapped_call(name):
    networks = _networks(name, 3)
    stacked = StackedNetworks(networks)
    # rows of the three networks in any order and in unequal numbers; network 2 twice, 0 once
    models = np.array([2, 1, 2, 0, 1, 1])
    x = torch.randn(len(models), 5, *GRID.shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = stacked(x, models)
        assert stacked.strategy == "vmap", stacked.reason
        # the weights are held once: every network's tensors are views into the stack
        held = {t.untyped_storage().data_ptr() for part in stacked._stacked for t in part.values()}
        own = [*stacked.networks.parameters(), *stacked.networks.buffers()]
        assert {t.untyped_storage().data_ptr() for t in own} <= held
        expected = torch.cat([networks[k](x[r : r + 1]) for r, k in enumerate(models)])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        # a later call takes the strategy chosen on the first; a plan made once for a batch
        # sends its indices to the device once, whatever the number of steps
        plan = stacked.plan(models)
        torch.testing.assert_close(stacked(x, plan), got, rtol=0, atol=0)
        sent = dict(plan._device)
        torch.testing.assert_close(stacked(x, plan), got, rtol=0, atol=0)
        assert plan._device.keys() == sent.keys() and all(plan._device[k] is sent[k] for k in sent)
        assert plan.padded and plan.per == 3  # network 1 has 3 rows, the others are padded
        # a batch of one network's rows loops (vmap would run the other two for nothing)
        with mock.patch.object(stacked, "_vmap", side_effect=AssertionError("vmapped")):
            again = stacked(x[[1, 4]], np.array([1, 1]))
        torch.testing.assert_close(again, torch.cat([expected[1:2], expected[4:5]]))
    # the rows differ from another network's output: each row really went through its own
    with torch.no_grad():
        assert float((got[0] - networks[0](x[:1])[0]).abs().max()) > 1e-3


class _HostSync(nn.Module):
    """A network whose forward reads a value back to the host: vmap cannot batch it."""

    def __init__(self, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(self.weight.item())


def test_stacking_in_place_is_torchs_stack_and_holds_the_weights_once():
    networks = _networks("sfno", 3)
    expected_params, expected_buffers = torch.func.stack_module_state(networks)
    keys = [list(n.state_dict()) for n in networks]
    x = torch.randn(2, 5, *GRID.shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = [n(x) for n in networks]
    old = [weakref.ref(p) for n in networks for p in n.parameters()]
    with torch.inference_mode():  # as the engine's first call
        params, buffers = stack_in_place(networks)
    for got, want in ((params, expected_params), (buffers, expected_buffers)):
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
    # each network's tensors now live in the stack, its old storage is no longer used
    stacks = {t.untyped_storage().data_ptr() for t in [*params.values(), *buffers.values()]}
    for network in networks:
        assert {t.untyped_storage().data_ptr() for t in network.state_dict().values()} <= stacks
    gc.collect()
    assert all(ref() is None for ref in old)  # nothing holds the networks' own copies any more
    assert [list(n.state_dict()) for n in networks] == keys  # non-persistent buffers stay so
    with torch.no_grad():
        for network, out in zip(networks, before, strict=True):
            torch.testing.assert_close(network(x), out, rtol=0, atol=0)
    # usable outside inference mode, with gradients, as before stacking
    networks[1](x).square().mean().backward()
    assert all(p.grad is not None for p in networks[1].parameters() if p.requires_grad)


class _Tied(nn.Module):
    """Two layers that share one weight, and a buffer under two names."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        self.b.weight = self.a.weight
        self.register_buffer("offset", torch.randn(3))
        self.b.register_buffer("offset", self.offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.offset + self.b.offset


def test_stacking_in_place_keeps_tied_weights_tied_and_held_once():
    networks = [_Tied(0), _Tied(1)]
    x = torch.randn(4, 3)
    with torch.no_grad():
        before = [n(x) for n in networks]
    old = [weakref.ref(n.a.weight) for n in networks] + [weakref.ref(n.offset) for n in networks]
    params, buffers = stack_in_place(networks)
    assert "a.weight" in params and "b.weight" not in params  # torch's dedup of tied names
    for k, network in enumerate(networks):
        assert network.b.weight is network.a.weight and network.b.offset is network.offset
        assert network.a.weight.data_ptr() == params["a.weight"][k].data_ptr()
        assert network.b.offset.data_ptr() == buffers["offset"][k].data_ptr()
        with torch.no_grad():
            torch.testing.assert_close(network(x), before[k], rtol=0, atol=0)
    gc.collect()
    assert all(ref() is None for ref in old)
    rows = np.array([0, 1, 1, 0])
    with torch.no_grad():  # and the ensemble of them computes each row with its network
        out = StackedNetworks(networks)(x, rows)
        torch.testing.assert_close(out, torch.stack([before[k][i] for i, k in enumerate(rows)]))


def test_a_network_vmap_cannot_batch_runs_in_a_loop_and_says_why():
    networks = [_HostSync(2.0), _HostSync(3.0)]
    stacked = StackedNetworks(networks)
    x = torch.ones(3, 2)
    with torch.no_grad():
        out = stacked(x, np.array([0, 1, 0]))
    assert stacked.strategy == "loop" and "vmap refused" in stacked.reason
    torch.testing.assert_close(out, torch.tensor([[2.0, 2.0], [3.0, 3.0], [2.0, 2.0]]))


class _CountsRows(nn.Module):
    """A network whose output depends on how many rows it is given: batching changes it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight * x.shape[0]


def test_a_network_that_vmap_changes_runs_in_a_loop_and_says_by_how_much():
    stacked = StackedNetworks([_CountsRows(), _CountsRows()])
    with torch.no_grad():  # network 1 has one row; padded to two under vmap it would double
        out = stacked(torch.ones(3, 1), np.array([0, 1, 0]))
    assert stacked.strategy == "loop" and stacked.reason.startswith(
        "vmap differs from the loop by 1"
    )
    torch.testing.assert_close(out, torch.tensor([[2.0], [1.0], [2.0]]))


def test_networks_of_other_shapes_are_refused():
    torch.manual_seed(0)
    small = build_model("sfno", 5, 3, GRID, embed_dim=8, num_layers=1)
    large = build_model("sfno", 5, 3, GRID, embed_dim=16, num_layers=1)
    with pytest.raises(ValueError, match="network 1 has other parameters"):
        StackedNetworks([small, large])
    with pytest.raises(ValueError, match="at least two"):
        StackedNetworks([small])
    stacked = StackedNetworks([small, small])
    with pytest.raises(ValueError, match="network indices must lie in 0..1"):
        stacked(torch.zeros(1, 5, *GRID.shape), np.array([2]))


def test_mlps_without_gradients_give_the_autograd_functions_result_bitwise():
    torch.manual_seed(0)
    pointwise, token = PointwiseMLP(3, 8, 2), TokenMLP(3, 8, 2)
    x, tokens = torch.randn(2, 3, 4, 5), torch.randn(2, 7, 3)
    with_grad = pointwise(x), token(tokens)
    assert all(t.requires_grad for t in with_grad)  # through the autograd functions
    with torch.no_grad():
        plain = pointwise(x), token(tokens)
    for a, b in zip(with_grad, plain, strict=True):
        assert torch.equal(a.detach(), b)


def test_steppers_of_one_recipe_stack_and_others_say_why_not():
    steppers = [make_stepper(seed=0), make_stepper(seed=1), make_stepper(seed=2)]
    assert why_not_stackable(steppers) is None
    stacked = stack_backbones(steppers)
    assert isinstance(stacked, StackedBackbones) and len(stacked) == 3
    # another normaliser (a model trained on another store)
    other = make_stepper(seed=1)
    other.normalizer = Normalizer(other.channels, MEANS, STDS * 2, STDS)
    assert "another configuration" in why_not_stackable([steppers[0], other])
    assert stack_backbones([steppers[0], other]) is None
    # another architecture
    assert "another configuration" in why_not_stackable(
        [steppers[0], make_stepper(seed=1, history=2)]
    )
    assert why_not_stackable(steppers[:1]) == "a single checkpoint"
    # another family (DYffusion's two networks, a boosted pair) runs a batch per checkpoint
    family = make_stepper(seed=1)
    family.__class__ = type("OtherFamily", (BackboneStepper,), {})
    assert "only backbone steppers" in why_not_stackable([steppers[0], family])
    with pytest.raises(NotStackableError, match="cannot be stacked"):
        StackedBackbones([steppers[0], other])


def test_a_stacked_step_equals_each_checkpoints_own_step():
    steppers = [make_stepper(seed=0), make_stepper(seed=1)]
    stacked = stack_backbones(steppers)
    assert stacked is not None
    generator = torch.Generator().manual_seed(3)
    state = torch.as_tensor(MEANS, dtype=torch.float32).reshape(1, 1, -1, 1, 1) + torch.as_tensor(
        STDS, dtype=torch.float32
    ).reshape(1, 1, -1, 1, 1) * torch.randn(4, 1, len(CHANNELS), 16, 32, generator=generator)
    times = np.array(["2020-01-01T06"] * 4, dtype="datetime64[ns]")
    models = np.array([0, 1, 1, 0])
    got = stacked.for_rows(models).advance(state, times)
    for row, k in enumerate(models):
        expected = steppers[k].advance(state[row : row + 1], times[row : row + 1])
        torch.testing.assert_close(got[row : row + 1], expected, rtol=1e-5, atol=1e-3)
    assert stacked.strategy["strategy"] == "vmap"
    # the view shares everything but the network with the first checkpoint's stepper
    view = stacked.for_rows(models)
    assert view.normalizer is steppers[0].normalizer and view.model is not steppers[0].model
    assert steppers[0].model is stacked.networks.networks[0]  # the stepper itself is unchanged
