"""The CSRNet density-map counter on a real frame, its multi-scale map, and zone integration of a map."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from processors.inference.density_map import (
    DenseRegion,
    DensityMapCounter,
    OpenVinoNetwork,
    Rescaling,
    TorchNetwork,
    combine_scales,
    convert_to_openvino,
    dense_cells,
    dense_region,
    median_person_height,
    packaged_weights,
    rescaled_width,
)
from schemas.geometry import polygon_cell_weights
from tests.conftest import VTEST, video_frames


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    try:
        weights = packaged_weights()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return DensityMapCounter(OpenVinoNetwork(convert_to_openvino(weights, tmp_path_factory.mktemp("csrnet"))))


def integrate_polygon(density, polygon, image_size):
    """People in a zone as the crowd analyzer counts them: the map summed under the polygon's cell weights."""
    return float((density * polygon_cell_weights(polygon, image_size, density.shape)).sum())


def test_counter_gives_a_plausible_map_for_a_real_frame(counter, report):
    capture = cv2.VideoCapture(str(VTEST))
    ok, image = capture.read()
    capture.release()
    assert ok
    density = counter.scaled_maps([image], None)[0]
    height, width = image.shape[:2]
    count = float(density.sum())
    report("CSRNet on vtest.avi frame 0", f"{count:.1f} people (sparse scene of ~10: an over-count is expected)")
    assert density.dtype == np.float32 and density.shape == (height // 8, width // 8)
    assert np.isfinite(density).all() and (density >= 0).all()
    assert 3 <= count <= 100
    lower_half = [(0, height / 2), (width, height / 2), (width, height), (0, height)]
    assert 0 < integrate_polygon(density, lower_half, (width, height)) < count


@pytest.mark.parametrize(("height", "width", "mappable"), [(7, 512, False), (4, 64, False), (16, 512, True),
                                                           (72, 2304, True), (71, 2304, False), (64, 7, False)])
def test_frames_too_small_for_the_network_are_refused_before_it_fails_on_them(counter, height, width, mappable):
    # As shipped: mapped at 512 px wide or narrowed down to 256 px, where a 2304 x 71 strip is 7.9 px tall.
    shipped = DensityMapCounter(counter.network, max_width=512, rescaling=rescaling(512, None, None, 40.0))
    assert shipped.can_map(height, width) is mappable
    image = np.zeros((height, width, 3), np.uint8)
    if mappable:
        assert shipped.density_maps([image], [None])[0].size > 0
    elif height * min(width, 512) / width < 8 or width < 8:  # what the network itself refuses
        with pytest.raises(RuntimeError):
            shipped.density_maps([image], [None])


def rescaling(max_width: int, widest: int | None, dense_cell_people: float | None, person_height_px: float = 90.0,
              max_people: float = 80.0, min_people_per_person_box: float = 0.4) -> Rescaling:
    """The rescaling of a counter with these widths and dense_cell_people (the shipped targets by default)."""
    return Rescaling(person_height_px, max_people, min_people_per_person_box, max_width, widest, dense_cell_people)


def first_vtest_frame() -> np.ndarray:
    return video_frames(VTEST, 1)[0]


def test_a_sparse_frame_gets_only_the_reduced_width_map(counter):
    image = first_vtest_frame()
    reduced = counter.scaled_maps([image], 512)[0]
    assert not dense_cells(reduced, 0.35).any()
    sparse = DensityMapCounter(counter.network, max_width=512, dense_max_width=768, dense_cell_people=0.35)
    np.testing.assert_array_equal(sparse.multi_scale_map(image), reduced)


def test_the_full_width_map_of_the_dense_region_matches_the_whole_frames_there(counter):
    """A threshold only the busiest cells of a real frame pass: the full-width map is made for the region around
    them, and their counts are those of the whole frame's full-width map (the margin keeps the crop's edge away)."""
    image = first_vtest_frame()
    reduced = counter.scaled_maps([image], 512)[0]
    threshold = 0.8 * float(cv2.blur(reduced, (3, 3)).max())
    dense = dense_cells(reduced, threshold)
    rows, cols = dense_region(dense)
    assert (rows.stop - rows.start) * (cols.stop - cols.start) < reduced.size  # only part of the frame
    partial = DensityMapCounter(counter.network, max_width=512, dense_max_width=768, dense_cell_people=threshold)
    combined = partial.multi_scale_map(image)
    whole = combine_scales(reduced, counter.scaled_maps([image], 768)[0], dense)
    assert combined.shape == reduced.shape and combined.dtype == np.float32
    np.testing.assert_array_equal(combined[~dense], reduced[~dense])
    assert float(combined[dense].sum()) == pytest.approx(float(whole[dense].sum()), rel=0.03)


class CountingNetwork:
    """A network that records the input shape of every pass."""

    def __init__(self, network):
        self.network = network
        self.name = network.name
        self.passes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.passes.append(batch.shape)
        return self.network(batch)


def test_the_accelerator_path_maps_a_batch_in_one_pass_per_shape(counter):
    """The GPU code path, run by torch on the CPU: a batch's reduced-width maps go through the network together per
    input shape, then the full-width maps of their dense regions; each map equals the one its image gets alone, and
    the OpenVINO path's up to its FP16 weights."""
    frames = video_frames(VTEST, 60, step=20)
    images = [cv2.resize(frames[0], (384, 288)), cv2.resize(frames[1], (384, 288)), cv2.resize(frames[2], (320, 160))]
    network = CountingNetwork(TorchNetwork(packaged_weights(), "cpu"))
    reduced = DensityMapCounter(network).scaled_maps([images[0]], 256)[0]
    threshold = 0.6 * float(cv2.blur(reduced, (3, 3)).max())  # only the busiest cells of the first image are dense
    batched = DensityMapCounter(network, max_width=256, dense_max_width=384, dense_cell_people=threshold)
    network.passes.clear()
    maps = batched.density_maps(images)
    reduced_passes = network.passes[:2]
    assert sorted(shape[0] for shape in reduced_passes) == [1, 2]  # the two 4:3 frames in one pass
    assert len(network.passes) > 2  # and the dense regions' full-width maps
    for image, together in zip(images, maps, strict=True):
        np.testing.assert_allclose(together, batched.multi_scale_map(image), rtol=1e-3, atol=1e-5)
    openvino = DensityMapCounter(counter.network, max_width=256, dense_max_width=384, dense_cell_people=threshold)
    for image, together in zip(images, maps, strict=True):
        assert float(together.sum()) == pytest.approx(float(openvino.multi_scale_map(image).sum()), rel=0.03)


def test_the_dense_region_has_a_margin_and_bounds_on_a_coarse_grid():
    dense = np.zeros((48, 64), dtype=bool)
    dense[20, 30] = True
    assert dense_region(dense) == (slice(16, 32), slice(24, 40))
    dense[47, 63] = True  # clipped to the grid
    assert dense_region(dense) == (slice(16, 48), slice(24, 64))
    dense = np.zeros((48, 64), dtype=bool)
    dense[2, 3] = True
    assert dense_region(dense) == (slice(0, 8), slice(0, 8))


def test_dense_cells_take_the_full_width_counts_and_the_rest_keep_the_reduced_ones():
    reduced = np.full((4, 6), 0.05, dtype=np.float32)
    reduced[:, :3] = 0.6  # a packed left half
    full = np.full((8, 12), 0.02, dtype=np.float32)
    full[:, :6] = 0.2  # the full-width map finds more people there: 0.8 per reduced cell
    dense = dense_cells(reduced, 0.35)
    assert dense[:, :3].all() and not dense[:, 3:].any()
    combined = combine_scales(reduced, full, dense)
    np.testing.assert_allclose(combined[:, :3], 0.8, rtol=1e-5)
    np.testing.assert_allclose(combined[:, 3:], 0.05)

    region = DenseRegion.of(reduced, 0.35)  # as the inference stage merges a dense region's full-width map
    full_of_region = full[2 * region.rows.start:2 * region.rows.stop, 2 * region.cols.start:2 * region.cols.stop]
    np.testing.assert_array_equal(region.merged(reduced, full_of_region), combined)
    assert DenseRegion.of(reduced[:, 3:], 0.35) is None  # no dense cells: no full-width map is made


def people_boxes(height: float, count: int = 3, width: float = 40.0, left: float = 0.0, top: float = 0.0) -> np.ndarray:
    """`count` person boxes `height` px tall side by side from (left, top), as the detector sends them."""
    return np.array([[left + i * width, top, left + (i + 1) * width, top + height] for i in range(count)],
                    dtype=np.float32)


def test_a_sparse_frame_of_tall_people_is_mapped_narrower_on_the_reduced_grid(counter):
    """vtest frame 0 (a 768 px street view of 3 people, which the 512 px map counts as 9) as if its people were
    240 px tall: 160 px at 512 px wide, so the map is made at 768 * 90 / 240 = 288 -> 256 px (on the 64 px grid) and
    resampled onto the 512 px map's grid, keeping its count. A crowd the reduced map counts above
    rescaled_max_people, one with dense cells, or too few boxes to tell keep the reduced width."""
    image = first_vtest_frame()
    reduced = counter.scaled_maps([image], 512)[0]
    narrowing = DensityMapCounter(counter.network, 512, 768, 0.35, rescaling(512, 768, 0.35))
    narrowed = narrowing.multi_scale_map(image, people_boxes(240.0))
    assert narrowed.shape == reduced.shape and narrowed.dtype == np.float32
    assert float(narrowed.sum()) == pytest.approx(float(counter.scaled_maps([image], 256)[0].sum()), rel=1e-4)
    assert float(narrowed.sum()) < float(reduced.sum())
    np.testing.assert_array_equal(narrowing.multi_scale_map(image, people_boxes(135.0)), reduced)  # 90 px at 512
    np.testing.assert_array_equal(narrowing.multi_scale_map(image, people_boxes(240.0, count=2)), reduced)
    np.testing.assert_array_equal(narrowing.multi_scale_map(image, None), reduced)
    packed = DensityMapCounter(counter.network, 512, 768, 0.35,
                               rescaling(512, 768, 0.35, max_people=0.5 * float(reduced.sum())))
    np.testing.assert_array_equal(packed.multi_scale_map(image, people_boxes(240.0)), reduced)
    threshold = 0.8 * float(cv2.blur(reduced, (3, 3)).max())  # only the busiest cells are dense
    locally_dense = DensityMapCounter(counter.network, 512, 768, threshold, rescaling(512, 768, threshold))
    unrescaled = DensityMapCounter(counter.network, max_width=512, dense_max_width=768, dense_cell_people=threshold)
    np.testing.assert_array_equal(locally_dense.multi_scale_map(image, people_boxes(240.0)),
                                  unrescaled.multi_scale_map(image))


class EvenNetwork:
    """A stand-in model that finds `people_per_pixel` people in every input pixel: the map of a frame scaled to
    a larger width counts more people, as CSRNet counts small heads it lost at a narrower width."""

    name = "even"

    def __init__(self, people_per_pixel: float):
        self.people_per_pixel = people_per_pixel
        self.widths: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.widths.append(batch.shape[3])
        rows, cols = batch.shape[2] // 8, batch.shape[3] // 8
        return np.full((len(batch), rows, cols), 64 * self.people_per_pixel, dtype=np.float32)


@pytest.mark.parametrize(("box_width", "min_people_per_person_box", "widened"), [
    (64.0, 0.4, True),  # the map puts 0.64 of a person under each box: it sees them, but not all
    (32.0, 0.4, False),  # 0.32: under min_people_per_person_box, it does not see them (texture would grow wider)
    (128.0, 0.4, False),  # 1.28: it counts each one whole already
    (64.0, 0.0, False),  # no per-box check configured: nothing tells the map sees them
])
def test_a_sparse_frame_of_small_people_is_mapped_wider_only_where_the_map_sees_them_in_part(
        box_width, min_people_per_person_box, widened):
    """A 1024 x 768 frame whose 3 people are 120 px tall: 60 px at 512 px wide, so a map at 1024 * 90 / 120 = 768
    px would make them 90 px tall. A box 64 px wide at 512 px covers 8 x 8 cells of the 512 px map, 0.01 person
    each with this stand-in model: 0.64 people per box."""
    network = EvenNetwork(0.01 / 64)  # 0.01 person per 8x8 cell
    widening = DensityMapCounter(network, 512, 1024, 0.35, rescaling(
        512, 1024, 0.35, min_people_per_person_box=min_people_per_person_box))
    image = np.zeros((768, 1024, 3), np.uint8)
    boxes = people_boxes(120.0, width=box_width * 2)  # frame pixels: twice the 512 px map's
    reduced = widening.scaled_maps([image], 512)[0]
    assert reduced.shape == (48, 64)
    density = widening.multi_scale_map(image, boxes)
    assert density.shape == reduced.shape
    if widened:
        assert network.widths[-1] == 768
        assert float(density.sum()) == pytest.approx(float(reduced.sum()) * (768 / 512) ** 2, rel=0.02)
    else:
        assert network.widths[-1] == 512
        np.testing.assert_array_equal(density, reduced)


@pytest.mark.parametrize(("frame_width", "dense_max_width", "widest"), [
    (640, 1024, 640), (640, 576, 576), (700, 1024, 640), (540, 1024, None)])
def test_a_frame_is_never_widened_past_its_own_width_or_the_dense_crowd_width_on_the_grid(
        frame_width, dense_max_width, widest):
    """People 32 px tall at 512 px, whom 1440 px would make 90 px tall: widened as far as the frame's width and
    dense_max_width allow, down to the 64 px grid; a frame that leaves no wider width on it is mapped at 512 px."""
    network = EvenNetwork(0.01 / 64)
    image = np.zeros((frame_width * 3 // 4, frame_width, 3), np.uint8)
    boxes = people_boxes(32.0 * frame_width / 512, width=128.0 * frame_width / 512)  # 0.52 people under each
    DensityMapCounter(network, 512, dense_max_width, 0.35,
                      rescaling(512, dense_max_width, 0.35)).multi_scale_map(image, boxes)
    assert network.widths == [512] + ([widest] if widest else [])


def test_the_rescaled_width_makes_people_the_target_height_on_a_coarse_grid():
    assert rescaled_width(1024, 512, 1024, person_height=256, target_height=90) == 384  # 360 -> 384
    assert rescaled_width(1024, 512, 1024, person_height=200, target_height=90) == 448  # 461 -> 448
    assert rescaled_width(1024, 512, 1024, person_height=190, target_height=90) is None  # 485 -> 512: as reduced
    assert rescaled_width(1024, 512, 1024, person_height=120, target_height=90) == 768
    assert rescaled_width(1024, 512, 1024, person_height=40, target_height=90) == 1024  # at most the widest
    assert rescaled_width(1024, 512, 640, person_height=40, target_height=90) == 640
    assert rescaled_width(1024, 512, 1024, person_height=900, target_height=90) == 256  # at least the narrowest
    assert rescaled_width(460, 460, 460, person_height=150, target_height=90) == 256  # 276 -> 256
    assert rescaled_width(460, 460, 460, person_height=50, target_height=90) is None  # never past the frame's width
    assert rescaled_width(520, 512, 520, person_height=60, target_height=90) is None  # 768, but 520 -> 512 on the grid
    assert rescaled_width(700, 512, 700, person_height=60, target_height=90) == 640


def test_the_frames_person_height_needs_a_few_boxes():
    boxes = np.array([[0, 10, 5, 40], [3, 0, 9, 100], [1, 1, 2, 51]], dtype=np.float32)
    assert median_person_height(boxes) == 50.0
    assert median_person_height(boxes[:2]) is None
    assert median_person_height(np.zeros((0, 4))) is None


def test_integration_weights_partial_cells_by_area():
    density = np.ones((10, 20), dtype=np.float32)  # a 160 x 80 image at 1/8: one person per cell
    assert integrate_polygon(density, [(0, 0), (160, 0), (160, 80), (0, 80)], (160, 80)) == pytest.approx(200)
    assert integrate_polygon(density, [(0, 0), (80, 0), (80, 40), (0, 40)], (160, 80)) == pytest.approx(50)
    assert integrate_polygon(density, [(0, 0), (4, 0), (4, 8), (0, 8)], (160, 80)) == pytest.approx(0.5)
