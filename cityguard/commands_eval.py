"""`cityguard eval detector|counts|events|lines`: accuracy on the operator's own labelled footage, as a report folder
(report.md with PNG plots, report.json with every figure).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cityguard.arguments import (
    FOLDER,
    FRACTION,
    HELD_OUT_HELP,
    NON_NEGATIVE,
    OPEN_FRACTION,
    POSITIVE,
    counted,
    names_among,
)
from cityguard.evaluation.degrade import DEGRADATIONS, write_degraded_copies
from cityguard.stages import tiled_detector

REPORT_HELP = "folder to write the report into: report.md with its plots, report.json (default: %(default)s)"

# Manifests live in the repository's tests, so an installed package has none: looked up only when a set is built.
DEVSETS = Path(__file__).resolve().parent.parent / "tests" / "devsets"


def _devset_name(text: str) -> str:
    known = sorted(manifest.parent.name for manifest in DEVSETS.glob("*/manifest.yaml"))
    if text not in known:
        where = f"known: {', '.join(known)}" if known else f"{DEVSETS} holds no manifests (a repository checkout does)"
        raise argparse.ArgumentTypeError(f"unknown development set {text!r} ({where})")
    return text


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _counter_names(text: str) -> list[str]:
    from cityguard.evaluation.runners import COUNTERS

    return names_among(text, COUNTERS, "counters")


def _degradation_names(text: str) -> list[str]:
    return names_among(text, DEGRADATIONS, "copies")


def _class_ids(text: str) -> list[int]:
    return [int(value) for value in _numbers(text)]


def register(commands, add_command) -> None:
    evaluation = commands.add_parser("eval", help="accuracy reports on labelled data")
    kinds = evaluation.add_subparsers(dest="evaluation", required=True)

    detector = add_command(kinds, "detector", "precision, recall, F1, mAP@0.5, PR curve and confusion matrix of the "
                           "configured model on a folder of images with YOLO-format labels", run_detector_eval)
    detector.add_argument("--images", type=FOLDER, required=True, help="folder of images")
    detector.add_argument("--labels", type=Path, default=None,
                          help="folder of YOLO .txt labels with the model's class ids (default: images -> labels)")
    detector.add_argument("--classes", type=_class_ids, default=None,
                          help="class ids to evaluate, e.g. 0,2 (default: those in the labels)")
    detector.add_argument("--confidence", type=FRACTION, default=None,
                          help="confidence for precision/recall/F1/confusion (default: the configured one)")
    detector.add_argument("--iou", type=OPEN_FRACTION, default=0.5, help="IoU for a match (default: %(default)s)")
    detector.add_argument("--tiling", action="store_true", help="also evaluate tiled inference (model.tiling)")
    detector.add_argument("--out", type=Path, default=Path("var/eval/detector"), help=REPORT_HELP)

    counts = add_command(kinds, "counts", "MAE, RMSE and relative error of people counts, by crowd size",
                         run_count_eval)
    counts.add_argument("--images", type=FOLDER, required=True, help="folder of images")
    counts.add_argument("--truth", type=Path, required=True,
                        help="file,count CSV (the images it counts in --images are scored); ShanghaiTech "
                        "ground-truth folder (GT_<image>.mat); MOTChallenge gt.txt")
    counts.add_argument("--truth-format", choices=("csv", "shanghaitech", "mot"), default=None,
                        help="default: from --truth (folder: shanghaitech, .csv, .txt: mot)")
    counts.add_argument("--predictions", type=Path, default=None,
                        help="file,count CSV of another counter's output instead of running the detector")
    counts.add_argument("--confidence", type=FRACTION, default=None, help="default: the configured one")
    counts.add_argument("--size-edges", type=_numbers, default=None,
                        help="crowd-size bin edges, each in the bin below it (default: 10,50,200: bins 0-10, 11-50, "
                        "51-200, 201+)")
    counts.add_argument("--mot-min-visibility", type=FRACTION, default=0.0)
    counts.add_argument("--counter", type=_counter_names, default=["detector"],
                        help="comma-separated counters to score: detector (whole frame), tiled (model.tiling), "
                        "density (the density-map model), fused (the analytics' zone counter: detector boxes and a "
                        "fresh density map through analytics.counting) (default: detector)")
    counts.add_argument("--fused-detector", choices=("detector", "tiled"), default="detector",
                        help="the detector feeding the fused counter, as the zone camera runs (default: detector)")
    counts.add_argument("--out", type=Path, default=Path("var/eval/counts"), help=REPORT_HELP)

    events = add_command(kinds, "events", "event-level precision, recall, F1, detection delay, type confusion and "
                         "ROC/AUC against labelled intervals", run_event_eval, needs_config=False)
    events.add_argument("--truth", type=Path, required=True, help="CSV camera,type,start,end")
    events.add_argument("--predicted", type=Path, required=True,
                        help="CSV camera,type,start,end[,score], or .jsonl of Event messages from the events topic; "
                        "per-frame scores (`cityguard replay --frame-scores`: a CSV with a frame column) give ROC/AUC "
                        "alone, with --segment")
    events.add_argument("--tolerance", type=NON_NEGATIVE, default=0.0,
                        help="seconds two intervals may be apart and match")
    events.add_argument("--segment", type=POSITIVE, default=None,
                        help="segment length in seconds for ROC (default: 1; per-frame scores need it given, e.g. "
                        "their frame length)")
    events.add_argument("--cameras", type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
                        default=None, help="comma-separated camera ids: score only these (the ones replayed; a "
                        "labelled camera without predictions otherwise scores as missed)")
    events.add_argument("--out", type=Path, default=Path("var/eval/events"), help=REPORT_HELP)

    lines = add_command(kinds, "lines", "per counting line and direction, the crossings counted against a hand count: "
                        "absolute and relative error, and totals", run_line_eval, needs_config=False)
    lines.add_argument("--truth", type=Path, required=True, help="CSV camera,line,direction,count")
    lines.add_argument("--predicted", type=Path, nargs="+", required=True,
                       help=".jsonl of LineCounts messages (`cityguard replay --line-counts`), one or more: each "
                       "file's windows count apart (a recording of the topic goes in one file)")
    lines.add_argument("--out", type=Path, default=Path("var/eval/lines"), help=REPORT_HELP)

    devset = commands.add_parser("devset", help="labelled development sets described by manifests in the repository")
    devsets = devset.add_subparsers(dest="devset", required=True)
    build = add_command(devsets, "build", "fetch a development set's files at their pinned commits, verify their "
                        "sha256 and refuse held-out sources", run_devset_build, needs_config=False)
    build.add_argument("name", type=_devset_name, help="a folder of tests/devsets, e.g. crowd")
    build.add_argument("--out", type=Path, required=True, help="folder to write images/, annotations/, truth.csv")
    build.add_argument("--from", dest="local", type=FOLDER, default=None,
                       help="copy from a local copy of the source repository instead of downloading")
    build.add_argument("--held-out", type=Path, default=None,
                       help=HELD_OUT_HELP)
    degrade = add_command(devsets, "degrade", "copies of a set's images as a worse camera delivers them (narrower, "
                          "compressed, dark, blurred), one folder each, to score with `eval counts`",
                          run_devset_degrade, needs_config=False)
    degrade.add_argument("--images", type=FOLDER, required=True, help="folder of images (a built set's images/)")
    degrade.add_argument("--out", type=Path, required=True, help="folder to write one folder per copy into")
    degrade.add_argument("--copies", type=_degradation_names, default=None,
                         help="comma-separated copies (default: all): " + ", ".join(DEGRADATIONS))


def run_detector_eval(args, config) -> int:
    from cityguard.evaluation.loaders import default_labels_folder
    from cityguard.evaluation.report import detector_report
    from cityguard.evaluation.runners import evaluate_detector, evaluation_model

    served = evaluation_model(config, 0.001)  # the usual mAP floor
    print(f"model: {served.described}")
    detector = served.detector
    variants = {"plain": detector, **({"tiled": tiled_detector(config, detector)} if args.tiling else {})}
    confidence = config.model.confidence if args.confidence is None else args.confidence
    labels = args.labels or default_labels_folder(args.images)
    results = {name: evaluate_detector(model, args.images, labels, confidence, args.iou, args.classes)
               for name, model in variants.items()}
    for name, result in results.items():
        print(f"{name}: mAP@0.5 {result.mean_average_precision:.3f} over {result.images} images")
        for c in result.classes:
            print(f"  {c.name}: P {c.counts.precision:.3f} R {c.counts.recall:.3f} F1 {c.counts.f1:.3f} "
                  f"AP50 {c.average_precision:.3f} ({c.truth_count} labelled)")
    print(f"report: {detector_report(results, args.out)}")
    return 0


def run_count_eval(args, config) -> int:
    from cityguard.evaluation.counting import DEFAULT_SIZE_EDGES
    from cityguard.evaluation.loaders import image_files, load_count_csv
    from cityguard.evaluation.report import count_comparison_report
    from cityguard.evaluation.runners import counter_counts, evaluate_counts, infer_truth_format, true_counts

    images = image_files(args.images)
    truth_format = args.truth_format or infer_truth_format(args.truth)
    if truth_format == "csv":  # the images both hold: one truth file per regime of a folder holding several
        listed = load_count_csv(args.truth)
        scored = [image for image in images if image.name in listed]
        if not scored:
            raise ValueError(f"{args.truth} counts none of the images in {args.images}")
        if len(scored) < len(images) or len(scored) < len(listed):
            print(f"scoring the {len(scored)} images {args.truth.name} counts in {args.images} "
                  f"({len(images) - len(scored)} other images there, {len(listed) - len(scored)} counted images not "
                  "there)")
        images = scored
    truth = true_counts(images, args.truth, truth_format, args.mot_min_visibility)
    edges = args.size_edges or DEFAULT_SIZE_EDGES
    if args.predictions:
        predicted_by_name = load_count_csv(args.predictions)
        missing = [image.name for image in images if image.name not in predicted_by_name]
        if missing:
            raise SystemExit(f"{args.predictions} has no count for {len(missing)} images, e.g. {missing[0]}")
        predicted = {"predictions": [predicted_by_name[image.name] for image in images]}
    else:
        predicted = counter_counts(args.counter, images, counters_for(args, config))
    results = {name: evaluate_counts(images, truth, counts, edges, {"counter": name})
               for name, counts in predicted.items()}
    for name, result in results.items():
        o = result.overall
        relative = o.mean_relative_error if o.mean_relative_error is not None else float("nan")
        print(f"{name}: {o.images} images: MAE {o.mean_absolute_error:.2f}, RMSE {o.root_mean_squared_error:.2f}, "
              f"mean relative error {relative:.3f}")
    print(f"report: {count_comparison_report(results, args.out)}")
    return 0


def counters_for(args, config):
    """The models the asked-for counters need, built from the configuration."""
    from cityguard.evaluation.runners import CounterSet, evaluation_model
    from processors.inference.density_map import DensityMapCounter

    confidence = config.model.confidence if args.confidence is None else args.confidence
    wanted = set(args.counter)
    if "fused" in wanted:
        wanted.add("density")
    if "density" in wanted:
        wanted.add(args.fused_detector)  # its person boxes choose the map's width, as in the inference stage
    detector = None
    if wanted & {"detector", "tiled"}:
        served = evaluation_model(config, confidence)
        print(f"model: {served.described}")
        detector = served.detector
    return CounterSet(
        detector=detector, tiled=tiled_detector(config, detector) if "tiled" in wanted else None,
        density=DensityMapCounter.from_config(config) if "density" in wanted else None,
        counting=config.analytics.counting, density_model=config.analytics.density_model, confidence=confidence,
        fused_uses_tiled=args.fused_detector == "tiled")


def run_event_eval(args, config) -> int:
    from cityguard.evaluation.events import DEFAULT_SEGMENT_S, evaluate_events, evaluate_scores
    from cityguard.evaluation.loaders import FRAME_COLUMN, holds_frame_scores, load_event_csv, load_event_messages
    from cityguard.evaluation.report import event_report, score_report

    truth = load_event_csv(args.truth)
    predicted = (load_event_messages(args.predicted) if args.predicted.suffix == ".jsonl"
                 else load_event_csv(args.predicted))
    frame_scores = args.predicted.suffix != ".jsonl" and holds_frame_scores(args.predicted)
    if frame_scores and args.segment is None:  # each frame would count as a predicted event
        raise ValueError(f"{args.predicted} holds per-frame scores (its {FRAME_COLUMN!r} column, as `cityguard "
                         "replay --frame-scores` writes them), not events: give --segment SECONDS to score their "
                         "ROC/AUC, or the replay's --events file for precision and recall")
    if args.cameras is not None:
        unknown = sorted(set(args.cameras) - {event.camera for event in [*truth, *predicted]})
        if unknown:  # a typo would score nothing and report it as a result
            raise ValueError(f"--cameras names cameras that neither {args.truth} nor {args.predicted} holds: "
                             f"{', '.join(unknown)}")
        truth = [event for event in truth if event.camera in args.cameras]
        predicted = [event for event in predicted if event.camera in args.cameras]
    for warning in scoring_warnings(truth, predicted, args.cameras is None):
        print(f"cityguard: warning: {warning}", file=sys.stderr)
    segment_s = DEFAULT_SEGMENT_S if args.segment is None else args.segment
    if frame_scores:
        rocs = evaluate_scores(truth, predicted, segment_s)
        aucs = ", ".join(f"{kind} {roc.auc:.3f}" if roc else f"{kind} n/a" for kind, roc in rocs.items())
        print(f"{len(truth)} labelled, {counted(len(predicted), 'frame score')}: AUC {aucs} (precision and recall "
              "need events: the replay's --events file)")
        print(f"report: {score_report(rocs, segment_s, args.out)}")
        return 0
    result = evaluate_events(truth, predicted, args.tolerance, segment_s)
    o = result.overall
    print(f"{len(truth)} labelled, {len(predicted)} predicted: P {o.precision:.3f} R {o.recall:.3f} F1 {o.f1:.3f}")
    print(f"report: {event_report(result, args.out)}")
    return 0


def run_line_eval(args, config) -> int:
    from cityguard.evaluation.lines import evaluate_line_counts
    from cityguard.evaluation.loaders import load_line_count_csv, load_line_count_messages
    from cityguard.evaluation.report import line_count_report

    truth = load_line_count_csv(args.truth)
    counted = load_line_count_messages(args.predicted)
    silent = sorted({key[0] for key in truth} - {key[0] for key in counted})
    if silent:  # a camera not replayed would score as counting nothing
        print(f"cityguard: warning: no crossing counted on {counted_text(silent)}", file=sys.stderr)
    result = evaluate_line_counts(truth, counted)
    for s in result.scores:
        relative = "n/a" if s.relative_error is None else f"{s.relative_error:+.0%}"
        print(f"{s.camera} {s.line} {s.direction}: {s.true} true, {s.counted} counted ({s.error:+d}, {relative})")
    relative_total = result.relative_absolute_error
    print(f"all: {result.true_total} true, {result.counted_total} counted, {result.absolute_error_total} missed or "
          f"extra ({'n/a' if relative_total is None else f'{relative_total:.0%}'} of the true)")
    print(f"report: {line_count_report(result, args.out)}")
    return 0


def counted_text(cameras: list[str]) -> str:
    return f"{counted(len(cameras), 'labelled camera')} ({', '.join(cameras)})"


def scoring_warnings(truth: list, predicted: list, all_cameras: bool) -> list[str]:
    """What makes a score mean less than it seems: labelled types no prediction has (a misspelt label scores as
    missed) and, when every camera is scored, labelled cameras without any prediction (not replayed?)."""
    warnings = []
    predicted_types = {event.type for event in predicted}
    for kind in sorted({event.type for event in truth} - predicted_types):
        labelled = sum(event.type == kind for event in truth)
        warnings.append(f"no predicted event has type {kind!r} ({labelled} labelled): "
                        f"predicted types are {', '.join(sorted(predicted_types)) or 'none'}")
    silent = sorted({event.camera for event in truth} - {event.camera for event in predicted})
    if all_cameras and silent:
        warnings.append(f"no predicted event on {counted(len(silent), 'labelled camera')} ({', '.join(silent[:5])}"
                        f"{', ...' if len(silent) > 5 else ''}): one not replayed scores as missed; --cameras scores "
                        "only those given")
    return warnings


def run_devset_build(args, config) -> int:
    from cityguard.evaluation.devset import DevsetClip, DevsetError, build_devset, held_out_notes, unchecked_warning

    held_out = held_out_notes(args.held_out)
    if not held_out:
        print(f"cityguard: warning: {unchecked_warning()}", file=sys.stderr)
    try:
        items = build_devset(DEVSETS / args.name / "manifest.yaml", args.out, args.local, held_out)
    except DevsetError as exc:  # a refused or changed source: not a usage mistake, so status 1
        print(f"cityguard: error: {exc}", file=sys.stderr)
        return 1
    if items and isinstance(items[0], DevsetClip):
        print(f"{counted(len(items), 'clip')} in {args.out / 'clips'}")
    else:
        print(f"{counted(len(items), 'image')} with counts in {args.out} (truth: {args.out / 'truth.csv'})")
    return 0


def run_devset_degrade(args, config) -> int:
    names = args.copies or list(DEGRADATIONS)
    count = write_degraded_copies(args.images, args.out, names)
    print(f"{count} images x {len(names)} copies in {args.out} ({', '.join(names)})")
    return 0
