"""Speed round 8 (the lead's part): the job's GC freeze and the pool's background shutdown."""

from __future__ import annotations

import gc
import os
import time

import psutil
import pytest

from tuban.pipelines.change_pool import local_pool, map_in


@pytest.mark.parametrize("workers", [1, 2])
def test_objects_frozen_for_the_job_and_released_after(workers):
    before = gc.get_freeze_count()
    with local_pool(workers):
        assert gc.get_freeze_count() > before  # imported objects out of the cyclic GC's scans
    assert gc.get_freeze_count() == before


def test_freeze_released_when_the_job_fails():
    before = gc.get_freeze_count()
    with pytest.raises(RuntimeError), local_pool(2):
        raise RuntimeError("block failed")
    assert gc.get_freeze_count() == before


def test_workers_are_reaped_after_the_pool_exits():
    me = psutil.Process(os.getpid())
    already = {p.pid for p in me.children()}
    with local_pool(2) as pool:
        assert map_in(pool, abs, [-1, -2, -3]) == [1, 2, 3]
        workers = {p.pid for p in me.children()} - already
    assert len(workers) == 2
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and workers & {p.pid for p in me.children()}:
        time.sleep(0.05)
    assert not workers & {p.pid for p in me.children()}  # exited and reaped: no zombie left
