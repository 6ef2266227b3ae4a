"""SpecBoost: a second backbone trained on the one-step residual of a frozen first model.

Qin et al. 2024, *Toward a Better Understanding of Fourier Neural Operators
from a Spectral Perspective* (arXiv 2404.07200): a Fourier neural operator
learns the dominant, low-frequency part of its target well and the rest
poorly; a second operator trained on the first one's prediction residual
recovers much of what was missed, the high frequencies above all.

:class:`BoostedStepper` wraps a frozen :class:`~forecast.steppers.backbone.BackboneStepper`
(the *first* model) and a second backbone (FNO, SFNO or AFNO, the *booster*).
In normalised units, with ``x`` the history and ``f`` the forcings::

    first  = first_model(x, f)                          # frozen
    next   = first + r * booster([inputs(x, f), first])  # r: residual std per channel

where ``inputs(x, f)`` is what the first backbone sees
(:meth:`~forecast.steppers.backbone.BackboneStepper.backbone_inputs`) and ``r``
the area-weighted RMS of the first model's one-step residual on training
windows (measured before the booster is trained, so that the booster's
target has unit scale). The booster's output layer starts at zero
(:func:`~forecast.models.layers.zero_output_layer`), so an untrained boosted
stepper steps exactly as the first model does. Training the boosted stepper on one-step MSE
(``--rollout-steps 1``) is training the booster on the first model's
residual; the stepper, its checkpoint, ``forecast run`` and ``forecast score``
treat the pair as one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from forecast.errors import DataError
from forecast.forcings import Forcings
from forecast.grid import Grid
from forecast.models import build_model, get_spec, hparams_to_dict, validate_hparams
from forecast.models.layers import zero_output_layer
from forecast.steppers.backbone import BackboneStepper
from forecast.steppers.base import StateStepper, as_channel_buffer

__all__ = ["BoostedStepper"]


class BoostedStepper(StateStepper):
    """A frozen first backbone stepper plus a booster backbone trained on its residual.

    Parameters
    ----------
    first : BackboneStepper
        The first model; its parameters are frozen and it stays in eval mode.
    model_name : str
        Registry name of the booster's backbone (``"fno"``, ``"sfno"``, ``"afno"``).
    hparams : dict
        The booster's hyperparameters.
    residual_scale : sequence of float, optional
        ``r`` per channel, normalised units (default 1).
    """

    residual_scale: torch.Tensor  # a buffer (see __init__)

    kind = "boosted"

    def __init__(
        self,
        first: BackboneStepper,
        model_name: str,
        hparams: dict[str, Any] | None = None,
        residual_scale: Sequence[float] | np.ndarray | None = None,
    ):
        if not isinstance(first, BackboneStepper):
            raise DataError(
                f"SpecBoost boosts a backbone (sfno, afno, fno) checkpoint, not a {getattr(first, 'kind', type(first).__name__)!r} one",
                hint="pass --boost a checkpoint trained with --model sfno, afno or fno",
            )
        super().__init__(first.channels, first.grid, first.step, first.normalizer, first.history)
        self.first = first
        self.first.requires_grad_(False)
        self.first.eval()
        self.model_name = model_name
        self.hparams = hparams_to_dict(validate_hparams(get_spec(model_name), hparams or {}))
        n = len(self.channels)
        # zero output layer: a fresh boosted stepper is exactly the first model, so that
        # training starts from the first model's error instead of from that plus the noise
        # of a random booster (0.3-0.8 residual stds per channel on the demo's FNO)
        self.booster = zero_output_layer(
            build_model(model_name, first.in_channels + n, n, first.model_grid, **self.hparams)
        )
        scale = np.ones(n) if residual_scale is None else np.asarray(residual_scale, np.float64)
        if scale.shape != (n,) or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise DataError(f"residual_scale needs {n} positive values, got {scale.tolist()}")
        self.residual_scale_values = scale
        self.register_buffer("residual_scale", as_channel_buffer(scale), persistent=False)

    # -- descriptive ------------------------------------------------------------------------------
    @property
    def forcing_names(self) -> tuple[str, ...]:
        """The first model's inputs."""
        return self.first.forcing_names

    def forcings(self, times: Sequence | np.ndarray) -> dict[str, torch.Tensor]:
        """The first model's forcings at ``times``."""
        return self.first.forcings(times)

    @property
    def prescribed_names(self) -> tuple[str, ...]:
        """The first model's prescribed fields."""
        return self.first.prescribed_names

    def use_forcing_store(self, store) -> None:
        """Hand the forcing store to the first model (whose forcings the booster sees too)."""
        self.first.use_forcing_store(store)

    def train(self, mode: bool = True) -> BoostedStepper:
        """Set the booster's mode; the frozen first model stays in eval mode."""
        super().train(mode)
        self.first.eval()
        return self

    def extra_repr(self) -> str:
        return f"first={self.first.model_name}, booster={self.model_name}"

    # -- the step ---------------------------------------------------------------------------------
    def forward_normalized(self, x: torch.Tensor, forcings: Forcings | None = None) -> torch.Tensor:
        """First model's next normalised state plus the booster's scaled residual.

        ``x`` ``(batch, history, channel, lat, lon)`` -> ``(batch, channel, lat, lon)``.
        Gradients reach the booster (and flow through the frozen first model to
        its input, for multi-step rollouts).
        """
        base = self.first.forward_normalized(x, forcings)
        inputs = torch.cat([self.first.backbone_inputs(x, forcings), base.to(x.dtype)], dim=1)
        residual = self.first.apply_network(self.booster, inputs).to(x.dtype)
        return base + residual * self.residual_scale.to(x.dtype)

    def forward(self, x: torch.Tensor, forcings: Forcings | None = None) -> torch.Tensor:
        """Same as :meth:`forward_normalized`."""
        return self.forward_normalized(x, forcings)

    @torch.no_grad()
    def advance(
        self,
        state: torch.Tensor,
        times: Sequence | np.ndarray,
        *,
        check_finite: bool = True,
        channels: Sequence[str] | None = None,
        grid: Grid | None = None,
    ) -> torch.Tensor:
        """Advance physical states by one step (see :meth:`BackboneStepper.advance`)."""
        state, values = self.prepare_advance(state, times, check_finite, channels, grid)
        normalized = self.normalize(state)
        return self.denormalize(self.forward_normalized(normalized, self.forcings(values)))

    # -- metadata ---------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The first model's config, the booster's backbone and the residual scale."""
        return {
            "stepper": self.kind,
            "model": f"{self.first.model_name}+{self.model_name}",
            **self.coordinates_config(),
            "first": self.first.config(),
            "booster": {"model": self.model_name, "hparams": dict(self.hparams)},
            "residual_scale": self.residual_scale_values.tolist(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BoostedStepper:
        """Inverse of :meth:`config` (weights freshly initialised)."""
        first = BackboneStepper.from_config(config["first"])
        booster = config["booster"]
        return cls(first, booster["model"], booster["hparams"], config["residual_scale"])
