"""`cityguard calibrate`: fit and check a camera's image-to-ground homography and write it into the site YAML."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from schemas.calibration import (
    degeneracy_problems,
    fit_homography,
    order_problem,
    reprojection_errors,
)
from schemas.settings.config import ConfigError
from schemas.settings.crowd import CalibrationConfig, calibrated_area_m2


def register(commands, add_command) -> None:
    calibrate = add_command(
        commands, "calibrate",
        "fit a camera's homography from >= 4 image/ground point pairs, check it, show zone areas, optionally save it",
        run_calibrate)
    calibrate.add_argument("--camera", required=True, help="camera id in the site configuration")
    calibrate.add_argument("--pair", action="append", dest="pairs", metavar="X,Y=GX,GY", type=parse_pair,
                           help="image pixel X,Y of a ground point and its position GX,GY in metres (repeat >= 4 "
                                "times); default: the pairs already in the camera's calibration")
    calibrate.add_argument("--write", action="store_true",
                           help="write the pairs and the matrix into the site YAML (its comments and layout kept)")


def parse_pair(text: str) -> tuple[tuple[float, float], tuple[float, float]]:
    try:
        image, ground = text.split("=")
        x, y = (float(v) for v in image.split(","))
        gx, gy = (float(v) for v in ground.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y=GX,GY (image pixels = ground metres)") from None
    if not all(math.isfinite(value) for value in (x, y, gx, gy)):
        raise argparse.ArgumentTypeError(f"{text!r} has a number that is not finite")
    return (x, y), (gx, gy)


def run_calibrate(args, config) -> int:
    known = [camera.id for camera in config.cameras]
    if args.camera not in known:
        raise ConfigError(f"camera {args.camera!r} is not in {args.config} (cameras: {', '.join(known) or 'none'})")
    camera = config.camera(args.camera)
    if args.pairs:
        image_points = [image for image, _ in args.pairs]
        ground_points = [ground for _, ground in args.pairs]
    elif camera.calibration is not None:
        image_points, ground_points = camera.calibration.image_points, camera.calibration.ground_points
    else:
        raise ConfigError(f"camera {camera.id} has no calibration: give at least 4 --pair X,Y=GX,GY")
    problems = degeneracy_problems(image_points, ground_points)
    fatal = [problem.message for problem in problems if problem.fatal]
    if fatal:
        raise ValueError(f"camera {camera.id}: no homography can be fitted: {'; '.join(fatal)}")
    for problem in problems:
        print(f"warning: {problem.message}")
    homography = fit_homography(image_points, ground_points)
    errors = reprojection_errors(homography, image_points, ground_points)
    print(f"homography (image -> ground metres) of camera {camera.id}:")
    for row in homography.matrix:
        print("  " + "  ".join(f"{value: .6g}" for value in row))
    for index, ((x, y), (gx, gy), error) in enumerate(zip(image_points, ground_points, errors, strict=True), 1):
        print(f"  pair {index}: ({x:g}, {y:g}) px -> ({gx:g}, {gy:g}) m  reprojection error {error:.3f} m")
    rms = float(np.sqrt((errors ** 2).mean()))
    print(f"reprojection error: rms {rms:.3f} m, max {errors.max():.3f} m"
          + (" (4 pairs fit exactly: add more pairs to measure the error)" if len(image_points) == 4 else ""))
    problem = order_problem(homography, image_points)
    if problem:
        raise ValueError(f"camera {camera.id}: {problem} (nothing written)")
    limit = camera.calibration.max_reprojection_error_m if camera.calibration else \
        CalibrationConfig.model_fields["max_reprojection_error_m"].default
    for zone in camera.zones:
        polygon = np.asarray(zone.polygon, dtype=float)
        if not homography.on_ground(polygon).all():
            print(f"ERROR: zone {zone.id} reaches above the horizon of this ground plane")
            continue
        area = calibrated_area_m2(zone.polygon, homography)
        measured = f", configured area_m2 {zone.area_m2:g} ({(area - zone.area_m2) / zone.area_m2:+.0%})" \
            if zone.area_m2 else ""
        print(f"zone {zone.id}: {area:.1f} m² on the ground{measured}")
    if errors.max() > limit:
        raise ValueError(f"camera {camera.id}: a pair is off by {errors.max():.2f} m, over max_reprojection_error_m "
                         f"{limit:g}: check the pairs (nothing written)")
    if args.write:
        saved = write_calibration(Path(args.config), camera.id, image_points, ground_points, homography.as_lists())
        print(f"wrote calibration of camera {camera.id} into {args.config}"
              + (f"; restart {', '.join(saved.restart)} for it to take effect" if saved.restart else " (unchanged)"))
    return 0


def write_calibration(path: Path, camera_id: str, image_points, ground_points, matrix):
    """The pairs and the fitted matrix into the camera's calibration, edited in place as the console's scene editor
    does (comments, anchors and the rest of the file as they were); what the save did (`Saved`)."""
    from sinks.console.scene_file import SceneFile, geometry_version

    scene_file = SceneFile(path)
    geometry = scene_file.read(camera_id)
    version = geometry_version(geometry)
    geometry["calibration"] = {**(geometry.get("calibration") or {}),
                               "image_points": [list(map(float, p)) for p in image_points],
                               "ground_points": [list(map(float, p)) for p in ground_points], "homography": matrix}
    return scene_file.write(camera_id, geometry, version)
