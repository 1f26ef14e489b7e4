"""The job's Arrow allocator: jemalloc (or the C library's) for the job, as it was after, a user's choice kept."""

import os

import pyarrow as pa

from masked_shards.beam.allocator import job_allocator


def test_the_job_allocates_from_a_pool_that_keeps_its_pages_and_restores_the_previous_one(monkeypatch):
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    before = pa.default_memory_pool().backend_name
    with job_allocator():
        chosen = pa.default_memory_pool().backend_name
        assert chosen in ("jemalloc", "system")
        assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == chosen  # worker processes started now inherit it
        assert pa.array(range(1000)).to_pylist() == list(range(1000))
    assert pa.default_memory_pool().backend_name == before != chosen
    assert "ARROW_DEFAULT_MEMORY_POOL" not in os.environ


def test_a_users_own_choice_of_pool_is_left_alone(monkeypatch):
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    before = pa.default_memory_pool().backend_name
    with job_allocator():
        assert pa.default_memory_pool().backend_name == before
        assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "mimalloc"
    assert os.environ["ARROW_DEFAULT_MEMORY_POOL"] == "mimalloc"
