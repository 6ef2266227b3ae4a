"""forecast: AI weather and climate forecasting, end to end.

Importing this package does nothing beyond defining names.
"""

__version__ = "0.1.0"
