"""Conformance suites and test helpers for backend authors.

Every backend shipped with beautyspot-async passes the same suites, and so can
yours. The suites are the specification of a backend: each check's docstring
states the rule it enforces. Call them from your own tests, under any runner::

    from beautyspot_async.testing import FakeClock, check_taskdb, check_taskdb_pair

    async def test_my_db_conforms(tmp_path):
        clock = FakeClock()
        await check_taskdb(lambda: MyTaskDB(tmp_path / "x.db", clock=clock), clock=clock)

    async def test_two_of_my_dbs_share_one_store(tmp_path):
        clock = FakeClock()

        def pair():
            path = tmp_path / "x.db"
            return MyTaskDB(path, clock=clock), MyTaskDB(path, clock=clock)

        await check_taskdb_pair(pair, clock=clock)

- :func:`check_taskdb`: the :class:`~beautyspot_async.db.TaskDB` contract,
  one instance at a time -- records, non-waiting reads and every lease method.
- :func:`check_taskdb_pair`: what holds between two instances over one store,
  as for two processes -- above all, that reading a key and leasing it is atomic.
- :func:`check_blob_storage`: the :class:`~beautyspot_async.storage.BlobStorageBase`
  contract.
- :class:`FakeClock`: a clock that moves only when told to.

A suite raises :class:`AssertionError` naming the check that failed. Keys are
random, so a suite can run against a shared server database or bucket; it
leaves its own rows behind only when a check fails midway. This package
imports no test runner: it uses plain ``assert`` and works under asyncio and
trio alike (as far as the backend under test does).
"""

from __future__ import annotations

from ._clock import FakeClock as FakeClock
from ._pair import check_taskdb_pair as check_taskdb_pair
from ._storage import check_blob_storage as check_blob_storage
from ._taskdb import check_taskdb as check_taskdb

__all__ = ["FakeClock", "check_blob_storage", "check_taskdb", "check_taskdb_pair"]

for _public in (FakeClock, check_blob_storage, check_taskdb, check_taskdb_pair):
    _public.__module__ = __name__
del _public
