"""Climate runs: on-the-fly period means, histograms and snapshots of long rollouts.

:class:`~inference.climate.writer.ClimateWriter` is the run workflow's writer
of a climate run; :mod:`inference.climate.reduce` holds the accumulators of
one batch of members; :mod:`inference.climate.layout` the CF layout of the
products; :mod:`inference.climate.stores` their files.
"""

from inference.climate.reduce import HistogramSpec
from inference.climate.stores import product_path
from inference.climate.writer import HISTOGRAMS, ClimateWriter

__all__ = ["HISTOGRAMS", "ClimateWriter", "HistogramSpec", "product_path"]
