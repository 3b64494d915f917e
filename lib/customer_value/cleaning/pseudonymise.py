"""Pseudonymised customer ids: HMAC-SHA256 with a key from the environment or a secret scope.

Why keyed: a plain hash of a customer id can be reversed by hashing every possible id; without the key it
cannot. The key never appears in conf/, the repository, logs or query plans (it travels inside the UDF's
closure, not as a SQL literal).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys

import pandas as pd
from pyspark.sql import Column
from pyspark.sql import functions as F

from customer_value.config import PseudonymisationConfig

# Public on purpose: anyone can recompute ids made with it. Generated demo data only.
DEMO_KEY = b"customer-value-demo-key-not-secret"


class MissingKeyError(RuntimeError):
    pass


def load_key(cfg: PseudonymisationConfig) -> bytes:
    """The pseudonymisation key; refuses to go on without one unless demo mode is explicitly on."""
    value = os.environ.get(cfg.key_env)
    if not value and cfg.secret_scope and cfg.secret_key:
        try:
            from pyspark.dbutils import DBUtils  # Databricks only
            from pyspark.sql import SparkSession

            value = DBUtils(SparkSession.getActiveSession()).secrets.get(cfg.secret_scope, cfg.secret_key)
        except ImportError:
            value = None
    if value:
        if len(value) < 16:
            raise MissingKeyError(f"${cfg.key_env} is too short: use at least 16 random characters")
        return value.encode()
    if cfg.demo_mode:
        print("!" * 78 + "\n!! DEMO MODE: customer ids are pseudonymised with a PUBLIC demo key.\n"
              "!! Anyone can reverse them. Use it for generated data only, never for real customers.\n" + "!" * 78,
              file=sys.stderr, flush=True)
        return DEMO_KEY
    raise MissingKeyError(
        f"no pseudonymisation key: set ${cfg.key_env} (or pseudonymisation.secret_scope/secret_key on Databricks). "
        "For generated demo data only: --set pseudonymisation.demo_mode=true"
    )


def hmac_hex(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonym(column: Column, key: bytes) -> Column:
    """HMAC-SHA256(key, id) as 64 hex characters; null stays null."""

    @F.pandas_udf("string")
    def _hmac(ids: pd.Series) -> pd.Series:
        return ids.map(lambda v: None if v is None else hmac_hex(key, v))

    return _hmac(column)
