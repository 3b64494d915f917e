"""One local Spark session with real Delta per test process, a configuration pointed at a temp folder, the shared
reference run, and how the suite splits over pytest-xdist's worker processes (`make test` / `make test-all` run
two: see `pytest_collection_modifyitems` and `Schedule`)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from customer_value.config import Config, load_config
from customer_value.spark import build_spark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def base_cfg(tmp_path_factory) -> Config:
    root = tmp_path_factory.mktemp("tables")
    return load_config(
        ROOT / "conf" / "local.yaml",
        [f"storage.root={root}", "spark.conf.spark.sql.shuffle.partitions=2", "spark.conf.spark.default.parallelism=2"],
    )


@pytest.fixture(scope="session")
def spark(base_cfg):
    session = build_spark(base_cfg)
    yield session
    session.stop()


@pytest.fixture()
def cfg(tmp_path) -> Config:
    """A configuration whose tables live in this test's own temp folder."""
    return load_config(ROOT / "conf" / "local.yaml", [f"storage.root={tmp_path / 'tables'}"])


# --- built once per test run, across worker processes -----------------------------------------------------------

def run_folder(tmp_path_factory) -> Path:
    """The folder every process of this test run shares: under xdist each worker's temp folder is a subfolder of
    the run's (`<run>/popen-gwN`); in a plain run it is the run's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """`<run folder>/name`, built by `build(folder)` in whichever process asks first while the others wait on a
    file lock, then read by all: an expensive fixture costs one build per run, not one per worker. A build that
    failed is not retried by the next process (it fails at once, quoting the first failure)."""
    shared = run_folder(tmp_path_factory)
    target, done, failed = shared / name, shared / f"{name}.built", shared / f"{name}.failed"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if failed.exists():
            pytest.fail(f"building the shared {name} failed in another worker:\n{failed.read_text()}")
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            try:
                build(target)
            except BaseException as error:
                failed.write_text(f"{type(error).__name__}: {error}"[-5000:])
                raise
            done.touch()
    return target


@pytest.fixture(scope="session")
def reference(spark, tmp_path_factory) -> Path:
    """The shared clean run of every stage through the CLI (tests/reference.py): built once per test run, read by
    the kill harness, the pipeline test and the secret scan. Tests copy what they change, but for the pipeline
    test's reruns (see `TOGETHER`)."""
    from tests import reference as ref

    return built_once(tmp_path_factory, "reference", lambda folder: ref.build(spark, folder))


# --- the split over xdist workers -------------------------------------------------------------------------------

# Fixtures whose store its tests change in turn: every test that uses one runs in the same worker, in order.
STATEFUL = ("shop",)
# Modules that share something outside their temp folders run in one worker: the deploy tests each build this
# checkout's wheel (`pip wheel` writes the source tree's build/ folder; two at once would collide); the pipeline
# test reruns the pipeline on the reference store itself (a copy elsewhere would be new landing files to its
# ingest) while the secret scan reads every file there (the kill harness reads only tables the rerun leaves alone).
TOGETHER = {"tests/deploy/": "wheel", "tests/e2e/test_pipeline.py": "reference-store",
            "tests/reliability/test_secrets.py": "reference-store"}
# Modules whose tests share only read-only or run-wide fixtures and take minutes each: each test may run in any
# worker (a unit of its own), so neither worker is left with a whole module of them at the end.
SPREAD = ("tests/reliability/test_kill_rerun.py", "tests/features/test_point_in_time.py")
# What a work unit costs, in seconds on this 2-core machine (`--durations`, fresh clone of f14933e, a slow day),
# for the order the workers take units in: the longest first, so neither worker is left with a long one at the
# end. A unit not named here costs two seconds a test.
COST = {"shop": 1500, "tests/e2e/test_backtest_transactions.py": 330, "tests/e2e/test_incremental.py": 300,
        "tests/reliability/test_kill_rerun.py": 250, "wheel": 150, "tests/scoring/test_score_job.py": 130,
        "tests/reliability/test_concurrent.py": 120, "tests/features/test_point_in_time.py": 100,
        "tests/models/test_training.py": 110, "tests/e2e/test_smoke.py": 90, "tests/features/test_run.py": 90,
        "tests/reliability/test_hostile_input.py": 90}
# the first unit to start builds the reference run (~6 minutes), then the kill harness spreads over both workers
FIRST = "tests/reliability/test_kill_rerun.py::test_kill_a_horovod_rank"


def _unit(item: pytest.Item) -> str | None:
    """The xdist group `item` runs in: a stateful fixture's, its module's, or none (a unit of its own)."""
    stateful = [f for f in STATEFUL if f in item.fixturenames]
    if stateful:
        return stateful[0]
    module = item.nodeid.split("::")[0]
    together = [g for prefix, g in TOGETHER.items() if module.startswith(prefix)]
    if together:
        return together[0]
    return None if module in SPREAD else module


@pytest.hookimpl(tryfirst=True)     # before xdist reads the marks (`--dist loadgroup`)
def pytest_collection_modifyitems(config, items):
    for item in items:
        unit = _unit(item)
        if unit is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(unit))


def unit_cost(unit: str, tests: int) -> float:
    if unit.startswith(FIRST):
        return float("inf")
    named = [c for prefix, c in COST.items() if unit.startswith(prefix)]
    return named[0] if named else 2.0 * tests


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(Schedule(), "customer-value-schedule")


class Schedule:
    """xdist's group scheduling, its units taken longest first (`COST`) instead of largest test count first."""

    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config, log):
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadGroupScheduling

        class LongestFirst(LoadGroupScheduling):
            def schedule(self) -> None:
                if self.collection is None and self.collection_is_completed and self._check_nodes_have_same_collection():
                    units: dict[str, list[str]] = {}
                    for nodeid in next(iter(self.registered_collections.values())):
                        units.setdefault(self._split_scope(nodeid), []).append(nodeid)
                    order = sorted(units, key=lambda u: -unit_cost(u, len(units[u])))
                    # LoadScopeScheduling fills its queue by test count; give it ours by taking over the collection
                    self.collection = [n for u in order for n in units[u]]
                    for unit in order:
                        self.workqueue[unit] = {n: False for n in units[unit]}
                    for node in self.nodes:
                        self._assign_work_unit(node)
                    for node in self.nodes:
                        self._reschedule(node)
                    return
                super().schedule()

        return LongestFirst(config, log)


# --- the kill harness's table, gathered from every worker -------------------------------------------------------

def pytest_sessionfinish(session):
    """The controller (or a plain run) writes the kill harness's report once every worker is done."""
    if hasattr(session.config, "workerinput"):
        return
    factory = session.config._tmp_path_factory        # noqa: SLF001 - pytest's own, what tmp_path_factory returns
    rows = sorted((run_folder(factory) / "reliability").glob("*.json"))
    if rows:
        from tests.reliability.test_kill_rerun import write_report

        write_report([tuple(r) for f in rows for r in json.loads(f.read_text())])
