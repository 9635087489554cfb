"""The zone counter's rule against the labelled development set's measurements (tests/devsets/crowd).

measurements.csv holds, per real image, the true count and what each counter of this project made of it, including
the multi-scale map's count (processors.inference.density_map.DensityMapCounter.multi_scale_map) for each candidate
`dense_cell_people` and at each width a sparse frame may be rescaled to. The map's count here is picked from those
columns by the inference code's own width choice, the zone count made of it by the analytics' own fuse_counts.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from processors.analytics.crowd.counting import CONFIDENCE_BY_SIZE, fuse_counts
from processors.inference.density_map import (
    TEXTURE_MAX_CELL_PEOPLE,
    TEXTURE_MAX_PEOPLE,
    Rescaling,
    sees_people,
)
from schemas.settings.crowd import CountingConfig, DensityModelConfig

TABLE = Path(__file__).resolve().parents[1] / "devsets" / "crowd" / "measurements.csv"
REGIMES = {"sparse": (0, 60), "medium": (60, 250), "dense": (250, float("inf"))}  # true count, (lower, upper]
SINGLE = ("detector", "tiled", "density_384", "density_512", "density_640", "density_768", "density_1024")
CANDIDATES = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)  # dense_cell_people tried
# (person_height_px, rescaled_max_people) tried; of equal ones the first, fewest people rescaled, is chosen
RESCALING = [(height, people) for height in (60, 70, 80, 90, 100, 110, 120, 130, 140) for people in (60, 80, 100, 150)]
SHIPPED = DensityModelConfig()


def load(name: str = TABLE.name, prefix: str = "") -> dict[str, np.ndarray]:
    """A measurements table of the crowd dev set, by column, over the rows whose id starts with `prefix`."""
    rows = [row for row in csv.DictReader(TABLE.with_name(name).open()) if row["id"].startswith(prefix)]
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0] if key != "id"}


def rescaled_widths(table: dict[str, np.ndarray], dense_cell_people: float,
                    rescaling: tuple[float, float]) -> np.ndarray:
    """The width DensityMapCounter.multi_scale_map rescales each image's map to (0: none) under `rescaling`
    (person_height_px, rescaled_max_people): density_map.Rescaling on the reduced map's cues (`density_512`,
    `max_local_people_512`, `people_under_person_boxes_512`) and the detector's person boxes (number, median
    height)."""
    person_height_px, rescaled_max_people = rescaling
    choice = Rescaling.of(SHIPPED.model_copy(update={
        "person_height_px": person_height_px, "rescaled_max_people": rescaled_max_people,
        "dense_cell_people": dense_cell_people}))
    boxes = table["detector"].astype(int)  # under 3 boxes a frame is never sparse (is_sparse): its height goes unread
    return np.array([
        choice.width(int(table["image_width"][i]), table["median_box_height"][i] * table["image_height"][i],
                     int(boxes[i]), table["density_512"][i], table["max_local_people_512"][i],
                     table["people_under_person_boxes_512"][i]) or 0
        for i in range(len(boxes))])


def map_counts(table: dict[str, np.ndarray], dense_cell_people: float,
               rescaling: tuple[float, float] | None) -> np.ndarray:
    """The multi-scale map's count per image, rescaled as DensityMapCounter.multi_scale_map does for a sparse frame
    (rescaled_widths; None: never). The rescaled maps were made at the shipped dense_cell_people (at those widths a
    sparse frame has hardly any dense cells)."""
    counts = table[f"multi_scale_{dense_cell_people:.2f}"].copy()
    if rescaling is None:
        return counts
    for index, width in enumerate(rescaled_widths(table, dense_cell_people, rescaling)):
        if width:
            counts[index] = table[f"multi_scale_w{width}"][index]
            assert not np.isnan(counts[index]), f"no {width} px map of image {index}"
    return counts


def zone_counts(table: dict[str, np.ndarray], map_people: np.ndarray) -> np.ndarray:
    """What the analytics report for a whole-frame zone given a fresh map of `map_people`: fuse_counts with the
    whole-frame detector's count."""
    counts = []
    for detector, people in zip(table["detector"], map_people, strict=True):
        fused = fuse_counts(int(detector), float(people), CountingConfig(), model_age_s=0.0)
        assert fused.reliable
        counts.append(fused.people)
    return np.array(counts)


