"""Which analyzers a camera gets: the registry of analytics concerns, by the name that scopes their state."""
from __future__ import annotations

from processors.analytics.contract import AnalyzerFactory
from processors.analytics.crowd.analyzer import CrowdAnalyzer
from processors.analytics.traffic.analyzer import TrafficAnalyzer
from schemas import Detections
from schemas.settings.config import GEOMETRY_MARGIN, CameraConfig

# Narrower pictures lose the heads a crowd is counted by: on the crowd dev set's packed images the zone count's error
# rises from 17.5 % to 23 % at 640 px wide and 37 % at 352 px, nearly all of it counting low
# (tests/devsets/crowd/README.md, measurements_degraded.csv).
CROWD_MIN_WIDTH_PX = 640


def analyzers_for(camera: CameraConfig) -> dict[str, AnalyzerFactory]:
    """Analyzers a camera needs, by name (the name scopes its state in the table)."""
    analyzers: dict[str, AnalyzerFactory] = {}
    if camera.zones:
        analyzers["crowd"] = CrowdAnalyzer.restore
    if camera.scene is not None:
        analyzers["traffic"] = TrafficAnalyzer.restore
    return analyzers


def geometry_mismatch(camera: CameraConfig, width: int, height: int) -> str | None:
    """A one-line warning when the camera's geometry does not fit its picture (width x height, the camera's own
    size, from its detections), else None. Geometry that leaves the picture was drawn on another one; geometry that
    exactly fills the smaller frame capture scales the picture to (max_width) was most likely drawn on that frame,
    as the console's editor drew before boxes came in the camera's own pixels."""
    outside = camera.geometry_outside(width, height)
    if outside:
        return (f"camera {camera.id}: {'; '.join(outside)}, outside its {width}x{height} picture: zones, lines and "
                "regions are drawn in the pixels of the camera's own picture (the stream's full-size frame)")
    if width <= camera.max_width:
        return None
    scaled = (camera.max_width, max(1, round(height * camera.max_width / width)))
    if camera.geometry_outside(*scaled) or not _reaches_border(camera, scaled):
        return None
    return (f"camera {camera.id}: its geometry lies within and reaches the edge of the {scaled[0]}x{scaled[1]} frame "
            f"capture scales its {width}x{height} picture to: if it was drawn on that frame, multiply its coordinates "
            f"by {width / scaled[0]:.4g} (they are in the pixels of the camera's own picture)")


def narrow_crowd_picture(camera: CameraConfig, width: int) -> str | None:
    """A one-line warning when a camera with crowd zones is counted on a picture narrower than CROWD_MIN_WIDTH_PX
    (its own width, or the max_width capture scales it to), else None. Judged on the width, as max_width and the
    density model's input sizes are, a portrait picture included."""
    counted = min(width, camera.max_width)
    if not camera.zones or counted >= CROWD_MIN_WIDTH_PX:
        return None
    return (f"camera {camera.id}: its crowd zones are counted on a picture {counted} px wide: below "
            f"{CROWD_MIN_WIDTH_PX} px the counters lose small heads and count a packed crowd low (a lower risk level "
            "than the crowd's); give it a stream at least that wide")


def _reaches_border(camera: CameraConfig, size: tuple[int, int]) -> bool:
    """Whether some point of the camera's geometry lies on the right or bottom edge of a picture of this size."""
    margin = GEOMETRY_MARGIN * max(size)
    return any(x >= size[0] - margin or y >= size[1] - margin for _, points in camera.geometry() for x, y in points)


class PictureCheck:
    """The analytics stage's and replay's check of each camera's configuration against the picture its detections
    describe (geometry_mismatch, narrow_crowd_picture, resized_picture): once per camera and picture size, a size
    seen among the camera's last SIZES_REMEMBERED not again (a stream alternating sizes would say it every frame)."""

    SIZES_REMEMBERED = 4

    def __init__(self):
        self.seen: dict[str, list[tuple[int, int]]] = {}  # camera id -> its sizes checked, the last one last

    def warnings(self, camera: CameraConfig, detections: Detections) -> list[str]:
        size = (detections.image_width, detections.image_height)
        seen = self.seen.setdefault(camera.id, [])
        if seen and seen[-1] == size:
            return []
        previous, known = (seen[-1] if seen else None), size in seen
        if known:
            seen.remove(size)
        seen.append(size)
        del seen[:-self.SIZES_REMEMBERED]
        if known:
            return []
        found = [geometry_mismatch(camera, *size), narrow_crowd_picture(camera, size[0])]
        if previous is not None:
            found.append(resized_picture(camera, previous, size))
        return [warning for warning in found if warning]


def resized_picture(camera: CameraConfig, before: tuple[int, int], after: tuple[int, int]) -> str | None:
    """A one-line warning when a camera with geometry sends a picture of another size than before (its stream
    changed, say from a sub-stream to the main one), else None: its geometry stays in pixels, so it now covers
    another part of the scene, and a crowd zone's area_m2 no longer matches the pixels it counts in."""
    if not camera.geometry():
        return None
    factor_x, factor_y = after[0] / before[0], after[1] / before[1]
    scale = (f"multiply their coordinates by {factor_x:.4g}" if abs(factor_x - factor_y) <= 0.01 * factor_x
             else f"redraw them (the width changed {factor_x:.4g}-fold, the height {factor_y:.4g}-fold)")
    return (f"camera {camera.id}: its picture changed from {before[0]}x{before[1]} to {after[0]}x{after[1]}: zones, "
            "lines and regions stay in the pixels of the picture they were drawn on, so they now cover another part "
            f"of the scene; if they were drawn on the {before[0]}x{before[1]} picture, {scale}")
