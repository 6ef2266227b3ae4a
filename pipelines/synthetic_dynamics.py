"""Forced shallow-water dynamics behind the synthetic ERA5-style data.

The model is torch-harmonics' spectral shallow-water solver
(:class:`torch_harmonics.examples.ShallowWaterSolver`) with three additions
that keep it *statistically steady* and give it a seasonal cycle:

- **relaxation** of geopotential and vorticity towards a balanced,
  seasonally moving pair of mid-latitude jets plus a fixed stationary-wave
  pattern (the synthetic planet's "geography"): the zonal means within days,
  the eddies (zonal wavenumbers >= 1) over weeks, so that the jets and the
  climate stay steady while the weather systems live long enough for their
  own dynamics, not the forcing, to decide how they evolve;
- **linear drag** on the divergence, which with the relaxation and the
  hyperdiffusion removes the energy that the forcing puts in;
- **stochastic stirring**: red-noise vorticity forcing at synoptic scales
  (spherical-harmonic degrees 5-11) in mid-latitudes, drawn from a seeded
  :class:`torch.Generator` and renewed at every internal time step (a
  continuous AR(1) process, the same whatever the output step), which keeps
  the jets meandering and the flow chaotic (weather) instead of settling
  into a steady wave.

Time stepping is semi-implicit: third-order Adams-Bashforth for advection
and forcing, Crank-Nicolson for the gravity-wave terms, which allows steps of
3600 s at T15 and 1200 s at T31 (the explicit scheme of the stock solver
blows up at 1800 s at T15).

Everything runs in float64 on the CPU with a fixed thread count so that a
seed reproduces a run bit for bit. The state is a tensor of spectral
coefficients ``(3, lmax, mmax)``: geopotential ``Phi`` (m**2 s**-2),
relative vorticity and divergence (s**-1).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch_harmonics.examples import ShallowWaterSolver

#: Mean fluid depth of the shallow-water layer (m); sets the gravity-wave speed sqrt(g H) ~ 200 m/s.
MEAN_DEPTH = 4000.0
#: Gravity used by the solver (m s**-2).
GRAVITY = 9.80616
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class DynamicsConfig:
    """Physical parameters of the forced shallow-water model.

    Attributes
    ----------
    lmax : int
        Spectral truncation (triangular, ``T(lmax-1)``); the solver runs on an
        equiangular ``2*lmax x 4*lmax`` grid.
    dt : float
        Internal time step in seconds (upper bound; the actual step divides
        the output step).
    relax_days : float
        Relaxation time of the zonal means of geopotential and vorticity
        towards the jets (days).
    eddy_relax_days : float
        Relaxation time of their eddies (zonal wavenumbers >= 1) towards the
        stationary pattern (days).
    drag_days : float
        Damping time of divergence (days).
    stir_amplitude : float
        Root-mean-square vorticity forcing of the stirring (s**-2).
    stir_memory_days : float
        Decorrelation time of the red-noise stirring (days).
    """

    lmax: int = 32
    dt: float = 1200.0
    relax_days: float = 6.0
    eddy_relax_days: float = 50.0
    drag_days: float = 4.0
    stir_amplitude: float = 2.0e-11
    stir_memory_days: float = 1.0


def config_for_output(output_lmax: int) -> DynamicsConfig:
    """Choose the internal resolution for an output grid.

    Parameters
    ----------
    output_lmax : int
        The largest degree the output grid resolves.

    Returns
    -------
    DynamicsConfig
        T15 (``lmax=16``, 3600 s steps) for coarse output grids (those
        that resolve degree 16 at most, such as 32x64), T31 (``lmax=32``,
        1200 s steps) otherwise. The semi-implicit scheme is stable at these
        steps; T31 at 1800 s is not. The stirring is stronger at T15, whose
        hyperdiffusion removes more eddy energy, so that both have similar
        eddy kinetic energy.
    """
    if output_lmax <= 16:
        return DynamicsConfig(lmax=16, dt=3600.0, stir_amplitude=3.0e-11)
    return DynamicsConfig(lmax=32, dt=1200.0, stir_amplitude=2.0e-11)


def season_of(year_fraction: float) -> float:
    """Seasonal phase: +1 in northern mid-winter (late January), -1 in mid-summer."""
    return math.cos(2.0 * math.pi * (year_fraction - 0.055))


class ForcedShallowWater(ShallowWaterSolver):
    """Shallow-water solver with jet relaxation, drag and stochastic stirring.

    Parameters
    ----------
    config : DynamicsConfig
        Resolution and forcing parameters.
    seed : int
        Seed of the initial condition and of the stirring.
    """

    def __init__(self, config: DynamicsConfig, seed: int):
        lmax = config.lmax
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            super().__init__(
                2 * lmax, 4 * lmax, config.dt, lmax=lmax, mmax=lmax, grid="equiangular",
                gravity=GRAVITY, havg=MEAN_DEPTH, hamp=100.0,
            )  # fmt: skip
        self.config = config
        self.generator = torch.Generator().manual_seed(int(seed))
        lat = self.lats.reshape(-1, 1)  # (nlat, 1) radians, north first
        lon = self.lons.reshape(1, -1)  # (1, nlon) radians
        self._lat, self._lon = lat, lon
        ell = self.l  # (lmax, mmax) degree of each coefficient
        band = (ell >= 5) & (ell <= 11)
        self._stir_band = band.to(torch.complex128)
        midlatitudes = torch.exp(-(((lat.abs() - math.radians(45.0)) / math.radians(18.0)) ** 2))
        self._stir_mask = midlatitudes.expand(self.nlat, self.nlon)
        self._stir = torch.zeros(self.lmax, self.mmax, dtype=torch.complex128)
        zonal = torch.arange(self.mmax).reshape(1, -1) == 0  # the m = 0 coefficients
        days = torch.where(zonal, config.relax_days, config.eddy_relax_days)
        self._relax_rate = (
            (1.0 / (days * SECONDS_PER_DAY)).to(torch.float64).expand(self.lmax, self.mmax)
        )
        self._target = torch.zeros(3, self.lmax, self.mmax, dtype=torch.complex128)
        self._history: list[torch.Tensor] = []
        self._substep = config.dt

    # -- forcing ------------------------------------------------------------------------
    def jet_wind(self, year_fraction: float) -> torch.Tensor:
        """Zonal wind of the equilibrium jets (m s**-1), shape ``(nlat, 1)``.

        The northern jet is stronger and further equatorward in northern
        winter; the southern jet varies less (as on Earth).
        """
        season = season_of(year_fraction)
        lat = self._lat
        width = math.radians(9.0)
        north_speed, north_lat = 32.0 + 10.0 * season, math.radians(40.0 - 6.0 * season)
        south_speed, south_lat = 34.0 - 6.0 * season, math.radians(-(45.0 + 4.0 * season))
        wind = north_speed * torch.exp(-(((lat - north_lat) / width) ** 2))
        wind = wind + south_speed * torch.exp(-(((lat - south_lat) / width) ** 2))
        # weak tropical easterlies
        return wind - 6.0 * torch.exp(-((lat / math.radians(15.0)) ** 2))

    def stationary_pattern(self, year_fraction: float) -> torch.Tensor:
        """Zonally asymmetric geopotential pattern (m**2 s**-2), shape ``(nlat, nlon)``.

        A fixed wavenumber-2 ridge/trough pattern in northern mid-latitudes,
        stronger in winter, and a weak wavenumber-1 pattern in the south.
        """
        season = season_of(year_fraction)
        lat, lon = self._lat, self._lon
        north = torch.exp(-(((lat - math.radians(50.0)) / math.radians(15.0)) ** 2))
        south = torch.exp(-(((lat + math.radians(55.0)) / math.radians(15.0)) ** 2))
        pattern = (1500.0 + 700.0 * season) * north * torch.cos(2.0 * (lon - math.radians(110.0)))
        return pattern + 500.0 * south * torch.cos(lon - math.radians(200.0))

    def set_season(self, year_fraction: float) -> None:
        """Set the relaxation target for a time of year (fraction in [0, 1))."""
        u = self.jet_wind(year_fraction).expand(self.nlat, self.nlon)
        wind = torch.stack((u, torch.zeros_like(u)))
        vrtdivspec = self.vrtdivspec(wind)
        vrtdivgrid = self.spec2grid(vrtdivspec)
        # nonlinear balance: lap(Phi + |u|^2/2) = curl((zeta + f) u)
        tmpspec = self.vrtdivspec(wind * (vrtdivgrid[0] + self.coriolis))
        phispec = self.invlap * tmpspec[0] - self.grid2spec(0.5 * torch.sum(wind**2, dim=0))
        phispec = phispec + self.grid2spec(
            self.gravity * self.havg
            + self.stationary_pattern(year_fraction).expand(self.nlat, self.nlon)
        )
        target = torch.zeros_like(self._target)
        target[0] = phispec
        target[1] = vrtdivspec[0]
        self._target = torch.tril(target)

    def _stir_keep(self, interval: float) -> float:
        return math.exp(-interval / (self.config.stir_memory_days * SECONDS_PER_DAY))

    def decay_stirring(self, interval: float) -> None:
        """Advance the stirring by its expected value only (the AR(1) decay, no new noise).

        The forcing a forecaster who knows the current stirring would expect
        (``benchmarks/synth_predictability.py``).
        """
        self._stir = self._stir_keep(interval) * self._stir

    def update_stirring(self, interval: float) -> None:
        """Advance the red-noise stirring by ``interval`` seconds (AR(1) in time)."""
        keep = self._stir_keep(interval)
        shape = (self.lmax, self.mmax)
        real = torch.randn(shape, generator=self.generator, dtype=torch.float64)
        imag = torch.randn(shape, generator=self.generator, dtype=torch.float64)
        noise = torch.tril(torch.complex(real, imag) * self._stir_band)
        noise[:, 0] = noise[:, 0].real  # zonal-mean coefficients are real
        grid = self.spec2grid(noise) * self._stir_mask
        rms = torch.sqrt(torch.mean(grid**2)).clamp_min(1e-300)
        noise = self.grid2spec(grid) * (self.config.stir_amplitude / rms)
        self._stir = keep * self._stir + math.sqrt(1.0 - keep**2) * noise

    def dudtspec(self, uspec: torch.Tensor) -> torch.Tensor:
        """Tendencies: shallow-water dynamics plus relaxation, drag and stirring."""
        tendency = super().dudtspec(uspec)
        relax = self._relax_rate  # zonal means within days, eddies over weeks
        drag = 1.0 / (self.config.drag_days * SECONDS_PER_DAY)
        tendency[0] = tendency[0] + relax * (self._target[0] - uspec[0])
        tendency[1] = tendency[1] + relax * (self._target[1] - uspec[1]) + self._stir
        tendency[2] = tendency[2] - drag * uspec[2]
        return tendency

    # -- state ----------------------------------------------------------------------------
    def initial_state(self, year_fraction: float) -> torch.Tensor:
        """The balanced jets of that season plus seeded random perturbations."""
        self.set_season(year_fraction)
        state = self._target.clone()
        shape = (self.lmax, self.mmax)
        real = torch.randn(shape, generator=self.generator, dtype=torch.float64)
        imag = torch.randn(shape, generator=self.generator, dtype=torch.float64)
        noise = torch.tril(torch.complex(real, imag) * self._stir_band)
        noise[:, 0] = noise[:, 0].real
        state[1] = state[1] + 1.0e-6 * noise
        self._history = []
        return state

    def linear_terms(self, state: torch.Tensor) -> torch.Tensor:
        """The gravity-wave terms of the tendencies, treated implicitly.

        ``dPhi/dt = -Phi_mean * div`` and ``d(div)/dt = -lap(Phi)``.
        """
        linear = torch.zeros_like(state)
        linear[0] = -self.gravity * self.havg * state[2]
        linear[2] = -self.lap * state[0]
        return linear

    def advance(
        self, state: torch.Tensor, seconds: float, stirring: str = "random"
    ) -> torch.Tensor:
        """Integrate ``seconds`` of model time (semi-implicit AB3 / Crank-Nicolson).

        Advection, forcing and the nonlinear terms are stepped with
        third-order Adams-Bashforth; the gravity-wave terms
        (:meth:`linear_terms`) with Crank-Nicolson, which lifts the
        gravity-wave limit on the time step. The internal step is the largest
        step not above ``config.dt`` that divides ``seconds``; the tendency
        history is kept across calls (restarted when the step size changes).
        Before each internal step the stirring advances: ``"random"``
        (:meth:`update_stirring`, the synthetic weather) or ``"mean"``
        (:meth:`decay_stirring`, its expected value, for twin experiments).
        """
        advance_stirring = {"random": self.update_stirring, "mean": self.decay_stirring}[stirring]
        nsteps = max(1, math.ceil(seconds / self.config.dt - 1e-9))
        dt = seconds / nsteps
        if dt != self._substep:
            self._history = []
            self._substep = dt
            self.hyperdiff = torch.exp((-dt / 2 / 3600.0) * (self.lap / self.lap[-1, 0]) ** 4)
        mean_phi = self.gravity * self.havg
        half = 0.5 * dt
        denominator = 1.0 - half * half * mean_phi * self.lap
        for _ in range(nsteps):
            advance_stirring(dt)
            explicit = self.dudtspec(state) - self.linear_terms(state)
            history = [explicit, *self._history][:3]
            while len(history) < 3:
                history.append(history[-1])
            rate = (
                (23.0 / 12.0) * history[0] - (16.0 / 12.0) * history[1] + (5.0 / 12.0) * history[2]
            )
            rhs_phi = state[0] + dt * rate[0] - half * mean_phi * state[2]
            rhs_div = state[2] + dt * rate[2] - half * self.lap * state[0]
            new = torch.empty_like(state)
            new[0] = (rhs_phi - half * mean_phi * rhs_div) / denominator
            new[2] = rhs_div - half * self.lap * new[0]
            new[1] = state[1] + dt * rate[1]
            new[1:] = self.hyperdiff * new[1:]
            state = new
            self._history = history[:2]
        return state
