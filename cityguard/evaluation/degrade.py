"""Copies of a development set's images as a worse camera delivers them: a narrower stream, hard compression, dusk,
a soft focus. Scoring each copy with `cityguard eval counts` shows what a counter needs from a camera."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

# A copy of a BGR image (given a noise source) and the JPEG quality it is saved at.
Degradation = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, int]]
SAVED_QUALITY = 85  # a camera stream's usual JPEG quality, for every copy but the compressed one


def _narrower(width: int) -> Degradation:
    def scaled(image: np.ndarray, _: np.random.Generator) -> tuple[np.ndarray, int]:
        import cv2

        if image.shape[1] <= width:
            return image, SAVED_QUALITY
        height = max(1, round(image.shape[0] * width / image.shape[1]))
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), SAVED_QUALITY
    return scaled


def _saved_at(quality: int) -> Degradation:
    def saved(image: np.ndarray, _: np.random.Generator) -> tuple[np.ndarray, int]:
        return image, quality
    return saved


def _dark(image: np.ndarray, noise: np.random.Generator) -> tuple[np.ndarray, int]:
    darker = image.astype(np.float32) * 0.4 + noise.normal(0.0, 6.0, image.shape)
    return np.clip(darker, 0, 255).astype(np.uint8), SAVED_QUALITY


def _blurred(image: np.ndarray, _: np.random.Generator) -> tuple[np.ndarray, int]:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), 2.0), SAVED_QUALITY


DEGRADATIONS: dict[str, Degradation] = {
    "jpeg85": _saved_at(SAVED_QUALITY),  # the control: only saved again, as every other copy is
    "w640": _narrower(640),  # a D1 stream: scaled down (area) to 640 px wide; narrower images are left as they are
    "w352": _narrower(352),  # a CIF sub-stream: 352 px wide
    "jpeg20": _saved_at(20),  # hard compression
    "dark": _dark,  # dusk: every channel x 0.4 with Gaussian noise of 6 grey levels
    "blur2": _blurred,  # a soft focus: Gaussian blur of sigma 2 px
}


def degraded(name: str, image: np.ndarray, image_name: str) -> tuple[np.ndarray, int]:
    """One copy of a BGR image and its JPEG quality; noise is seeded by the image's name, so a rebuilt set gets the
    same copies."""
    seed = int.from_bytes(hashlib.sha256(image_name.encode()).digest()[:8], "big")
    return DEGRADATIONS[name](image, np.random.default_rng(seed))


def write_degraded_copies(images: Path, out: Path, names: list[str]) -> int:
    """Writes out/<copy>/<image's file name> for every image in the folder and every copy named, so the set's truth
    file scores each copy; returns the images. A copy goes through JPEG at its quality whatever the file's format (a
    PNG keeps the JPEG's pixels)."""
    import cv2

    from cityguard.evaluation.loaders import image_files, read_image

    paths = image_files(images)
    for path in paths:
        image = read_image(path)
        for name in names:
            copy, quality = degraded(name, image, path.name)
            ok, jpeg = cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError(f"could not encode the {name} copy of {path}")
            target = out / name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix.lower() in (".jpg", ".jpeg"):
                target.write_bytes(jpeg.tobytes())
            elif not cv2.imwrite(str(target), cv2.imdecode(jpeg, cv2.IMREAD_COLOR)):
                raise OSError(f"could not write {target}")
    return len(paths)
