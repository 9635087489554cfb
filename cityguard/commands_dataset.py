"""`cityguard dataset build|stats|export|import`: the site's own detection dataset from operator feedback, in the
YOLO layout, and its labels in and out of labelling tools."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cityguard.arguments import FRACTION, HELD_OUT_HELP, NON_NEGATIVE, NON_NEGATIVE_COUNT, POSITIVE, shown_names
from cityguard.training.labels import LABEL_FORMATS
from infra import assets

if TYPE_CHECKING:
    from cityguard.training.dataset import Dataset, SplitPlan


def _camera_path(text: str) -> tuple[str, Path]:
    camera, separator, path = text.partition("=")
    if not separator or not camera or not path:
        raise argparse.ArgumentTypeError(f"expected CAMERA=PATH, got {text!r}")
    return camera, Path(path)


def register(commands, add_command) -> None:
    dataset = commands.add_parser("dataset", help="build, inspect and relabel the site's training dataset")
    actions = dataset.add_subparsers(dest="dataset_command", required=True)

    build = add_command(actions, "build", "collect marked false alarms, frames around missed events and background "
                        "samples into a YOLO dataset split by camera and time", run_build)
    build.add_argument("--out", type=Path, default=Path("var/datasets/site"))
    build.add_argument("--false-alarms", type=Path, default=None,
                       help="folder of <camera>/<frame>.jpg + .json false-alarm records (default: the configured "
                       "console.hard_negatives_dir, where the console writes them; skipped if absent)")
    build.add_argument("--missed", type=Path, default=None,
                       help="CSV camera,type,start,end of missed events (seconds into each camera's clip)")
    build.add_argument("--window", type=NON_NEGATIVE, default=2.0,
                       help="seconds sampled before and after a missed event")
    build.add_argument("--step", type=POSITIVE, default=0.5, help="seconds between frames around a missed event")
    build.add_argument("--background", type=NON_NEGATIVE_COUNT, default=20,
                       help="frames sampled evenly from each camera's clip")
    build.add_argument("--clip", type=_camera_path, action="append", default=[],
                       help="CAMERA=VIDEO to read that camera's frames from (default: its configured file source)")
    build.add_argument("--no-prelabel", action="store_true",
                       help="do not label frames with the detector (leave them empty for operators)")
    build.add_argument("--label-confidence", type=FRACTION, default=None,
                       help="confidence of detector pre-labels (default: the configured one; the configured "
                       "model.class_confidence applies on top, as in the stages)")
    build.add_argument("--val-fraction", type=FRACTION, default=0.2,
                       help="share of new time blocks that go to validation (kept for the dataset's life, as are "
                       "--block-seconds and --seed: another needs a new --out)")
    build.add_argument("--block-seconds", type=POSITIVE, default=60.0,
                       help="length of the contiguous time blocks that go to one split as a whole")
    build.add_argument("--guard-seconds", type=NON_NEGATIVE, default=2.0,
                       help="validation frames this close to a training frame of the same camera and clock are dropped")
    build.add_argument("--val-camera", action="append", default=[],
                       help="a camera held out entirely for validation (from the dataset's first build with it)")
    build.add_argument("--seed", type=int, default=0, help="another division of the time blocks")
    build.add_argument("--held-out", type=Path, default=None,
                       help=HELD_OUT_HELP)

    stats = add_command(actions, "stats", "images and boxes per split, class, camera and source", run_stats,
                        needs_config=False)
    stats.add_argument("dataset", type=Path)
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")

    export = add_command(actions, "export", "write the dataset's labels for a labelling tool", run_export,
                         needs_config=False)
    export.add_argument("dataset", type=Path)
    export.add_argument("--format", dest="label_format", choices=LABEL_FORMATS, required=True,
                        help="coco: one JSON file; voc: one Pascal VOC XML per image (LabelImg); yolo: txt per image")
    export.add_argument("--out", type=Path, required=True, help="a .json file for coco, else a folder")

    imported = add_command(actions, "import", "replace the dataset's labels with corrected ones from a labelling tool",
                           run_import, needs_config=False)
    imported.add_argument("dataset", type=Path)
    imported.add_argument("--format", dest="label_format", choices=LABEL_FORMATS, required=True)
    imported.add_argument("--labels", type=Path, required=True, help="the COCO JSON file, or the folder of XML/txt")


def file_sources(config) -> dict[str, Path]:
    """Each camera's configured source, where that is a local file."""
    sources = {camera.id: Path(config.resolve_path(assets.resolve(camera.source))) for camera in config.cameras}
    return {camera: source for camera, source in sources.items() if source.is_file()}


