"""The crowd state record: what comes back from it is exactly what went in, and can be updated further."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from processors.analytics.crowd.analyzer import CrowdAnalyzer, CrowdState
from processors.analytics.crowd.tracks import TrackTable
from processors.analytics.crowd.windows import Bucket
from schemas.base import frame_seen
from tests.crowd.scenarios import run_scenario, site_config
from tests.crowd.simulator import SQUARE, CrowdSimulator


def test_track_columns_come_back_exactly_with_unknown_values_and_stay_writable():
    table = TrackTable(2, {"ids": [3, 9], "last_seen": [1.5, 2.25], "image_xy": [[1, 2], [3, 4]],
                           "ground_xy": [[np.nan, np.nan], [0.1, 0.2]], "velocity": [[np.nan, np.nan], [1e-300, -7]],
                           "side": [[1, -1], [0, 1]], "pending": [[0, 0], [-1, 0]], "pending_frames": [[0, 0], [2, 0]]})
    restored = TrackTable.from_columns(2, table.to_columns())

    for name in TrackTable.COLUMNS:
        np.testing.assert_array_equal(getattr(restored, name), getattr(table, name))
        assert getattr(restored, name).dtype == getattr(table, name).dtype
    restored.velocity[0] = (0.5, 0.5)  # updated in place by the next frame


def test_state_record_round_trip_keeps_every_field():
    config = site_config(SQUARE, 2.0)
    _, analyzer = run_scenario(CrowdSimulator(SQUARE, 2.0, seed=4, target_density=lambda _: 1.5), config, frames=90)
    record = analyzer.state_bytes()

    restored = CrowdAnalyzer.restore(config.cameras[0], config, record)
    assert restored.state_bytes() == record
    state = CrowdState.decode(record)
    assert state.last_seq == analyzer.state.last_seq and state.zones == analyzer.state.zones


def test_state_whose_buckets_lack_the_reliable_people_sum_is_refused_not_read_as_zero():
    # Buckets without the reliable frames' people sum: read as zero it would make a window's people figure nothing,
    # so the analytics stage's restore starts the camera afresh instead.
    config = site_config(SQUARE, 2.0)
    _, analyzer = run_scenario(CrowdSimulator(SQUARE, 2.0, seed=4, target_density=lambda _: 1.5), config, frames=25)
    record = msgpack.unpackb(analyzer.state_bytes())
    for zone in record[3].values():
        assert zone["buckets"]
        for bucket in zone["buckets"]:
            del bucket["reliable_people_sum"]

    with pytest.raises(ValueError, match="older version"):
        CrowdAnalyzer.restore(config.cameras[0], config, msgpack.packb(record))


def test_a_bucket_stored_before_its_latest_frames_reliability_was_kept_has_it_only_where_every_frame_was_reliable():
    older = {name: value for name, value in vars(Bucket(start=10.0, frames=50)).items() if name != "latest_reliable"}
    assert Bucket.from_record({**older, "unreliable_frames": 0}).latest_reliable
    assert not Bucket.from_record({**older, "unreliable_frames": 1}).latest_reliable


def test_a_state_stored_before_frame_runs_were_kept_has_seen_the_frames_up_to_its_last():
    config = site_config(SQUARE, 2.0)
    _, analyzer = run_scenario(CrowdSimulator(SQUARE, 2.0, seed=4, target_density=lambda _: 1.5), config, frames=25)
    record = msgpack.unpackb(analyzer.state_bytes())
    state = CrowdState.decode(msgpack.packb(record[:7]))  # as an earlier version wrote it
    assert frame_seen(state.seen_runs, state.last_seq) and frame_seen(state.seen_runs, state.last_seq - 20)
    assert not frame_seen(state.seen_runs, state.last_seq + 1)
