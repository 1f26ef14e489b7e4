"""The job's garbage-collector settings (collector.py) hold while data flows and are undone after."""

from __future__ import annotations

import gc

from masked_shards.beam.collector import YOUNG, data_flows, job_scope


def test_a_job_collects_the_young_rarely_while_data_flows_and_leaves_the_collector_as_it_found_it():
    # A worker step run in this process outside a job (TokenizeFn.setup: `loaded`) keeps its
    # setting, as a worker process does; so the test sets what the job must find and give back.
    outside, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(700, 11, 12)
    try:
        with job_scope():
            assert not gc.isenabled()  # start-up: no collections
            data_flows()
            assert gc.isenabled() and gc.get_threshold() == (YOUNG, 11, 12)
            assert gc.get_freeze_count() > 0  # start-up's objects are out of the collections' way
        assert gc.get_threshold() == (700, 11, 12) and gc.isenabled() == enabled
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*outside)
