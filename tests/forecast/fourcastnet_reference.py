"""The publishers' networks, from the PyPI packages ai-models-fourcastnetv2 and ai-models-fourcastnet.

The packages are installed without their dependencies (see the Makefile). Their
network modules import a few names they never use at inference; only those are
shimmed, here, while the modules are imported, and removed again afterwards:

- ``numpy.lib.arraypad`` (``from numpy.lib.arraypad import pad`` in the v2
  layers module; never called; numpy 2 made the module private);
- ``timm.models.layers`` (``DropPath``, only built for ``drop_path_rate > 0``,
  and ``trunc_normal_``, only used to initialise weights that the tests
  overwrite; timm would bring torchvision and more).

Everything the forward passes use (torch, torch-harmonics, einops) is real.
Helpers save random weights in the published layout: ``{"model_state": ...}``
with every key prefixed ``module.`` as ``DistributedDataParallel`` writes it.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from pathlib import Path

import numpy as np
import torch


@contextlib.contextmanager
def _shimmed(modules: dict[str, types.ModuleType]):
    missing = {}
    for name, module in modules.items():
        try:
            importlib.import_module(name)
        except ImportError:
            missing[name] = module
    saved = {name: sys.modules.get(name) for name in missing}
    sys.modules.update(missing)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _unused(*args, **kwargs):
    raise AssertionError("a shimmed function was called by the reference network")


def _arraypad_shim() -> dict[str, types.ModuleType]:
    module = types.ModuleType("numpy.lib.arraypad")
    module.pad = _unused
    return {"numpy.lib.arraypad": module}


def _timm_shim() -> dict[str, types.ModuleType]:
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = _unused
    layers.trunc_normal_ = torch.nn.init.trunc_normal_  # initialisation only
    timm.models, models.layers = models, layers
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers}


def sfnonet():
    """The module ``ai_models_fourcastnetv2.fourcastnetv2.sfnonet`` (FourierNeuralOperatorNet)."""
    with _shimmed(_arraypad_shim()):
        return importlib.import_module("ai_models_fourcastnetv2.fourcastnetv2.sfnonet")


def afnonet():
    """The module ``ai_models_fourcastnet.afnonet`` (AFNONet)."""
    with _shimmed(_timm_shim()):
        return importlib.import_module("ai_models_fourcastnet.afnonet")


def randomize(network: torch.nn.Module, seed: int, scale: float = 0.5) -> torch.nn.Module:
    """Give every parameter random values (normal, ``scale`` relative to the layer's fan-in).

    Zero-initialised parameters (positional embeddings, norms, biases) would
    otherwise leave parts of a mapping untested.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            fan_in = parameter[0].numel() if parameter.ndim > 1 else 1
            noise = torch.randn(parameter.shape, generator=generator)
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1.0 + 0.1 * noise)
            else:
                parameter.copy_(noise * scale / max(fan_in, 1) ** 0.5)
    return network.eval()


def save_published(network: torch.nn.Module, path: Path, **extra) -> Path:
    """``torch.save({"model_state": {"module." + key: tensor}, **extra})``, as the publishers ship it."""
    state = {f"module.{key}": value for key, value in network.state_dict().items()}
    torch.save({"model_state": state, **extra}, path)
    return path


def save_statistics(mean: np.ndarray, std: np.ndarray, folder: Path) -> tuple[Path, Path]:
    """``global_means.npy`` and ``global_stds.npy`` of shape ``(1, C, 1, 1)``."""
    means, stds = folder / "global_means.npy", folder / "global_stds.npy"
    np.save(means, np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1))
    np.save(stds, np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1))
    return means, stds
