"""DYffusion's cold sampling: a horizon of states from an interpolator and a forecaster.

Rühling Cachay et al. 2023 (arXiv 2306.01984), Algorithm 2, with the
interpolation times ``i_n = n`` (one per store step, no auxiliary steps).
From the state ``x_t`` at the start of a horizon of ``h`` steps, with an
interpolator ``I(x_{t+h}, i)`` (conditioned on ``x_t``) and a forecaster
``F(x_{t+i}, i)`` that predicts the end of the horizon::

    x^(0) = x_t
    for n = 0 .. h-1:
        e_n       = F(x^(n), n)                     # the end of the horizon, seen from n
        x^(n+1)   = x^(n) - I(e_n, n) + I(e_n, n+1) # the cold-sampling update
    with I(e, 0) = x^(0) (the state itself) and I(e, h) = e (the forecast itself)

so ``x^(1) = I(e_0, 1)`` and ``x^(h) = x^(h-1) + e_{h-1} - I(e_{h-1}, h-1)``.
The correction ``- I(e_n, n) + x^(n)`` keeps each step anchored on the state
reached so far rather than on the interpolator's reconstruction of it. With
an exact interpolator and forecaster (``I(e, i)`` the true state at ``t+i``
whenever ``e`` is the true end) the update reproduces the true trajectory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["cold_sample", "network_calls_per_horizon"]

#: ``interpolate(end, i) -> state at t + i`` (conditioned on the horizon's start).
Interpolate = Callable[[torch.Tensor, int], torch.Tensor]
#: ``forecast(state, i) -> state at t + h`` from the state at ``t + i``.
Forecast = Callable[[torch.Tensor, int], torch.Tensor]


def cold_sample(
    start: torch.Tensor, interpolate: Interpolate, forecast: Forecast, horizon: int
) -> list[torch.Tensor]:
    """The states ``x^(1) .. x^(h)`` of one horizon, by cold sampling.

    Parameters
    ----------
    start : torch.Tensor
        ``x_t``, any shape.
    interpolate : callable
        ``interpolate(end, i)`` for ``0 < i < horizon``: the state at ``t + i``
        between the horizon's start (which the callable knows) and ``end``.
    forecast : callable
        ``forecast(state, i)`` for ``0 <= i < horizon``: the state at ``t + h``
        from ``state``, valid at ``t + i``.
    horizon : int
        ``h``, at least 1 (1: one forecaster call, no interpolation).

    Returns
    -------
    list of torch.Tensor
        ``h`` states shaped like ``start``, valid at ``t + 1 .. t + h``.
    """
    if horizon < 1:
        raise ValueError(f"the horizon must be at least 1 step, got {horizon}")
    state = start
    states = []
    for n in range(horizon):
        end = forecast(state, n)
        following = interpolate(end, n + 1) if n + 1 < horizon else end
        if n == 0:
            state = following  # I(e, 0) is the start itself: the update reduces to I(e, 1)
        else:
            state = state + (following - interpolate(end, n))
        states.append(state)
    return states


def network_calls_per_horizon(horizon: int) -> tuple[int, int]:
    """``(forecaster, interpolator)`` calls of :func:`cold_sample` for one horizon of ``h`` steps.

    ``h`` forecaster calls and ``2 (h - 1)`` interpolator calls (none at ``i = 0``
    and ``i = h``): ``(3h - 2) / h`` network calls per store step.
    """
    return horizon, 2 * (horizon - 1)
