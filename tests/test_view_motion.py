"""Whether a camera's view moved, on a textured synthetic view."""
from __future__ import annotations

import cv2
import numpy as np

from processors.inference.view_motion import ViewMotion

MOVE_PX = 16.0


def texture(seed: int, shape=(576, 768)) -> np.ndarray:
    return cv2.GaussianBlur(np.random.default_rng(seed).uniform(0, 255, shape), (0, 0), 3)


def test_a_pan_is_a_move_and_a_still_view_with_new_light_is_not():
    view = ViewMotion()
    scene = texture(0)
    assert not view.moved(scene, 0.0, MOVE_PX)
    assert not view.moved(scene * 0.8 + 20, 1.0, MOVE_PX)
    assert view.moved(np.roll(scene, 48, axis=1), 2.0, MOVE_PX)


def test_a_still_view_that_changed_becomes_the_reference_a_later_pan_is_measured_against():
    """Half the scene changes for good (a stage built, cars parked) while the camera keeps still: the still view is
    taken as the reference after refresh_seconds, so a later pan shows in all four quarters and is a move."""
    view = ViewMotion(refresh_seconds=10.0)
    before = texture(0)
    after = before.copy()
    after[288:] = texture(1)[288:]
    assert not view.moved(before, 0.0, MOVE_PX)
    for at in range(5, 65, 5):
        assert not view.moved(after, float(at), MOVE_PX)
    assert view.moved(np.roll(after, 48, axis=1), 70.0, MOVE_PX)


def test_a_slow_tilt_is_a_move_each_time_it_adds_up_to_one():
    """A view tilting 1 px every 3 s never shifts by a move between two frames, nor within refresh_seconds: measured
    against a reference it does not replace while it drifts, it is a move each time the drift adds up to one."""
    view = ViewMotion(refresh_seconds=10.0)
    scene = texture(0, shape=(640, 768))
    moves = [at for at in range(0, 180) if view.moved(scene[at // 3:at // 3 + 576], float(at), MOVE_PX)]
    assert len(moves) >= 3, moves  # 60 px over the 3 minutes


def test_a_view_shaking_about_where_it_rests_has_not_moved_but_a_jump_from_there_has_at_once():
    """The view rests 10 px from the reference (a drift short of a move) and shakes by 6 px about there: from the
    reference a frame at the far end of the shake is shifted by a move, but from where the view rests by 6 px. A pan
    of 48 px from there is a move in its first frame."""
    view = ViewMotion()
    scene = texture(0)
    assert not view.moved(scene, 0.0, MOVE_PX)
    swings = [0, 6, -6, 0, 6, -6, 6, 0, -6, 6] * 2
    moved = [view.moved(np.roll(scene, 10 + swing, axis=1), 0.2 * (1 + frame), MOVE_PX)
             for frame, swing in enumerate([0] * 5 + swings)]
    assert not any(moved), moved
    assert view.moved(np.roll(scene, 58, axis=1), 5.2, MOVE_PX)
