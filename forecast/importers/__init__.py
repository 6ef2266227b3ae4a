"""Importers of published model weights: NVIDIA's FourCastNet releases into checkpoints of ours.

>>> from forecast.importers import IMPORTERS
>>> sorted(IMPORTERS)
['fourcastnet', 'fourcastnet-v2-small']

``convert_published(name, weights, means, stds)`` reads the files as the
publisher distributes them (safely: no pickled code runs), builds our
implementation of the architecture, moves every published tensor into it
(a one-line error names the first key or shape that does not fit), and
returns a stepper that :func:`forecast.checkpoint.save_checkpoint` writes as an ordinary checkpoint (:mod:`forecast.checkpoint`) with our channel
ids, the publisher's normaliser, a 6 h step and the grid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forecast.errors import ConfigError
from forecast.importers import fourcastnet, fourcastnet_v2
from forecast.importers.published import file_digest, read_published_weights
from forecast.importers.spec import Imported, Importer, Option

IMPORTERS: dict[str, Importer] = {
    importer.name: importer for importer in (fourcastnet_v2.IMPORTER, fourcastnet.IMPORTER)
}

__all__ = ["IMPORTERS", "Imported", "Importer", "Option", "convert_published", "get_importer"]


def get_importer(name: str) -> Importer:
    """The importer called ``name``; a ConfigError listing the known ones otherwise."""
    if name not in IMPORTERS:
        raise ConfigError(
            f"unknown published model {name!r}", hint=f"use one of {', '.join(IMPORTERS)}"
        )
    return IMPORTERS[name]


def convert_published(
    name: str,
    weights: str | Path,
    means: str | Path,
    stds: str | Path,
    options: dict[str, Any] | None = None,
) -> Imported:
    """Read published files and return our stepper holding the weights, with its provenance.

    Parameters
    ----------
    name : str
        A key of :data:`IMPORTERS`.
    weights, means, stds : str or Path
        The publisher's weights file and ``global_means.npy``/``global_stds.npy``.
    options : dict, optional
        Overrides of the importer's :class:`Option` defaults (unknown keys are refused).

    Returns
    -------
    Imported
        The stepper (eval mode, CPU) and a JSON-able provenance record.

    Raises
    ------
    ConfigError
        Unknown importer or option.
    CheckpointError
        Unreadable or unsafe files, or weights that do not fit the architecture.
    """
    importer = get_importer(name)
    given = dict(options or {})
    unknown = sorted(set(given) - {option.name for option in importer.options})
    if unknown:
        allowed = ", ".join(option.name for option in importer.options)
        raise ConfigError(
            f"{', '.join(unknown)} do(es) not apply to {name}", hint=f"it takes {allowed}"
        )
    merged = importer.defaults() | given
    weights, means, stds = Path(weights), Path(means), Path(stds)
    published = read_published_weights(weights)
    imported = importer.convert(published, means, stds, merged)
    imported.provenance = {
        "imported_from": name,
        "description": importer.description,
        "weights": str(weights.resolve()),
        "weights_sha256": file_digest(weights),
        "means": str(means.resolve()),
        "stds": str(stds.resolve()),
        "source": importer.source,
        "licence": importer.licence,
        **imported.provenance,
    }
    return imported