def errors(true: np.ndarray, predicted: np.ndarray) -> dict[str, tuple[float, float]]:
    """(MAE, mean relative error) per regime."""
    result = {}
    for name, (lower, upper) in REGIMES.items():
        inside = (true > lower) & (true <= upper)
        error = np.abs(predicted[inside] - true[inside])
        result[name] = (float(error.mean()), float((error / true[inside]).mean()))
    return result


def best_single(table: dict[str, np.ndarray], index=slice(None)) -> dict[str, float]:
    """Per regime, the lowest MAE any one counter reaches on the given images."""
    singles = [errors(table["true"][index], table[name][index]) for name in SINGLE]
    return {regime: min(single[regime][0] for single in singles) for regime in REGIMES}


def leave_one_out(table: dict[str, np.ndarray]) -> tuple[list[float], list[tuple[float, float]], np.ndarray]:
    """The settings chosen on all images but one and applied to that one, for every image: dense_cell_people first
    (maps never rescaled), then the rescaling with it. Each choice minimises the sum over regimes of the rule's MAE
    divided by the best single counter's MAE on the same images. Returns the choices and the held-out counts."""
    true = table["true"]
    plain = {theta: zone_counts(table, map_counts(table, theta, None)) for theta in CANDIDATES}
    rescaled = {(theta, rescaling): zone_counts(table, map_counts(table, theta, rescaling))
                for theta in CANDIDATES for rescaling in RESCALING}
    thetas, rescalings, held_out = [], [], np.zeros(len(true))
    for left_out in range(len(true)):
        train = np.array([i for i in range(len(true)) if i != left_out])
        best = best_single(table, train)

        def objective(counts: np.ndarray, train=train, best=best) -> float:
            fitted = errors(true[train], counts[train])
            return sum(fitted[regime][0] / best[regime] for regime in REGIMES)

        theta = min(CANDIDATES, key=lambda candidate: objective(plain[candidate]))
        rescaling = min(RESCALING, key=lambda candidate: objective(rescaled[theta, candidate]))
        thetas.append(theta)
        rescalings.append(rescaling)
        held_out[left_out] = rescaled[theta, rescaling][left_out]
    return thetas, rescalings, held_out


@pytest.fixture(scope="module")
def table():
    return load()


@pytest.fixture(scope="module")
def loo(table):
    return leave_one_out(table)


def test_the_set_spans_every_regime(table):
    true = table["true"]
    assert len(true) == 68
    assert [int(((true > lo) & (true <= hi)).sum()) for lo, hi in REGIMES.values()] == [26, 20, 22]


def test_the_shipped_settings_are_the_leave_one_out_choices(loo):
    thetas, rescalings, _ = loo
    assert max(set(thetas), key=thetas.count) == SHIPPED.dense_cell_people
    assert thetas.count(SHIPPED.dense_cell_people) >= 60
    shipped = (SHIPPED.person_height_px, SHIPPED.rescaled_max_people)
    assert max(set(rescalings), key=rescalings.count) == shipped
    assert rescalings.count(shipped) >= 60


def test_fused_count_under_leave_one_out_against_the_best_single_counter(table, loo):
    """Sparse: well ahead of every single counter (3.4 against the 512 px map's 5.4: rescaling its people).
    Medium: better than every single counter. Dense: within 4 % of the best one (the full-width map alone), whose
    over-count of moderate crowds the rule avoids; the margins are what the measurement shows, not targets. The box
    detectors are far behind everywhere."""
    fused = errors(table["true"], loo[2])
    best = best_single(table)
    assert fused["sparse"][0] <= 0.65 * best["sparse"]
    assert fused["medium"][0] <= best["medium"]
    assert fused["dense"][0] <= 1.04 * best["dense"]
    for detector in ("detector", "tiled"):
        single = errors(table["true"], table[detector])
        for regime in REGIMES:
            assert fused[regime][0] < 0.6 * single[regime][0]


def test_figures_quoted_in_the_counting_module(table, loo):
    fused = errors(table["true"], loo[2])
    assert fused["sparse"] == pytest.approx((3.38, 0.090), abs=0.005)
    assert fused["medium"] == pytest.approx((33.4, 0.282), abs=0.05)
    assert fused["dense"] == pytest.approx((89.9, 0.176), abs=0.05)
    without_rescaling = errors(table["true"], zone_counts(table, map_counts(table, SHIPPED.dense_cell_people, None)))
    assert without_rescaling["sparse"] == pytest.approx((5.3, 0.160), abs=0.05)
    widths = rescaled_widths(table, SHIPPED.dense_cell_people, (SHIPPED.person_height_px, SHIPPED.rescaled_max_people))
    widened, narrowed = widths > SHIPPED.max_width, (widths > 0) & (widths < SHIPPED.max_width)
    assert (int(widened.sum()), int(narrowed.sum())) == (3, 18)
    confidence = dict(zip(("sparse", "medium", "dense"), (c for _, c in CONFIDENCE_BY_SIZE), strict=True))
    for regime, (_, relative) in fused.items():
        assert confidence[regime] == pytest.approx(1 - relative, abs=0.01)


