"""Inference: rollouts, ensembles, writers and scheduled runs.

The function to call is :func:`inference.ensemble.run_forecast`::

    from forecast.checkpoint import checkpoint_digest, load_checkpoint
    from forecast.store import open_store, store_calendar
    from inference.ensemble import run_forecast
    from inference.initial import parse_init_spec

    stepper, metadata = load_checkpoint("model.pt")
    store = open_store("store.zarr")
    inits = parse_init_spec("2020-01-01T00/2020-01-05T00/12h", store_calendar(store))
    run_forecast(stepper, store, inits, 20, "ens.zarr", members=16, perturbation="grf",
                 seed=1, checkpoint_digest=checkpoint_digest("model.pt"), store_path="store.zarr")

Importing this package does nothing beyond defining names.
"""
