"""Review text to a sentiment score in [-1, 1], in a pandas UDF.

A small multilingual lexicon (the shop's review languages): positive minus negative word hits over all hits.
Deliberately simple and dependency-free; a sentence-embedding model can replace `sentiment` behind the same
column later (see ROADMAP).
"""

from __future__ import annotations

import re

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

POSITIVE = {"excellent", "love", "perfect", "fantastic", "recommend", "good", "nice", "happy", "well", "great",
            "quick", "génial", "parfait", "gut", "sehr", "exceeded", "value"}
NEGATIVE = {"terrible", "broke", "never", "awful", "waste", "disappointing", "late", "damaged", "meh", "not",
            "schlechte", "leider", "mauvais", "refund", "weeks"}
WORD = re.compile(r"[\wéèêëàâäöüßç]+", re.UNICODE)


def sentiment_of(text: str | None) -> float | None:
    if text is None:
        return None
    words = WORD.findall(text.lower())
    pos = sum(w in POSITIVE for w in words)
    neg = sum(w in NEGATIVE for w in words)
    return 0.0 if pos + neg == 0 else (pos - neg) / (pos + neg)


@F.pandas_udf(T.DoubleType())
def _sentiment(texts: pd.Series) -> pd.Series:
    return texts.map(sentiment_of).astype("float64")


def sentiment(column: Column) -> Column:
    return _sentiment(column)
