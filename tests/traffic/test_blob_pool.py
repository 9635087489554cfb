import numpy as np

from processors.inference.static_blobs import StaticBlobPool


def test_pool_runs_only_for_scene_cameras_and_drops_silent_ones():
    now = [0.0]
    pool = StaticBlobPool({"junction", "bridge"}, idle_seconds=60, clock=lambda: now[0])
    grey = np.full((64, 64, 3), 100, np.uint8)
    assert pool.update("plaza", grey, 0.0) is None, "cameras without a traffic scene get no background model"
    assert all(pool.update("junction", grey, t * 0.1).blobs == [] for t in range(12)), "an empty road has no blobs"
    assert len(pool) == 1
    now[0] = 100.0
    pool.update("bridge", grey, 100.0)
    assert len(pool) == 1, "junction fell silent for longer than idle_seconds and was dropped"


def test_a_camera_whose_clock_runs_ahead_does_not_drop_the_others():
    pool = StaticBlobPool({"junction", "bridge"}, idle_seconds=300)
    grey = np.full((64, 64, 3), 100, np.uint8)
    pool.update("junction", grey, 1_000.0)
    pool.update("bridge", grey, 1_000.0 + 3_600)  # its producer's clock is an hour ahead
    assert len(pool) == 2, "idleness is the worker's time, not one camera's capture time against another's"
