"""The job's garbage-collector settings (collector.py) hold while data flows and are undone after."""

from __future__ import annotations

import gc

from masked_shards.beam.collector import YOUNG, data_flows, job_scope


def test_a_job_collects_the_young_rarely_while_data_flows_and_leaves_the_collector_as_it_found_it():
    before, enabled = gc.get_threshold(), gc.isenabled()
    assert before[0] != YOUNG and enabled
    with job_scope():
        assert not gc.isenabled()  # start-up: no collections
        data_flows()
        assert gc.isenabled() and gc.get_threshold() == (YOUNG, *before[1:])
        assert gc.get_freeze_count() > 0  # start-up's objects are out of the collections' way
    assert gc.get_threshold() == before and gc.isenabled() == enabled
    assert gc.get_freeze_count() == 0
