"""Customer value platform: raw shop data to a value score per customer, on Spark and Delta Lake."""

__version__ = "0.1.0"
