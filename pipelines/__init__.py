"""Ingestion pipelines: sources, lexicon mapping, regridding, statistics, the store writer.

Importing this package does nothing beyond defining names.
"""