def without_texture_counts(table: dict[str, np.ndarray], map_people: np.ndarray,
                           settings: DensityModelConfig = SHIPPED) -> np.ndarray:
    """The map's count after density_map.without_texture: unchanged where the map sees the people its detector found
    (sees_people); elsewhere less its texture, at most TEXTURE_MAX_PEOPLE. The texture is the table's
    `texture_people` where it has them; else the people outside the person boxes (`people_under_person_boxes` are
    inside), as no cell of those frames reaches TEXTURE_MAX_CELL_PEOPLE."""
    blind = np.array([not sees_people(people, under, int(boxes), local, settings)
                      for people, under, boxes, local in zip(map_people, table["people_under_person_boxes"],
                                                             table["person_boxes"], table["max_local_people"],
                                                             strict=True)])
    if "texture_people" in table:
        texture = table["texture_people"]
    else:
        assert (table["max_local_people"][blind] < TEXTURE_MAX_CELL_PEOPLE).all()
        texture = map_people - table["people_under_person_boxes"]
    return np.where(blind, map_people - np.minimum(texture, TEXTURE_MAX_PEOPLE), map_people)


def mae(true: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.abs(predicted - true).mean())


def test_the_map_sees_the_people_of_every_crowd_photograph_so_their_counts_stand():
    table = load()
    map_people = map_counts(table, SHIPPED.dense_cell_people, (SHIPPED.person_height_px, SHIPPED.rescaled_max_people))
    np.testing.assert_array_equal(without_texture_counts(table, map_people), map_people)


@pytest.mark.parametrize(("clip", "frames", "detector", "density_512", "map_zone", "floored", "fused"), [
    ("vtest", 11, 0.36, 4.47, 4.47, 1.10, 0.36),
    ("carpark", 4, 0.0, 15.15, 15.15, 15.15, 15.15),
])
def test_fixed_camera_frames_show_the_map_over_counting_and_what_takes_it_off(
        clip, frames, detector, density_512, map_zone, floored, fused):
    """The hand-counted fixed-camera frames (measurements_cctv.csv; not in the 68 above). Street camera (3-9 people):
    the box detector is nearly exact, the density map adds about five people of background (grass, cones, a tripod)
    at 512 px and a zone count from it follows it (map_zone); the camera's background floor, learnt from the clip's
    other frames, takes most of that off, leaving at most one person too few on two frames; and the map puts only
    0.17-0.36 of a person under each person box, so the stage takes the texture around them off (without_texture) and
    the zone counts the detector's people (fused). Car park (nobody): the map reads 13 to 18 people of speckled
    asphalt; no person box, so nothing tells texture from people in one frame, and this 30 s clip is shorter than the
    floor's min_span_seconds (and its camera drifts 16 px in it, which forgets the floor), so nothing is subtracted.
    Neither map is rescaled: the street camera's people are 50-60 px tall at 512 px, but its map does not see them
    (widening would count more texture); the car park has none. Figures
    quoted in the counting module."""
    cctv = load("measurements_cctv.csv", f"{clip}-")
    assert len(cctv["true"]) == frames
    map_people = map_counts(cctv, SHIPPED.dense_cell_people, (SHIPPED.person_height_px, SHIPPED.rescaled_max_people))
    np.testing.assert_array_equal(map_people, cctv["multi_scale_0.35"])  # a map blind to its people: not widened
    zone = zone_counts(cctv, map_people)
    zone_floored = np.maximum(cctv["multi_scale_floored"], cctv["detector"])  # the detector floor, as fuse_counts
    zone_fused = zone_counts(cctv, without_texture_counts(cctv, map_people))

    true = cctv["true"]
    assert mae(true, cctv["detector"]) == pytest.approx(detector, abs=0.01)
    assert mae(true, cctv["density_512"]) == pytest.approx(density_512, abs=0.01)
    assert mae(true, zone) == pytest.approx(map_zone, abs=0.01)
    assert mae(true, zone_floored) == pytest.approx(floored, abs=0.01)
    assert mae(true, zone_fused) == pytest.approx(fused, abs=0.01)
    assert (zone > cctv["true"]).all()  # the map alone errs on the alarming side
    assert (zone_floored >= cctv["true"] - 1).all()  # with the floor, never more than one person short


