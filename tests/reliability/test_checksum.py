"""The kill harness's comparison must bite: a duplicated, lost or changed row changes a table's checksum; what
legitimately differs between two runs (row order, batch ids and run times, the store's own path, the last bits of
a float summed in another order) does not."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from deltalake import write_deltalake

from tests.reliability.test_kill_rerun import checksum


def _table(root: Path, frame: pd.DataFrame) -> Path:
    path = root / "gold" / "t"
    write_deltalake(str(path), frame.reset_index(drop=True), mode="overwrite")
    return path


def _frame(root: Path) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["a", "b", "c"], "value": [1.0, 2.5, 1 / 3],
                         "source": [f"{root.resolve()}/landing/f{i}.csv" for i in range(3)],
                         "_batch_id": ["b1", "b1", "b2"]})


def test_what_may_differ_between_runs_leaves_the_checksum_alone(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    want = checksum(_table(one, _frame(one)), one)
    other = _frame(two).iloc[[2, 0, 1]].assign(_batch_id="b9")               # order, batch ids, another store
    other["value"] = other["value"] * (1 + 1e-13)                            # a sum in another order
    assert checksum(_table(two, other), two) == want
    assert want[0] == 3


def test_a_duplicated_lost_or_changed_row_changes_the_checksum(tmp_path):
    root = tmp_path / "one"
    frame = _frame(root)
    want = checksum(_table(root, frame), root)
    for broken in (pd.concat([frame, frame.iloc[[1]]]),                      # a duplicate (a rerun appended twice)
                   frame.iloc[[0, 1]],                                        # a lost row
                   frame.assign(value=[1.0, 2.5, 0.34]),                      # a changed value
                   frame.assign(customer_id=["a", "b", "b"])):                # two rows swapped for one twice
        assert checksum(_table(root, broken), root) != want, broken