def camera_clips(config, sources: dict[str, Path], given: list[tuple[str, Path]]) -> dict[str, Path]:
    """The clip each camera's frames are read from: its configured file, or the one given for it (--clip); ValueError
    for a camera the configuration does not have."""
    known = {camera.id for camera in config.cameras}
    unknown = sorted({camera for camera, _ in given} - known)
    if unknown:
        raise ValueError(f"--clip names camera {unknown[0]!r}, which is not in the configuration")
    return sources | dict(given)


def refuse_shared_clips(read: dict[str, Path]) -> None:
    """ValueError when two cameras would read frames from one clip: the split keeps one camera's time blocks apart,
    so the same frames under two names could land in training and validation both."""
    readers: dict[Path, str] = {}
    for camera, clip in sorted(read.items()):
        first = readers.setdefault(clip.resolve(), camera)
        if first != camera:
            raise ValueError(f"cameras {first!r} and {camera!r} would both read {clip}: give each its own clip with "
                             "--clip CAMERA=VIDEO")


# A rebuild keeps its blocks' splits only under the plan the dataset was first built with (plan_record).
PLAN_OPTIONS = {"block_seconds": "--block-seconds", "val_fraction": "--val-fraction", "seed": "--seed"}


def refuse_plan_change(previous: Dataset, plan: SplitPlan) -> None:
    """Raises ValueError when `plan` would split `previous` otherwise than it was split, stop holding out a camera it
    holds out (its new frames would train), or hold out a camera whose frames it has for training (a model may have
    trained on them)."""
    from cityguard.training.dataset import plan_record

    recorded = previous.split_plan or {}
    record = plan_record(plan)
    for name, option in PLAN_OPTIONS.items():
        if name in recorded and recorded[name] != record[name]:
            raise ValueError(f"{option} {record[name]:g} differs from the {recorded[name]:g} {previous.root} "
                             "was built with, under which its frames keep their split: give a new --out for another")
    released = sorted(set(recorded.get("val_cameras", [])) - plan.val_cameras)
    if released:
        raise ValueError(f"--val-camera {released[0]} is missing: {previous.root} holds that camera out for "
                         "validation, and its new frames would go to training: give it again")
    trained = sorted(plan.val_cameras & {item.camera for item in previous.items if item.split == "train"})
    if trained:
        raise ValueError(f"--val-camera {trained[0]}: {previous.root} holds training frames of it, which a model may "
                         "have trained on: give a new --out to hold it out")


def refuse_unknown_val_cameras(val_cameras: list[str], config, previous: Dataset | None) -> None:
    """ValueError for a --val-camera that is neither a configured camera nor one `previous` has frames of: a
    misspelt one would hold out nothing, and the camera meant would go on training."""
    known = {camera.id for camera in config.cameras} | {item.camera for item in (previous.items if previous else [])}
    unknown = [camera for camera in val_cameras if camera not in known]
    if unknown:
        where = " nor has frames in " + str(previous.root) if previous else ""
        raise ValueError(f"--val-camera {unknown[0]}: no camera of that name is configured{where} (known: "
                         f"{shown_names(sorted(known)) or 'none'})")


def run_build(args, config) -> int:
    from cityguard.evaluation.runners import evaluation_model
    from cityguard.training.dataset import (
        SplitPlan,
        assign_splits,
        background_times,
        deduplicate,
        dropped_false_alarms,
        false_alarm_items,
        keep_reviewed,
        labelled_clip_items,
        load_dataset,
        missed_event_times,
        read_false_alarms,
        restore_interrupted_write,
        statistics,
        verify_no_leakage,
        write_dataset,
    )
    from cityguard.training.held_out import check_held_out

    plan = SplitPlan(args.val_fraction, args.block_seconds, args.guard_seconds, frozenset(args.val_camera), args.seed)
    restore_interrupted_write(args.out)  # else a build killed mid-swap would leave the previous one unseen
    previous = load_dataset(args.out) if (args.out / "manifest.csv").exists() else None
    refuse_unknown_val_cameras(args.val_camera, config, previous)
    if previous is not None:
        refuse_plan_change(previous, plan)
    sources = file_sources(config)
    clips = camera_clips(config, sources, args.clip)
    missed = missed_event_times(args.missed, args.window, args.step) if args.missed else {}
    for camera in missed:
        if camera not in clips:
            raise ValueError(f"missed events of camera {camera!r} but no clip for it: give --clip {camera}=VIDEO")
    read = {camera: clip for camera, clip in clips.items() if args.background or camera in missed}
    refuse_shared_clips(read)
    confidence = config.model.confidence if args.label_confidence is None else args.label_confidence
    class_confidence = config.model.class_confidence
    served = evaluation_model(config, confidence)
    detector = served.detector
    if not args.no_prelabel:
        print(f"pre-labels: {served.described}")
    names = detector.names
    prelabeller = None if args.no_prelabel else detector
    # The console writes them to console.hard_negatives_dir, relative to the configuration file.
    folder = args.false_alarms or Path(config.resolve_path(config.console.hard_negatives_dir))
    records = read_false_alarms(folder, names) if folder.is_dir() else []
    print(f"false alarms: {len(records)} records read from {folder}" + ("" if folder.is_dir() else " (absent)"))
    # A false alarm is a frame of its camera's source: held-out footage must not come in that way either.
    alarm_sources = [sources[camera] for camera in sorted({record.camera for record in records}) if camera in sources]
    warning = check_held_out([*read.values(), *alarm_sources, *(record.image for record in records)], args.held_out)
    if warning:
        print(f"cityguard: warning: {warning}", file=sys.stderr)
    items = false_alarm_items(records, prelabeller, confidence, class_confidence)
    for camera, times in missed.items():
        items += labelled_clip_items(camera, clips[camera], times, "missed", prelabeller, confidence,
                                     class_confidence)
    for camera, clip in clips.items():
        items += labelled_clip_items(camera, clip, background_times(clip, args.background), "background", prelabeller,
                                     confidence, class_confidence)
    if not items:
        raise SystemExit("nothing to build from: no false-alarm records, missed events or camera clips")
    kept_splits = {item.name: item.split for item in previous.items} if previous else {}
    candidates = keep_reviewed(deduplicate(items), previous)
    unlike = set()
    items, dropped = assign_splits(candidates, plan, kept_splits, unlike)
    verify_no_leakage(items, plan, unlike)
    data_yaml = write_dataset(args.out, items, names, plan, dropped_false_alarms(candidates, items))
    figures = statistics(load_dataset(args.out))
    print(f"dataset: {data_yaml} ({figures['images']}; {dropped} validation frames dropped next to or looking like "
          "training frames)")
    return 0