@pytest.mark.parametrize(("sequence", "detector", "map_zone", "fused"), [
    ("pets09-s2l1", 1.05, 5.78, 1.05),
    ("tud-campus", 2.90, 8.73, 8.73),
    ("tud-stadtmitte", 0.80, 3.24, 3.24),
])
def test_fixed_camera_pedestrian_frames_counted_by_the_zone_counter(sequence, detector, map_zone, fused):
    """20 frames of each of three 2D MOT 2015 sequences (measurements_mot.csv, 3-8 annotated people). PETS09 is a
    campus walkway from above, like the street camera above: the map puts 0.16-0.36 of a person under each person box
    and 5-8 people's worth on the paving, so the zone counts the detector's people. The TUD views are at eye level
    with people 180-230 px tall: the map sees them (0.44-1.26 under each box) and over-counts their bodies; there the
    zone count stays the map's, and the detector remains the better counter (figures in the counting module). One
    TUD-Campus frame, whose 10 detected people (4 annotated) are small at 512 px and under-counted by its map, is
    widened: 19.8 -> 24.2 people."""
    mot = load("measurements_mot.csv", f"mot15-{sequence}-")
    mot["person_boxes"] = mot["detector"]
    assert len(mot["true"]) == 20
    map_people = mot["multi_scale_0.35"]
    zone = zone_counts(mot, map_people)
    zone_fused = zone_counts(mot, without_texture_counts(mot, map_people))

    assert mae(mot["true"], mot["detector"]) == pytest.approx(detector, abs=0.01)
    assert mae(mot["true"], zone) == pytest.approx(map_zone, abs=0.01)
    assert mae(mot["true"], zone_fused) == pytest.approx(fused, abs=0.01)
    assert int((mot["rescaled_width"] > SHIPPED.max_width).sum()) == (sequence == "tud-campus")


def test_mall_frames_keep_the_far_people_the_detector_misses():
    """80 frames of the Mall dataset (measurements_mall.csv; a fixed camera over a shopping mall's walkway, 640x480,
    16-50 people from 20 to 100 px tall). The detector misses the far people (12.6 low on average). The 512 px map
    puts from min_people_per_person_box to one person under each person box on 67 frames, and its faint cells hold
    the far people: it sees them, but not all, so those frames are mapped at 576 or 640 px (their own width). The
    shipped min_people_per_person_box lies above every street and walkway frame's ratio (0.16-0.36), so their
    texture still goes; 12 mall frames (0.28-0.39) are not widened and lose up to 8 people as texture, which leaves
    the rule behind the map with the detector floor here (one more is not rescaled: its people are about 90 px tall
    at 512 px). Figures quoted in the counting module."""
    mall = load("measurements_mall.csv")
    mall["person_boxes"] = mall["detector"]
    true = mall["true"]
    assert len(true) == 80 and true.min() == 16 and true.max() == 50
    street = load("measurements_cctv.csv", "vtest-")
    walkway = load("measurements_mot.csv", "mot15-pets09-")
    ratios = np.concatenate([street["people_under_person_boxes"] / street["person_boxes"],
                             walkway["people_under_person_boxes"] / walkway["detector"]])
    assert len(ratios) == 31 and ratios.max() < SHIPPED.min_people_per_person_box
    widened = mall["rescaled_width"] > SHIPPED.max_width
    assert int(widened.sum()) == 67 and not (mall["rescaled_width"][~widened]).any()
    mall_ratios = mall["people_under_person_boxes"] / mall["person_boxes"]
    assert int((mall_ratios[~widened] < SHIPPED.min_people_per_person_box).sum()) == 12

    assert mae(true, zone_counts(mall, without_texture_counts(mall, mall["multi_scale_0.35"]))) == pytest.approx(
        4.26, abs=0.01)
    assert mae(true, zone_counts(mall, mall["multi_scale_0.35"])) == pytest.approx(3.57, abs=0.01)
    assert mae(true, mall["detector"]) == pytest.approx(12.64, abs=0.01)
