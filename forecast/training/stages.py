"""Training in stages: which stage an optimiser step belongs to, its objective, its validation.

A single-network stepper has one stage, ``"model"``, over the whole run. A
:class:`~forecast.stepper.StagedStepper` (DYffusion: ``"interpolator"``, then
``"forecaster"``) has one stage per network: the first ``first_stage_steps``
optimiser steps train the first, the rest the second, each with its own
optimiser and its own warm-up and cosine decay (:class:`StagePlan`); a
stepper with a joint stage (DYffusion's ``"chain"``, every network at once on
its sampled block) may end with ``final_steps`` of it.
:class:`StageObjective` is the module the loop (and DistributedDataParallel)
calls for a staged stepper's loss; :func:`score_interpolation` validates an
interpolator against the linear interpolation between the true ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from forecast.errors import ConfigError
from forecast.forcings import Forcings, select_step
from forecast.stepper import StagedStepper
from forecast.steppers.dyffusion import DYffusionStepper
from forecast.training.distributed import DistributedContext
from forecast.training.evaluate import RolloutScores
from forecast.training.optim import cosine_warmup_factor
from forecast.training.rollout import rollout_forcings

__all__ = ["SINGLE_STAGE", "StageObjective", "StagePlan", "score_interpolation"]

#: The name of the one stage of a single-network stepper.
SINGLE_STAGE = "model"


@dataclass(frozen=True)
class StagePlan:
    """The stages of a run and the optimiser steps of each.

    Attributes
    ----------
    names : tuple of str
        Stage names, in order.
    bounds : tuple of (int, int)
        ``(first, stop)`` optimiser steps of each stage (``stop`` excluded).
    """

    names: tuple[str, ...]
    bounds: tuple[tuple[int, int], ...]

    @classmethod
    def single(cls, max_steps: int) -> StagePlan:
        """One stage over the whole run."""
        return cls((SINGLE_STAGE,), ((0, max_steps),))

    @classmethod
    def split(
        cls,
        names: Iterable[str],
        max_steps: int,
        first_stage_steps: int | None,
        final_steps: int = 0,
        final_name: str | None = None,
    ) -> StagePlan:
        """Two stages: ``first_stage_steps`` (default half) of ``max_steps``, then the rest.

        With ``final_steps``, the last ``final_steps`` of ``max_steps`` are a
        third stage, ``final_name`` (the stepper's joint stage), and the second
        takes what is between; the default first stage is then half of what
        is left before it.

        Raises
        ------
        ConfigError
            Not two stages, a final stage without a name, or a stage left with no step.
        """
        names = tuple(names)
        if len(names) != 2:
            raise ConfigError(f"a staged model needs two stages, this one has {list(names)}")
        if final_steps and final_name is None:
            raise ConfigError(
                "--chain-steps fine-tunes every network of a model with a joint stage; "
                "this model has none",
                hint="drop --chain-steps",
            )
        separate = max_steps - final_steps
        if final_steps and separate < 2:
            raise ConfigError(
                f"--chain-steps {final_steps} leaves fewer than 2 of --max-steps {max_steps} "
                f"to the {names[0]} and the {names[1]}",
                hint="raise --max-steps or lower --chain-steps",
            )
        first = separate // 2 if first_stage_steps is None else int(first_stage_steps)
        if not 1 <= first < separate:
            raise ConfigError(
                f"--interpolator-steps {first} leaves no step to the {names[1]} "
                f"(--max-steps {max_steps}"
                + (f", --chain-steps {final_steps})" if final_steps else ")"),
                hint=f"give --interpolator-steps between 1 and {separate - 1}",
            )
        plan = cls(names, ((0, first), (first, separate)))
        if final_steps:
            assert final_name is not None
            plan = cls((*names, final_name), (*plan.bounds, (separate, max_steps)))
        return plan

    def stage_at(self, step: int) -> str:
        """The stage optimiser step ``step`` (0-based) belongs to (the last one past the end)."""
        for name, (_, stop) in zip(self.names, self.bounds, strict=True):
            if step < stop:
                return name
        return self.names[-1]

    def is_last(self, name: str) -> bool:
        """Whether ``name`` is the final stage (the one ``best.ckpt`` is chosen in)."""
        return name == self.names[-1]

    def lr_factor(self, step: int, warmup_steps: int, min_factor: float) -> float:
        """Learning-rate multiplier of ``step``: warm-up and cosine decay within its stage."""
        first, stop = self.bounds[self.names.index(self.stage_at(step))]
        return cosine_warmup_factor(step - first, stop - first, warmup_steps, min_factor)


class StageObjective(nn.Module):
    """The current stage's prediction and target: ``stepper.training_pairs`` as one module.

    Wrapping the call in a module's ``forward`` lets DistributedDataParallel
    see one forward per backward, as :class:`~forecast.training.rollout.Rollout` does.
    """

    def __init__(self, stepper: StagedStepper):
        super().__init__()
        self.stepper = stepper

    def forward(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        forcings: Forcings,
        generator: torch.Generator,
        members: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prediction, target)``, each ``(rows, channel, lat, lon)``, normalised.

        ``rows`` is the batch (``h`` times the batch in DYffusion's ``"chain"``
        stage: every state of the sampled horizon). With ``members > 1`` the
        prediction is an ensemble ``(members, rows, ...)``.
        """
        return self.stepper.training_pairs(history, targets, forcings, generator, members)


@torch.no_grad()
def score_interpolation(
    stepper: DYffusionStepper,
    batches: Iterable[dict],
    times: np.ndarray,
    latitude_weights: np.ndarray,
    device: torch.device,
    context: DistributedContext | None = None,
) -> RolloutScores:
    """RMSE of a DYffusion interpolator at ``i = 1 .. h-1`` from the true ends of each window.

    The baseline (in the ``persistence`` field) is the linear interpolation
    between the true ends. Dropout off (eval mode); physical units,
    area-weighted as :func:`~forecast.training.evaluate.score_rollouts`.

    Parameters
    ----------
    stepper : DYffusionStepper
        Has ``interpolate(start, end, offset, forcings)`` and ``horizon``.
    batches : iterable of dict
        Loader batches of windows with ``horizon`` targets.
    times : numpy.ndarray
        The store's times.
    latitude_weights : numpy.ndarray
        ``(lat,)``, mean 1.
    device : torch.device
    context : DistributedContext, optional
        Sums the scores over ranks.

    Returns
    -------
    RolloutScores
        ``model`` and ``persistence`` of shape ``(h - 1, channel)``.
    """
    was_training = stepper.training
    stepper.eval()
    horizon = stepper.horizon
    weights = torch.as_tensor(latitude_weights, dtype=torch.float64, device=device).reshape(-1, 1)
    sums = torch.zeros(2, horizon - 1, len(stepper.channels), dtype=torch.float64, device=device)
    samples = torch.zeros(1, dtype=torch.float64, device=device)
    try:
        for batch in batches:
            history = stepper.normalize(batch["history"].to(device))
            targets = batch["targets"].to(device).double()
            starts = np.asarray(batch["start"])
            forcings = select_step(rollout_forcings(stepper, times, starts, 1, device), 0)
            end = stepper.normalize(targets[:, horizon - 1])
            last = history[:, -1]
            for i in range(1, horizon):
                offset = torch.full((len(starts),), i, dtype=torch.long, device=device)
                model = stepper.denormalize(stepper.interpolate(history, end, offset, forcings))
                linear = stepper.denormalize(last + (i / horizon) * (end - last))
                truth = targets[:, i - 1]
                for row, values in enumerate((model, linear)):
                    error = ((values.double() - truth) ** 2 * weights).mean(dim=(-2, -1))
                    sums[row, i - 1] += error.sum(dim=0)
            samples += len(starts)
        if context is not None:
            context.all_reduce_sum(sums)
            context.all_reduce_sum(samples)
    finally:
        stepper.train(was_training)
    if samples.item() == 0:
        raise ValueError("no validation windows to score")
    rmse = torch.sqrt(sums / samples).cpu().numpy()
    return RolloutScores(tuple(stepper.channels), rmse[0], rmse[1], None, int(samples.item()))