def run_stats(args, config) -> int:
    from cityguard.training.dataset import load_dataset, statistics

    figures = statistics(load_dataset(args.dataset))
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(f"images per split: {figures['images']}; per source: {figures['sources']}")
    for title in ("classes", "cameras"):
        print(f"{title}:")
        for name, counts in figures[title].items():
            print(f"  {name}: " + ", ".join(f"{key} {value}" for key, value in sorted(counts.items())))
    return 0


def run_export(args, config) -> int:
    from cityguard.training.dataset import load_dataset
    from cityguard.training.labels import to_coco, to_voc_xml, yolo_text

    dataset = load_dataset(args.dataset)
    labels = [dataset.labels(item) for item in dataset.items]
    if args.label_format == "coco":
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(to_coco(labels, dataset.names), indent=1))
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        for image in labels:
            stem = Path(image.name).stem
            if args.label_format == "voc":
                (args.out / f"{stem}.xml").write_text(to_voc_xml(image, dataset.names))
            else:
                (args.out / f"{stem}.txt").write_text(yolo_text(image))
        if args.label_format == "yolo":
            (args.out / "classes.txt").write_text("".join(f"{dataset.names[i]}\n" for i in sorted(dataset.names)))
    print(f"exported {len(labels)} images' labels ({args.label_format}) to {args.out}")
    return 0


def run_import(args, config) -> int:
    from cityguard.evaluation.loaders import load_yolo_labels
    from cityguard.training.dataset import load_dataset, replace_labels
    from cityguard.training.labels import ImageLabels, from_coco, from_voc_xml

    dataset = load_dataset(args.dataset)
    # Boxes are measured against each image itself, whatever size the labelling tool declares.
    sizes = {f"{item.name}.jpg": item.size() for item in dataset.items}
    if args.label_format == "coco":
        imported = from_coco(json.loads(args.labels.read_text()), dataset.names, str(args.labels), sizes)
    elif args.label_format == "voc":
        imported = [from_voc_xml(path, dataset.names, sizes) for path in folder_label_files(args.labels, ".xml")]
    else:
        imported = []
        for path in folder_label_files(args.labels, ".txt"):
            if f"{path.stem}.jpg" not in sizes:
                raise SystemExit(f"{path}: no image {path.stem}.jpg in {args.dataset}")
            width, height = sizes[f"{path.stem}.jpg"]
            imported.append(ImageLabels(f"{path.stem}.jpg", width, height,
                                        load_yolo_labels(path, width, height, dataset.names)))
    print(f"imported labels of {replace_labels(dataset, imported)} images into {args.dataset}")
    return 0


def folder_label_files(folder: Path, suffix: str) -> list[Path]:
    """A folder's label files with `suffix` (a YOLO export's classes.txt aside); none at all is an error, so a wrong
    --labels is not taken for corrections that change nothing."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no labels folder {folder} (--labels)")
    files = sorted(path for path in folder.glob(f"*{suffix}") if path.name != "classes.txt")
    if not files:
        raise FileNotFoundError(f"no *{suffix} label files in {folder} (--labels)")
    return files
