"""The static-blob background model on synthetic images, and rule details the scenario suite does not isolate."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from processors.analytics.traffic import rules
from processors.analytics.traffic.analyzer import TrafficAnalyzer
from processors.analytics.traffic.scene import GroundHistories, Scene
from processors.analytics.traffic.state import TrackState, TrafficState
from processors.inference.static_blobs import StaticBlobDetector
from schemas import Detections
from schemas.calibration import fit_homography
from schemas.settings.config import CameraConfig, Config
from tests.traffic.simulator import CALIBRATION, SCENE, T0


def road(rng) -> np.ndarray:
    return (90 + rng.normal(0, 3, (432, 768))).clip(0, 255).astype(np.uint8)


def test_static_blob_is_found_and_passing_traffic_is_not():
    rng = np.random.default_rng(0)
    detector = StaticBlobDetector(static_seconds=3.0, warmup_seconds=1.6)
    blobs = []
    for frame in range(60):  # 12 s at 5 fps
        t = T0 + frame * 0.2
        image = road(rng)
        car_x = (frame * 40) % 700  # a bright car sweeping through the view every frame
        image[200:240, car_x:car_x + 60] = 230
        if frame >= 10:  # fallen cargo from 2 s on
            image[300:340, 400:460] = 30
        blobs = detector.update(image, t).blobs
        if frame == 20:  # 2 s after it fell: not static yet
            assert blobs == []
    assert len(blobs) == 1
    x1, y1, x2, y2 = blobs[0].xyxy
    cell = detector.cell_px  # the box is resolved to the grid cells
    assert all(abs(got - want) <= cell for got, want in zip((x1, y1, x2, y2), (400, 300, 460, 340), strict=True))
    assert abs(blobs[0].static_since - (T0 + 2.0)) < 0.01


def test_a_speck_of_noise_an_object_comes_to_cover_does_not_date_the_object():
    """A cell flickers to a lighter grey at 2 s and stays so (a speck of compression noise, too small for a blob);
    a box of much the same grey falls over it at 6 s. The box has stood since it fell, not since the speck."""
    rng = np.random.default_rng(4)
    detector = StaticBlobDetector(static_seconds=3.0, warmup_seconds=1.6)
    blobs = []
    for frame in range(60):  # 12 s at 5 fps
        image = road(rng)
        if frame >= 10:
            image[304:312, 408:416] = 180  # one cell, twice as light as the road
        if frame >= 30:
            image[296:336, 400:448] = 200  # within the difference threshold of the speck
        blobs = detector.update(image, T0 + frame * 0.2).blobs
        if frame < 45:  # the speck alone is no blob, nor is the box before it has stood static_seconds
            assert blobs == []
    assert len(blobs) == 1
    assert abs(blobs[0].static_since - (T0 + 6.0)) < 0.01


def test_static_blob_is_absorbed_into_the_background_after_a_long_time():
    rng = np.random.default_rng(1)
    detector = StaticBlobDetector(static_seconds=1.0, absorb_seconds=10.0, warmup_seconds=1.6)
    found = []
    for frame in range(80):
        image = road(rng)
        if frame >= 5:  # dropped after the background was learnt
            image[100:160, 100:180] = 200
        found.append(bool(detector.update(image, T0 + frame * 0.2).blobs))
    assert any(found[:45]) and not any(found[-20:])


def sloped_road(rng) -> np.ndarray:
    """A view brightening from 100 at the left to 250 at the right (a shaded verge, a sunlit road), so a change of the
    light by a share moves the bright part by more than the difference threshold and the dim part by less."""
    return np.linspace(100, 250, 768)[None, :] + rng.normal(0, 3, (432, 768))


CAR = (100, 300, 160, 340)  # x1, y1, x2, y2 of a dark car parked on the dim part, where the light changes least


def blobs_under(change, seed: int) -> list[list]:
    """Static blob boxes, frame by frame over 12 s at 5 fps, of a sloped road where the car parks at 2 s and
    `change(image)` alters the light from 3 s on."""
    rng = np.random.default_rng(seed)
    detector = StaticBlobDetector(static_seconds=3.0, warmup_seconds=1.6)
    found = []
    x1, y1, x2, y2 = CAR
    for frame in range(60):
        image = sloped_road(rng)
        if frame >= 10:
            image[y1:y2, x1:x2] = 30
        if frame >= 15:
            image = change(image)
        view = detector.update(image.clip(0, 255).astype(np.uint8), T0 + frame * 0.2)
        found.append([blob.xyxy for blob in view.blobs])
    return found


def is_the_car(box) -> bool:
    return all(abs(got - want) <= 8 for got, want in zip(box, CAR, strict=True))  # resolved to 8 px cells


def test_an_exposure_step_over_the_whole_view_is_no_static_blob_and_a_parked_car_still_is():
    """The camera's exposure drops 15 %: the bright third of the road darkens by more than the difference threshold.
    It is the light, not an object: the model neither starts again from the darkened view (which would take the car
    for background) nor finds the road a blob; the car is one from 3 s after it parked to the end."""
    found = blobs_under(lambda image: image * 0.85, seed=2)
    assert all(is_the_car(box) for blobs in found for box in blobs), "the darkened road is no blob"
    assert all(len(blobs) == 1 for blobs in found[26:]), "the car stays a blob"


def test_a_shadow_over_part_of_the_view_is_no_static_blob_and_a_parked_car_still_is():
    """A cloud's shadow dims 15 % of the view (bright road) to three quarters and stays: the road shows through it,
    scaled by one factor, so it is learnt as background at once; the car, which replaces the road, is a blob."""
    def shadow(image):
        image[100:300, 400:640] *= 0.75
        return image

    found = blobs_under(shadow, seed=3)
    assert all(is_the_car(box) for blobs in found for box in blobs), "the shadow is no blob"
    assert len(found[-1]) == 1


def test_speed_beyond_the_physical_bound_is_discarded():
    scene = Scene(SCENE, CALIBRATION.to_homography())  # 10 px per metre
    track = TrackState(track_id=1, class_name="car", box=(0, 0, 80, 40), first_seen=T0, last_seen=T0 + 1,
                       confidence=0.9, rest_point=(0, 0), rest_since=T0,
                       history=[(T0, 100, 400, 40), (T0 + 1, 300, 400, 40)])
    assert abs(scene.ground_speed_mps(track, GroundHistories(scene.homography)) - 20.0) < 1e-6  # 200 px/s = 20 m/s
    track.history = [(T0, 100, 400, 40), (T0 + 1, 1200, 400, 40)]  # 110 m/s: an id switch, not a car
    assert scene.ground_speed_mps(track, GroundHistories(scene.homography)) is None


def test_the_frames_ground_points_are_each_pair_of_samples_on_the_ground():
    """Headings and speeds on the ground read the ground points of a track's whole history, transformed at once for
    the frame: the values its two samples transformed alone give (to the last bit with this machine's BLAS, which
    another may round differently)."""
    homography = fit_homography([(300, 400), (980, 400), (1270, 710), (10, 710)], [(-3.5, 60), (3.5, 60), (3.5, 5),
                                                                                    (-3.5, 5)])
    scene = Scene(SCENE, homography)
    rng = np.random.default_rng(5)
    history = [(T0 + 0.2 * i, float(x), float(y), 40.0)
               for i, (x, y) in enumerate(rng.uniform((0, 420), (1280, 720), (25, 2)))]
    track = TrackState(track_id=1, class_name="car", box=(0, 0, 80, 40), first_seen=T0, last_seen=history[-1][0],
                       confidence=0.9, rest_point=(0, 0), rest_since=T0, history=history)
    ground = GroundHistories(homography)

    def alone(first: int, last: int) -> np.ndarray:
        return homography.to_ground(np.asarray([history[first][1:3], history[last][1:3]]))

    for first, last in [(0, 24), (3, 4), (10, 19), (19, 24)]:
        points = alone(first, last)
        assert scene.heading(track, history[first][0], history[last][0], ground) == pytest.approx(
            (float(points[1][0] - points[0][0]), float(points[1][1] - points[0][1])), rel=1e-12, abs=1e-12)
    points = alone(19, 24)  # the sample a second before the newest
    speed = float(np.linalg.norm(points[1] - points[0]) / (history[24][0] - history[19][0]))
    assert scene.ground_speed_mps(track, ground) == pytest.approx(speed, rel=1e-12)


def test_uncalibrated_scene_reports_no_speed():
    scene = Scene(SCENE)
    track = TrackState(track_id=1, class_name="car", box=(0, 0, 80, 40), first_seen=T0, last_seen=T0 + 1,
                       confidence=0.9, rest_point=(0, 0), rest_since=T0,
                       history=[(T0, 100, 400, 40), (T0 + 1, 300, 400, 40)])
    assert scene.ground_speed_mps(track, GroundHistories(scene.homography)) is None


def test_the_speed_before_rest_of_a_vehicle_first_seen_moments_before_it_stopped():
    """Seen 0.6 s before it came to rest, 48 px in that time on a 40 px box: 2 box heights per second, measured
    over what there is. Seen only 0.4 s before: too little to tell."""
    scene = Scene(SCENE)
    track = TrackState(track_id=1, class_name="car", box=(0, 0, 80, 40), first_seen=T0, last_seen=T0 + 3,
                       confidence=0.9, rest_point=(148, 400), rest_since=T0 + 0.6,
                       history=[(T0, 100, 400, 40), (T0 + 0.2, 120, 400, 40), (T0 + 0.6, 148, 400, 40),
                                (T0 + 3, 148, 400, 40)])
    assert abs(scene.speed_before_rest(track) - 2.0) < 1e-6
    track.first_seen, track.history = T0 + 0.2, track.history[1:]
    assert scene.speed_before_rest(track) == 0.0


def test_vehicle_at_speed_on_an_occupied_crosswalk_is_an_event():
    analyzer = TrafficAnalyzer.restore(CameraConfig(id="c", source="x.mp4", scene=SCENE, calibration=CALIBRATION),
                                       Config(), None)
    opened = []
    for seq in range(10):
        t = seq * 0.2
        car_x = 300 + 200 * t  # 20 m/s through the crosswalk at x 480-540
        boxes = [(500, 380, 520, 430), (car_x - 40, 390, car_x + 40, 430)]
        output = analyzer.update(Detections(
            camera_id="c", seq=seq, captured_at=T0 + t, image_width=1280, image_height=720, model="t",
            inference_ms=0, xyxy=boxes, confidence=[0.9, 0.9], class_id=[0, 2], class_name=["person", "car"],
            track_id=[1, 2]))
        opened += [e for e in output.events if e.state.value == "opened"]
    assert [(e.type, e.zone_id, e.severity.value, sorted(e.track_ids)) for e in opened] == [
        ("pedestrian_on_roadway", "xwalk", "critical", [1, 2])]


def test_track_state_is_evicted_after_its_ttl():
    analyzer = TrafficAnalyzer.restore(CameraConfig(id="c", source="x.mp4", scene=SCENE, calibration=CALIBRATION),
                                       Config(), None)
    for seq in range(50):
        analyzer.update(Detections(
            camera_id="c", seq=seq, captured_at=T0 + seq, image_width=1280, image_height=720, model="t",
            inference_ms=0, xyxy=[(100, 390, 180, 430)], confidence=[0.9], class_id=[2], class_name=["car"],
            track_id=[1000 + seq]))  # a new id every frame, as after id switches
    ttl = SCENE.thresholds.track_ttl_seconds
    assert len(analyzer.state.tracks) <= ttl + 1
    assert len(analyzer.state_bytes()) < 20_000


def textured_view(rng, shift_x: int = 0, shift_y: int = 0, height: int = 360, width: int = 640) -> np.ndarray:
    """A street-like view (smooth texture), moved by (shift_x, shift_y) px as a camera pan would."""
    base = ndimage.gaussian_filter(rng.normal(0, 1, (height + 40, width + 60)), 4)
    base = (128 + 60 * base / base.std()).clip(0, 255)
    return base[20 + shift_y:20 + height + shift_y, 30 + shift_x:30 + width + shift_x].astype(np.uint8)


def test_the_background_model_reports_a_pan_but_not_a_shake_or_a_large_vehicle():
    detector = StaticBlobDetector(warmup_seconds=1.6)
    views = [textured_view(np.random.default_rng(1), dx, 0) for dx in (0, 1, -1, 2, 0, -2, 1)]
    moved = [detector.update(views[frame % len(views)], T0 + frame * 0.2).view_moved for frame in range(40)]
    assert not any(moved), "a shake of 1-2 px is no move"
    lorry = views[0].copy()
    for frame in range(40, 50):  # a large bright lorry drives through a quarter of the view
        lorry[200:350, 20 * (frame - 40):20 * (frame - 40) + 250] = 240
        assert not detector.update(lorry, T0 + frame * 0.2).view_moved
        lorry = views[0].copy()
    panned = [detector.update(textured_view(np.random.default_rng(1), 3 * step, 0), T0 + (50 + step) * 0.2)
              for step in range(1, 11)]  # a pan of 3 px per frame: a move every few frames, and no blobs
    assert 2 <= sum(view.view_moved for view in panned) <= 5
    assert all(view.blobs == [] for view in panned)


def test_a_small_view_shaking_by_3_px_every_frame_has_not_moved_but_one_shifted_and_held_has():
    """On a 320 x 240 picture the shift share is 3.2 px, which a pole shaking by 3 px reaches between two frames
    again and again; a shift smaller than a cell leaves the background under the view. A jolt held is a move, found
    in its second frame (a shake swings back by then)."""
    detector = StaticBlobDetector(warmup_seconds=1.6)
    rng = np.random.default_rng(4)
    angles = rng.uniform(0, 2 * np.pi, 60)
    shaken = [textured_view(np.random.default_rng(1), round(3 * np.cos(angle)), round(3 * np.sin(angle)),
                            height=240, width=320) for angle in angles]
    moved = [detector.update(view, T0 + frame * 0.2).view_moved for frame, view in enumerate(shaken)]
    assert not any(moved), "a shake of 3 px is no move"
    jolted = textured_view(np.random.default_rng(1), 10, 6, height=240, width=320)
    moved = [detector.update(jolted, T0 + (60 + frame) * 0.2).view_moved for frame in range(5)]
    assert moved == [False, True, False, False, False]


def test_a_small_view_shaking_by_4_px_about_where_it_rests_has_not_moved_but_a_knock_while_it_shakes_has():
    """A 640 x 360 picture shaking by up to 4.5 px each way, at random every frame (two sines a pole's shake
    adds up to): from a reference frame at one end of the shake a frame at the other is shifted by more than a cell,
    but the view still rests where it did and swings back at once. A knock of 12 px while it shakes is one move, found
    in its second frame."""
    detector = StaticBlobDetector(warmup_seconds=1.6)
    phases = np.random.default_rng(2).uniform(0, 2 * np.pi, (140, 4))
    offsets = [(round(2.7 * np.sin(a) + 1.8 * np.sin(b)), round(2.7 * np.sin(c) + 1.8 * np.sin(d)))
               for a, b, c, d in phases]
    views = [textured_view(np.random.default_rng(1), dx + 12 * (frame >= 100), dy)
             for frame, (dx, dy) in enumerate(offsets)]
    moved = [detector.update(view, T0 + frame * 0.2).view_moved for frame, view in enumerate(views)]
    assert not any(moved[:100]), "a shake of 4.5 px is no move"
    assert [frame - 100 for frame in range(100, 140) if moved[frame]] == [1]


def test_a_person_over_a_two_wheeler_is_a_rider_for_the_rest_of_the_track():
    def person(track_id: int, box) -> TrackState:
        return TrackState(track_id=track_id, class_name="person", box=box, first_seen=T0, last_seen=T0,
                          confidence=0.8, rest_point=(0, 0), rest_since=T0)

    rider, passer_by = person(1, (100, 100, 130, 170)), person(2, (200, 100, 230, 170))
    motorcycles = np.array([[95, 140, 135, 190], [225, 150, 270, 200]], dtype=float)  # the second barely touched
    assert rules.riders(TrafficState(), [rider, passer_by], motorcycles, T0) == {1}
    # The detector misses the motorcycle under its rider later on: still a rider.
    assert rules.riders(TrafficState(), [rider, passer_by], np.zeros((0, 4)), T0 + 1) == {1}


def test_a_track_handed_the_place_of_a_rider_lost_just_now_is_that_rider():
    """A rider waits in a queue, his motorcycle hidden by the one ahead; the tracker loses his track and hands his
    box to the id of someone it lost earlier: still a rider (a pedestrian on the roadway otherwise). Someone seen
    there a second later, or beside it, is not."""
    def person(track_id: int, box, seen: float) -> TrackState:
        return TrackState(track_id=track_id, class_name="person", box=box, first_seen=T0, last_seen=seen,
                          confidence=0.8, rest_point=(0, 0), rest_since=T0)

    state = TrafficState()
    state.tracks[1] = person(1, (100, 100, 130, 170), T0)
    assert rules.riders(state, [state.tracks[1]], np.array([[95, 140, 135, 190]], dtype=float), T0) == {1}
    handed, beside = person(7, (102, 101, 131, 171), T0 + 0.4), person(8, (140, 100, 170, 170), T0 + 0.4)
    assert rules.riders(state, [handed, beside], np.zeros((0, 4)), T0 + 0.4) == {7}
    later = person(9, (100, 100, 130, 170), T0 + 1.2)
    assert rules.riders(state, [later], np.zeros((0, 4)), T0 + 1.2) == set()
