"""Bulk scoring in Spark: models loaded once per Python worker, applied with mapInPandas."""
