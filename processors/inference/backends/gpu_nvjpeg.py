"""GPU detector: JPEG decode with nvJPEG, letterbox and NMS on the GPU, fused FP16 YOLO.

On one H100 the model is not the bottleneck: CPU JPEG decode and letterboxing are (`python -m cityguard.bench.gpu`
compares the two paths). This backend takes the frames' JPEG bytes straight to the GPU, so the
CPU only moves bytes. It needs PyTorch weights (a .pt file or an ultralytics model yaml) and a CUDA device.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from processors.inference.detector import ImageDetections

LETTERBOX_FILL = 114 / 255  # ultralytics' grey padding
LETTERBOX_GROUP = 16
MAX_BOX_SIDE = 7680  # pixels: no box of a letterboxed image is wider or taller (ultralytics' NMS offset)


def letterbox_gpu(images: list[torch.Tensor], size: int) -> tuple[torch.Tensor, list[tuple[float, float, float]]]:
    """Resize each CHW uint8 image to fit size x size keeping its aspect ratio, pad centred; returns the NCHW float
    batch in [0, 1] and (scale, pad_x, pad_y) per image to map boxes back. Images of one size (a camera model's
    frames) are resized together, up to LETTERBOX_GROUP at a time: one kernel for them rather than one per image,
    with the float copies of that many full frames (about 400 MB at 1080p) in GPU memory at once."""
    batch = torch.full((len(images), 3, size, size), LETTERBOX_FILL, device=images[0].device)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(tuple(image.shape[1:]), []).append(index)
    placement: dict[tuple[int, int], tuple[float, float, float]] = {}  # image size -> (scale, pad_x, pad_y)
    for (height, width), indices in by_size.items():
        scale = min(size / height, size / width)
        # At least a pixel, as ultralytics keeps a thin picture: an empty resize raises, for the frame and its batch.
        new_height, new_width = max(round(height * scale), 1), max(round(width * scale), 1)
        pad_y, pad_x = (size - new_height) / 2, (size - new_width) / 2
        top, left = round(pad_y - 0.1), round(pad_x - 0.1)  # same rounding as ultralytics LetterBox
        for first in range(0, len(indices), LETTERBOX_GROUP):
            group = indices[first:first + LETTERBOX_GROUP]
            resized = F.interpolate(torch.stack([images[i] for i in group]).float().div_(255),
                                    size=(new_height, new_width), mode="bilinear", align_corners=False)
            batch[group, :, top:top + new_height, left:left + new_width] = resized
        placement[height, width] = (scale, left, top)
    return batch, [placement[tuple(image.shape[1:])] for image in images]


def batched_nms(predictions: torch.Tensor, confidence: float, iou: float, classes: list[int] | None = None,
                max_det: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """ultralytics' non_max_suppression (best class per box, boxes of one class suppress each other) for the whole
    batch at once: one NMS over all images' candidates, grouped by image and class, instead of a loop of a dozen
    small GPU operations per image. predictions: (B, 4 + classes, anchors), xywh. Returns the kept rows (M, 6: xyxy,
    confidence, class) in float32 grouped by image, each image's by falling confidence and at most max_det, and each
    row's image index (M,)."""
    candidates = predictions.transpose(1, 2)  # (B, anchors, 4 + classes)
    scores, class_ids = candidates[..., 4:].max(-1)
    keep = scores > confidence
    if classes is not None:
        keep &= torch.isin(class_ids, torch.tensor(classes, device=class_ids.device))
    image_index, anchor = keep.nonzero(as_tuple=True)
    xywh = candidates[image_index, anchor, :4].float()
    xyxy = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], dim=1)
    scores, class_ids = scores[image_index, anchor].float(), class_ids[image_index, anchor]
    # Each image's and class's boxes shifted apart so that one NMS call keeps them from suppressing each other, as
    # ultralytics shifts classes apart within an image. In float64: shifted as far as 64 images x 80 classes put
    # them, float32 would round the coordinates to a quarter pixel and change which boxes are kept. (torchvision's
    # batched_nms shifts in the boxes' own dtype, and above 5,000 boxes on the GPU loops over the groups instead.)
    groups = image_index * (candidates.shape[-1] - 4) + class_ids
    kept = torchvision.ops.nms(xyxy.double() + (groups * MAX_BOX_SIDE).double()[:, None], scores.double(), iou)
    # nms orders by confidence over the whole batch; a stable sort by image keeps that order within each.
    kept = kept[torch.sort(image_index[kept], stable=True).indices]
    image_index = image_index[kept]
    first_of_image = torch.searchsorted(image_index, image_index)
    rank = torch.arange(len(kept), device=kept.device) - first_of_image
    kept, image_index = kept[rank < max_det], image_index[rank < max_det]
    return torch.cat([xyxy[kept], scores[kept, None], class_ids[kept, None].float()], dim=1), image_index


