"""`cityguard ignore add|list|remove`: operator filters that keep a class in a region of one camera from raising
events, until they expire; the analytics stage applies them within seconds, without retraining."""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from cityguard.arguments import shown_time

DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S = 3650 * 86400.0


def duration_seconds(text: str) -> float | None:
    """'90s', '30m', '2h', '7d' -> seconds; 'never' -> None."""
    if text == "never":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 30m, 2h, 7d or 'never', got {text!r}")
    seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a filter that holds for {text} would have expired already")
    if seconds > MAX_DURATION_S:  # its end would be no date a file or a clock can hold
        raise argparse.ArgumentTypeError(f"a filter holds for at most 3650d (or 'never'), not {text}")
    return seconds


def polygon_points(text: str) -> list[tuple[float, float]]:
    """'x,y x,y x,y' (image pixels) -> points."""
    try:
        points = [tuple(float(v) for v in pair.split(",")) for pair in text.replace(";", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'x,y x,y x,y ...', got {text!r}") from None
    if len(points) < 3 or any(len(point) != 2 for point in points):
        raise argparse.ArgumentTypeError(f"expected 3 or more x,y points, got {text!r}")
    return points


def register(commands, add_command) -> None:
    ignore = commands.add_parser("ignore", help="filters that silence a class in a region of a camera")
    actions = ignore.add_subparsers(dest="ignore_command", required=True)

    add = add_command(actions, "add", "stop a class in a region of a camera from raising events", run_add)
    add.add_argument("--camera", required=True)
    add.add_argument("--class", dest="class_name", required=True, help="class name as the model reports it (car)")
    add.add_argument("--polygon", type=polygon_points, required=True,
                     help="region in image pixels (of the camera's own picture): 'x,y x,y x,y ...'")
    add.add_argument("--expires", type=duration_seconds, default=duration_seconds("24h"),
                     help="how long it holds: 90s, 30m, 2h, 7d or never (default: 24h)")
    add.add_argument("--note", default="", help="why (shown in the list)")

    listing = add_command(actions, "list", "filters in force (expired ones with --all)", run_list)
    listing.add_argument("--all", action="store_true", help="also list expired filters")

    remove = add_command(actions, "remove", "delete a filter", run_remove)
    remove.add_argument("filter_id")
    for action in (add, listing, remove):
        action.add_argument("--store", type=Path, default=None,
                            help="the filters file (default: the configured analytics.ignore_filters)")


def filter_store(args, config):
    from processors.analytics.ignore_filters import IgnoreFilterStore

    if args.store is not None:
        if not args.store.parent.is_dir():  # a mistyped path: never make folders for it
            raise ValueError(f"--store {args.store}: no folder {args.store.parent}")
        return IgnoreFilterStore(args.store)
    if config.analytics.ignore_filters is None:
        raise ValueError("set analytics.ignore_filters in the configuration, or pass --store")
    return IgnoreFilterStore(Path(config.resolve_path(config.analytics.ignore_filters)))


def site_class_names(config) -> set[str]:
    """The class names the COCO models report and those the site's traffic scenes name."""
    from processors.inference.export import coco_names

    names = set(coco_names().values())
    for camera in config.cameras:
        if camera.scene is not None:
            names |= {*camera.scene.vehicle_classes, *camera.scene.road_classes}
    return names


def run_add(args, config) -> int:
    known = {camera.id for camera in config.cameras}
    if args.camera not in known:
        raise ValueError(f"camera {args.camera!r} is not configured "
                         f"(known: {', '.join(sorted(known)) or 'none'})")
    known_classes = site_class_names(config)
    if args.class_name not in known_classes:  # a fine-tuned model may name others: warned, not refused
        print(f"cityguard: warning: class {args.class_name!r} is neither a COCO class nor one the site's scenes "
              "name: the filter matches only if the serving model reports it so", file=sys.stderr)
    try:
        rule = filter_store(args, config).add(args.camera, args.class_name, args.polygon, args.expires, args.note)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    until = shown_time(rule.expires_at, "never")
    print(f"ignore filter {rule.id}: {rule.class_name} on {rule.camera} until {until}")
    return 0


def run_list(args, config) -> int:
    now = time.time()
    rules = [rule for rule in filter_store(args, config).load() if rule.active(now) or args.all]
    if not rules:
        print("no ignore filters" if args.all else "no active ignore filters (--all shows expired ones)")
    for rule in rules:
        points = " ".join(f"{x:g},{y:g}" for x, y in rule.polygon)
        until = shown_time(rule.expires_at, "never") + ("" if rule.active(now) else " (expired)")
        print(f"{rule.id} {rule.camera} {rule.class_name} until {until} [{points}]"
              + (f" {rule.note}" if rule.note else ""))
    return 0


def run_remove(args, config) -> int:
    try:
        rule = filter_store(args, config).remove(args.filter_id)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    print(f"removed ignore filter {rule.id} ({rule.class_name} on {rule.camera})")
    return 0
