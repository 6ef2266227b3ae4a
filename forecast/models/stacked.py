"""Networks of one architecture stepped as one: the backbones of a multi-checkpoint ensemble.

A multi-seed ensemble runs ``K`` networks that differ only in their weights.
Stepping each on its own members makes ``K`` small calls per step, and on a
small grid the per-call overhead dominates (docs/performance.md, "Rollout").
:class:`StackedNetworks` runs one batch whose rows belong to any of the ``K``
networks in a single call: the weights stacked along a leading axis
(:func:`torch.func.stack_module_state`) and the network applied to each
slice of rows by :func:`torch.vmap` over :func:`torch.func.functional_call`.

Whether ``vmap`` can batch a network is checked on the first call that has
rows of every network, not assumed: that call also runs each network on its
own rows and keeps the batched strategy only if it agrees to float rounding
(:data:`AGREEMENT`); otherwise (an operation without a batching rule, a
network that keeps state outside its parameters and buffers) every later
call loops over the networks, which is what an ensemble did before. A batch
without rows of some network (``--batch-size`` below the number of
checkpoints, the last batch of an init) loops too, rather than run those
networks for nothing; a run's plan fixes which batches do, so a resumed run
computes what an uninterrupted one does.
:attr:`StackedNetworks.strategy` and :attr:`StackedNetworks.reason` say
which one runs and why.

For inference only. The weights are held once: stacking copies each
network's tensors into its slice of the stacked ones and makes the network's
own tensors views of that slice (:func:`stack_in_place`), so the networks'
memory is freed as it is stacked and the looped strategy still calls them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["AGREEMENT", "RowPlan", "StackedNetworks", "stack_in_place"]

#: Largest difference between the batched and the looped output on the first
#: call, relative to the largest magnitude of the looped one, for the batched
#: strategy to be kept (float32 rounding of another summation order is ~1e-6).
AGREEMENT = 1e-4


def _allow_vmap_of_torch_harmonics() -> None:
    """Let ``torch.vmap`` batch torch-harmonics' contiguity wrapper.

    torch-harmonics (0.9.3) routes its FFT outputs through an autograd
    function (``torch_harmonics.utils._EnsureContiguous``) whose forward is a
    copy into contiguous memory and which has no batching rule, so ``vmap``
    refuses the spherical transforms. A copy commutes with batching, so the
    rule that torch generates from its forward is exact; asking for it
    changes nothing outside ``vmap``.
    """
    try:
        from torch_harmonics import utils
    except ImportError:
        return
    function = getattr(utils, "_EnsureContiguous", None)
    if function is not None and "setup_context" in vars(function):
        function.generate_vmap_rule = True


class StackedNetworks(nn.Module):
    """``K`` networks with the same parameter names and shapes, applied to rows of one batch.

    Parameters
    ----------
    networks : sequence of nn.Module
        The networks, in checkpoint order, on one device; shared, not copied
        (the looped strategy calls them).

    Raises
    ------
    ValueError
        Fewer than two networks, or networks whose parameters or buffers
        differ in names, shapes or dtypes.
    """

    def __init__(self, networks: Sequence[nn.Module]):
        super().__init__()
        if len(networks) < 2:
            raise ValueError("stacking needs at least two networks")
        first = _signature(networks[0])
        for k, network in enumerate(networks[1:], start=1):
            if _signature(network) != first:
                raise ValueError(f"network {k} has other parameters or buffers than network 0")
        self.networks = nn.ModuleList(networks)
        self.strategy = "untried"  # "vmap" or "loop" after the first call
        self.reason = ""
        self._stacked: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        self._base: nn.Module | None = None

    def __len__(self) -> int:
        return len(self.networks)

    def plan(self, models: np.ndarray) -> RowPlan:
        """The :class:`RowPlan` of a batch whose row ``r`` runs network ``models[r]``."""
        return RowPlan(models, len(self))

    def forward(self, x: torch.Tensor, rows: RowPlan | np.ndarray) -> torch.Tensor:
        """Row ``r`` of ``x`` through network ``models[r]``.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, ...)``, the networks' input.
        rows : RowPlan or numpy.ndarray
            The network of each row: a plan made once for a batch that is
            stepped many times (:meth:`plan`), or the ``(batch,)`` indices.

        Returns
        -------
        torch.Tensor
            ``(batch, ...)``, the networks' outputs in the rows' order.
        """
        plan = rows if isinstance(rows, RowPlan) else self.plan(rows)
        if plan.count != len(self):
            raise ValueError(f"a plan for {plan.count} networks, not {len(self)}")
        if plan.models.shape != (x.shape[0],):
            raise ValueError(f"{plan.models.shape} network indices for a batch of {x.shape[0]}")
        if self.strategy == "loop" or not plan.complete:
            # a batch without rows of some network: vmap would run those networks for nothing
            return self._loop(x, plan)
        if self.strategy == "vmap":
            return self._vmap(x, plan)
        return self._first_call(x, plan)

    def _first_call(self, x: torch.Tensor, plan: RowPlan) -> torch.Tensor:
        """Run both strategies; keep ``vmap`` only if it works and agrees with the loop."""
        looped = self._loop(x, plan)
        try:
            batched = self._vmap(x, plan)
        except (RuntimeError, NotImplementedError, TypeError) as err:
            self.strategy, self.reason = "loop", f"vmap refused: {' '.join(str(err).split())[:200]}"
            self._stacked = self._base = None
            return looped
        scale = float(looped.abs().max()) if looped.numel() else 0.0
        error = float((batched - looped).abs().max()) if looped.numel() else 0.0
        # float32: AGREEMENT; a coarser output dtype (bf16 under autocast) gets its own rounding
        tolerance = max(AGREEMENT, 64 * torch.finfo(looped.dtype).eps)
        if not np.isfinite(error) or error > tolerance * max(scale, 1e-30):
            self.strategy = "loop"
            self.reason = f"vmap differs from the loop by {error:.3g} (largest value {scale:.3g})"
            self._stacked = self._base = None
            return looped
        self.strategy, self.reason = "vmap", f"agrees with the loop to {error:.3g}"
        return batched  # every call of a run takes one strategy, so a resumed run computes the same

    def _loop(self, x: torch.Tensor, plan: RowPlan) -> torch.Tensor:
        """Each network on its own rows."""
        parts = [
            self.networks[k](x.index_select(0, plan.index(f"rows{k}", x.device)))
            for k in plan.present
        ]
        out = torch.cat(parts)
        return out if len(parts) == 1 else out.index_select(0, plan.index("unloop", x.device))

    def _vmap(self, x: torch.Tensor, plan: RowPlan) -> torch.Tensor:
        """One call: rows gathered into ``(n, K, ...)`` (short networks padded), vmapped over ``K``."""
        if self._stacked is None:
            _allow_vmap_of_torch_harmonics()
            self._base = copy.deepcopy(self.networks[0]).to("meta")  # before its tensors are views
            self._stacked = stack_in_place(list(self.networks))
        count = len(self)
        gathered = x.index_select(0, plan.index("gather", x.device))
        gathered = gathered.reshape(plan.per, count, *x.shape[1:])
        base = self._base
        params, buffers = self._stacked

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rows_of_one: torch.Tensor):
            return torch.func.functional_call(base, (p, b), (rows_of_one,))  # type: ignore[arg-type]

        out = torch.vmap(one, in_dims=(0, 0, 1), out_dims=1)(params, buffers, gathered)
        out = out.reshape(plan.per * count, *out.shape[2:])
        if plan.padded:  # drop the outputs of the padding rows
            out = out.index_select(0, plan.index("kept", x.device))
        result = out.new_empty((x.shape[0], *out.shape[1:]))
        result[plan.index("scatter", x.device)] = out
        return result


class RowPlan:
    """Where the rows of each network are in one batch, for both strategies.

    Made once per batch (:meth:`StackedNetworks.plan`) and used at each of
    its steps: the index arithmetic is numpy, and each index is sent to a
    device once.

    Parameters
    ----------
    models : numpy.ndarray
        Shape ``(batch,)``, int: the network of each row.
    count : int
        The number of networks.

    Raises
    ------
    ValueError
        An index outside ``0 .. count - 1``.
    """

    def __init__(self, models: np.ndarray, count: int):
        models = np.asarray(models, dtype=np.int64).reshape(-1)
        if models.size and (models.min() < 0 or models.max() >= count):
            raise ValueError(f"network indices must lie in 0..{count - 1}")
        self.models, self.count = models, count
        rows = [np.flatnonzero(models == k) for k in range(count)]
        #: the networks with rows, and whether every network has some
        self.present = [k for k in range(count) if len(rows[k])]
        self.complete = len(self.present) == count
        self.per = max((len(r) for r in rows), default=0)
        # (per, K) row positions; a network with fewer rows repeats one (its output is dropped)
        grid = np.stack([np.resize(r if len(r) else [0], self.per) for r in rows], axis=1)
        kept = np.stack([np.arange(self.per) < len(r) for r in rows], axis=1).reshape(-1)
        self.padded = not kept.all()
        looped = [rows[k] for k in self.present]  # the loop's output order
        self._host = {
            **{f"rows{k}": rows[k] for k in self.present},
            "unloop": np.argsort(np.concatenate(looped)) if looped else np.empty(0, np.int64),
            "gather": grid.reshape(-1),
            "kept": np.flatnonzero(kept),
            "scatter": grid.reshape(-1)[kept],
        }
        self._device: dict[tuple[str, str], torch.Tensor] = {}

    def index(self, name: str, device: torch.device) -> torch.Tensor:
        """The index ``name`` as an int64 tensor on ``device`` (sent there once)."""
        key = (name, str(device))
        if key not in self._device:
            self._device[key] = torch.as_tensor(self._host[name], dtype=torch.int64, device=device)
        return self._device[key]


def stack_in_place(
    networks: Sequence[nn.Module],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Parameters and buffers of ``networks`` stacked along a new first axis, held once.

    What :func:`torch.func.stack_module_state` returns (without gradients),
    except that each network's own tensors are replaced by views of their
    slices as they are copied: the networks compute what they computed, and
    the weights are not held twice (the peak is one tensor more than the
    networks held).

    Parameters
    ----------
    networks : sequence of nn.Module
        Networks with the same parameter and buffer names, shapes and dtypes.

    Returns
    -------
    params, buffers : dict of str to torch.Tensor
        ``(len(networks), ...)`` tensors by name.
    """
    params: dict[str, torch.Tensor] = {}
    buffers: dict[str, torch.Tensor] = {}
    # normal tensors even when the first call comes under inference mode, so that the networks
    # stay usable outside it
    with torch.inference_mode(False), torch.no_grad():
        # the names first (tied tensors under their first name only, as torch's): stacking
        # replaces the tensors that the generators would tell apart
        aliases = [_aliases(network) for network in networks]
        for name, first in list(networks[0].named_parameters()):
            params[name] = _stack(networks, aliases, name, first, parameter=True)
        for name, buffer in list(networks[0].named_buffers()):
            buffers[name] = _stack(networks, aliases, name, buffer, parameter=False)
    return params, buffers


