"""Skill scoring the WeatherBench2 way: metrics, regions, baselines, spectra, plots.

The entry point for a whole forecast is :func:`forecast.scoring.score.score_forecast`;
the metrics over xarray objects are in :mod:`forecast.scoring.metrics`.
"""