def boxes_in_frames(rows: torch.Tensor, image_index: torch.Tensor, geometry: list[tuple[float, float, float]],
                    sizes: list[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Kept NMS rows of letterboxed images (M, 6: xyxy, confidence, class; grouped by image, `image_index` each
    row's) -> (xyxy, confidence, class id) arrays per image in its frame's pixels. All boxes are mapped in one pass
    and copied to the host once: per-image tensor operations cost a kernel launch and a device sync each, which at
    batch 64 took longer than the model."""
    per_image = torch.tensor([(*frame, *size[::-1]) for frame, size in zip(geometry, sizes, strict=True)],
                             dtype=torch.float32, device=rows.device)  # scale, pad_x, pad_y, width, height
    per_box = per_image[image_index]
    scale, pad, limit = per_box[:, :1], per_box[:, 1:3].repeat(1, 2), per_box[:, 3:5].repeat(1, 2)
    xyxy = torch.minimum(((rows[:, :4] - pad) / scale).clamp(min=0), limit)
    host = torch.cat([xyxy, rows[:, 4:6], image_index[:, None].float()], dim=1).cpu().numpy()
    counts = np.bincount(host[:, 6].astype(np.int64), minlength=len(geometry))
    return [(part[:, :4].astype(float), part[:, 4].astype(np.float32), part[:, 5].astype(np.int32))
            for part in np.split(host, np.cumsum(counts)[:-1])]


def predictions(output) -> torch.Tensor:
    """The decoded predictions (B, 4 + classes, anchors) of an ultralytics detection model's forward pass, which in
    eval mode also returns its raw head outputs."""
    return output[0] if isinstance(output, (list, tuple)) else output


class CapturedForward:
    """The model's forward pass captured once as a CUDA graph at a fixed batch size, then replayed.

    One fixed shape is what lets cuDNN's kernel search pay: it runs once per input shape and takes far longer than a
    batch, and the stage's batches come in every size up to its largest (with the search left on for every new size,
    several workers sharing an H200 fell to a fifth of their rate). Replaying also spares launching yolo11n's
    hundreds of small kernels from Python. A batch of up to the captured size is copied into the captured input
    (the rows past it hold whatever an earlier batch left there; their outputs are ignored).

    The input and output are shared: one caller at a time, inside torch.inference_mode, and the model is not to be
    converted (dtype, memory format) after the capture, which reads its weights where they were."""

    def __init__(self, model: torch.nn.Module, batch: int, image_size: int, dtype: torch.dtype,
                 device: torch.device):
        self.input = torch.zeros((batch, 3, image_size, image_size), dtype=dtype, device=device).contiguous(
            memory_format=torch.channels_last)
        searching = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires; cuDNN searches here
                for _ in range(3):
                    model(self.input)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: a model swap captures on its loader thread while the worker thread goes on serving.
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                output = model(self.input)
        finally:
            torch.backends.cudnn.benchmark = searching  # other shapes and models in the process run unsearched
        self.output = predictions(output)
        # Tensors the modules hold outside the graph's memory (the head's anchor grid): the graph reads them in
        # place, so they must outlive any module replacing its copy.
        self.read_in_place = [value for module in model.modules() for value in vars(module).values()
                              if isinstance(value, torch.Tensor)]

    @property
    def capacity(self) -> int:
        return len(self.input)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.input[:len(batch)].copy_(batch)
        self.graph.replay()
        return self.output[:len(batch)].clone()


class GpuJpegDetector:
    """Same interface as YoloDetector (`detect(images)`), plus `detect_jpegs(jpegs)` for the nvJPEG path.

    On CUDA the model runs in channels-last layout, captured with cuDNN's fastest kernels at `largest_batch` (the
    inference stage passes its own; CapturedForward): a batch of more than half that size is padded to it, larger
    ones run in chunks of it, and a smaller one (a tiled frame's tiles, a frame retried alone) runs eagerly with
    cuDNN's default kernels rather than pay for a whole captured batch. On an H200 this took yolo11n's forward pass
    at batch 64 from 18 ms to 11."""

    def __init__(self, weights: str, image_size: int = 640, confidence: float = 0.25, iou: float = 0.7,
                 classes: list[int] | None = None, device: str = "cuda", half: bool = True, largest_batch: int = 64):
        from ultralytics import YOLO

        yolo = YOLO(weights, task="detect")
        if not isinstance(yolo.model, torch.nn.Module):  # an export: ultralytics keeps only its path
            raise ValueError(f"model.backend gpu-nvjpeg runs PyTorch weights (.pt): {weights} is an exported model "
                             "(with YOLO_OFFLINE=1, model.offline_weights is used where it exists)")
        self.names = yolo.names
        self.name = f"{weights}-cuda-{'fp16' if half else 'fp32'}"
        self.device = torch.device(device)
        self.dtype = torch.float16 if half else torch.float32
        self.model = yolo.model.fuse().to(self.device, self.dtype).eval()
        self.image_size = image_size
        self.confidence = confidence
        self.iou = iou
        self.classes = classes
        self.captured = None
        if self.device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)  # tensor-core convolutions want NHWC
            with torch.inference_mode():
                self.captured = CapturedForward(self.model, largest_batch, image_size, self.dtype, self.device)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's predictions for a letterboxed batch, through the captured graph where it pays."""
        capacity = self.captured.capacity if self.captured is not None else max(1, len(batch))
        outputs = []
        for first in range(0, len(batch), capacity):
            part = batch[first:first + capacity]
            if self.captured is not None and 2 * len(part) > capacity:
                outputs.append(self.captured(part))
            else:
                outputs.append(predictions(self.model(part)))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    @torch.inference_mode()
    def detect_jpegs(self, jpegs: list[bytes]) -> list[ImageDetections]:
        started = time.perf_counter()
        encoded = [torch.frombuffer(bytearray(jpeg), dtype=torch.uint8) for jpeg in jpegs]
        images = torchvision.io.decode_jpeg(encoded, mode=torchvision.io.ImageReadMode.RGB, device=self.device)
        return self._detect_tensors(images, started)

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray]) -> list[ImageDetections]:
        """BGR numpy images (already decoded on the CPU), for the tiled detector and comparisons."""
        started = time.perf_counter()
        tensors = [torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).to(self.device).permute(2, 0, 1)
                   for image in images]
        return self._detect_tensors(tensors, started)

    def _synchronize(self) -> None:
        """Waits for queued GPU work, so the step timings are real (a no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _detect_tensors(self, images: list[torch.Tensor], started: float) -> list[ImageDetections]:
        batch, geometry = letterbox_gpu(images, self.image_size)
        self._synchronize()
        preprocessed = time.perf_counter()
        predictions = self.forward(batch.to(self.dtype, memory_format=torch.channels_last))
        self._synchronize()
        inferred = time.perf_counter()
        rows, image_index = batched_nms(predictions, self.confidence, self.iou, self.classes)
        boxes_per_image = boxes_in_frames(rows, image_index, geometry, [tuple(image.shape[1:]) for image in images])
        per_image_ms = 1000 * (time.perf_counter() - inferred) / len(images)
        timings = {"preprocess_ms": 1000 * (preprocessed - started) / len(images),
                   "inference_ms": 1000 * (inferred - preprocessed) / len(images), "postprocess_ms": per_image_ms}
        return [ImageDetections(xyxy, confidence, class_id, tuple(self.names[int(c)] for c in class_id), **timings)
                for xyxy, confidence, class_id in boxes_per_image]