def _aliases(network: nn.Module) -> dict[str, list[str]]:
    """Every name of each of ``network``'s parameters and buffers, by its first name.

    A tied tensor (one held under several names) has several; any other, its own.
    """
    first: dict[int, str] = {}
    names: dict[str, list[str]] = {}
    tensors = [
        *network.named_parameters(remove_duplicate=False),
        *network.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in tensors:
        names.setdefault(first.setdefault(id(tensor), name), []).append(name)
    return names


def _stack(
    networks: Sequence[nn.Module],
    aliases: Sequence[dict[str, list[str]]],
    name: str,
    first: torch.Tensor,
    parameter: bool,
) -> torch.Tensor:
    """One tensor of every network in its slice of a new stack; each network given the view.

    Every name under which a network holds that tensor (``aliases``, from
    :func:`_aliases`) is given the same view, so a tie stays and the old tensor is freed.
    """
    whole = torch.empty((len(networks), *first.shape), dtype=first.dtype, device=first.device)
    for k, network in enumerate(networks):
        tensor = network.get_parameter(name) if parameter else network.get_buffer(name)
        whole[k].copy_(tensor)
        view = whole[k]
        weight = nn.Parameter(view, tensor.requires_grad) if parameter else None
        for alias in aliases[k][name]:
            path, _, leaf = alias.rpartition(".")
            module = network.get_submodule(path)
            if parameter:
                module.register_parameter(leaf, weight)
            else:
                persistent = leaf not in module._non_persistent_buffers_set
                module.register_buffer(leaf, view, persistent=persistent)
    return whole


def _signature(network: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of a network's parameters and buffers."""
    tensors = [*network.named_parameters(), *network.named_buffers()]
    return [(name, tuple(t.shape), t.dtype) for name, t in tensors]
