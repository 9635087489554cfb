"""`cityguard eval detector|counts|events`: accuracy on the operator's own labelled footage, as a report folder
(report.md with PNG plots, report.json with every figure).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cityguard.stages import tiled_detector


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _class_ids(text: str) -> list[int]:
    return [int(value) for value in _numbers(text)]


def register(commands, add_command) -> None:
    evaluation = commands.add_parser("eval", help="accuracy reports on labelled data")
    kinds = evaluation.add_subparsers(dest="evaluation", required=True)

    detector = add_command(kinds, "detector", "precision, recall, F1, mAP@0.5, PR curve and confusion matrix of the "
                           "configured model on a folder of images with YOLO-format labels", run_detector_eval)
    detector.add_argument("--images", type=Path, required=True, help="folder of images")
    detector.add_argument("--labels", type=Path, default=None,
                          help="folder of YOLO .txt labels with the model's class ids (default: images -> labels)")
    detector.add_argument("--classes", type=_class_ids, default=None,
                          help="class ids to evaluate, e.g. 0,2 (default: those in the labels)")
    detector.add_argument("--confidence", type=float, default=None,
                          help="confidence for precision/recall/F1/confusion (default: the configured one)")
    detector.add_argument("--iou", type=float, default=0.5, help="IoU for a match (default: %(default)s)")
    detector.add_argument("--tiling", action="store_true", help="also evaluate tiled inference (model.tiling)")
    detector.add_argument("--out", type=Path, default=Path("var/eval/detector"))

    counts = add_command(kinds, "counts", "MAE, RMSE and relative error of people counts, by crowd size",
                         run_count_eval)
    counts.add_argument("--images", type=Path, required=True, help="folder of images")
    counts.add_argument("--truth", type=Path, required=True,
                        help="file,count CSV; ShanghaiTech ground-truth folder (GT_<image>.mat); MOTChallenge gt.txt")
    counts.add_argument("--truth-format", choices=("csv", "shanghaitech", "mot"), default=None,
                        help="default: from --truth (folder: shanghaitech, .csv, .txt: mot)")
    counts.add_argument("--predictions", type=Path, default=None,
                        help="file,count CSV of another counter's output instead of running the detector")
    counts.add_argument("--confidence", type=float, default=None, help="default: the configured one")
    counts.add_argument("--size-edges", type=_numbers, default=None, help="crowd-size bin edges (default: 10,50,200)")
    counts.add_argument("--mot-min-visibility", type=float, default=0.0)
    counts.add_argument("--tiling", action="store_true", help="count with tiled inference (model.tiling)")
    counts.add_argument("--out", type=Path, default=Path("var/eval/counts"))

    events = add_command(kinds, "events", "event-level precision, recall, F1, detection delay, type confusion and "
                         "ROC/AUC against labelled intervals", run_event_eval, needs_config=False)
    events.add_argument("--truth", type=Path, required=True, help="CSV camera,type,start,end")
    events.add_argument("--predicted", type=Path, required=True,
                        help="CSV camera,type,start,end[,score], or .jsonl of Event messages from the events topic")
    events.add_argument("--tolerance", type=float, default=0.0, help="seconds two intervals may be apart and match")
    events.add_argument("--segment", type=float, default=1.0, help="segment length in seconds for ROC")
    events.add_argument("--out", type=Path, default=Path("var/eval/events"))


def run_detector_eval(args, config) -> int:
    from cityguard.evaluation.loaders import default_labels_folder
    from cityguard.evaluation.report import detector_report
    from cityguard.evaluation.runners import evaluate_detector, evaluation_detector

    detector = evaluation_detector(config, 0.001)  # the usual mAP floor
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
    from cityguard.evaluation.report import count_report
    from cityguard.evaluation.runners import (
        detector_counts,
        evaluate_counts,
        evaluation_detector,
        infer_truth_format,
        true_counts,
    )

    images = image_files(args.images)
    truth = true_counts(images, args.truth, args.truth_format or infer_truth_format(args.truth),
                        args.mot_min_visibility)
    if args.predictions:
        predicted_by_name = load_count_csv(args.predictions)
        missing = [image.name for image in images if image.name not in predicted_by_name]
        if missing:
            raise SystemExit(f"{args.predictions} has no count for {len(missing)} images, e.g. {missing[0]}")
        predicted = [predicted_by_name[image.name] for image in images]
        source = str(args.predictions)
    else:
        confidence = config.model.confidence if args.confidence is None else args.confidence
        detector = evaluation_detector(config, confidence)
        counter = tiled_detector(config, detector) if args.tiling else detector
        predicted = detector_counts(counter, images, confidence)
        source = counter.name
    result = evaluate_counts(images, truth, predicted, args.size_edges or DEFAULT_SIZE_EDGES, {"counter": source})
    o = result.overall
    print(f"{o.images} images: MAE {o.mean_absolute_error:.2f}, RMSE {o.root_mean_squared_error:.2f}, "
          f"mean relative error {o.mean_relative_error if o.mean_relative_error is not None else float('nan'):.3f}")
    print(f"report: {count_report(result, args.out)}")
    return 0


def run_event_eval(args, config) -> int:
    from cityguard.evaluation.events import evaluate_events
    from cityguard.evaluation.loaders import load_event_csv, load_event_messages
    from cityguard.evaluation.report import event_report

    truth = load_event_csv(args.truth)
    predicted = (load_event_messages(args.predicted) if args.predicted.suffix == ".jsonl"
                 else load_event_csv(args.predicted))
    result = evaluate_events(truth, predicted, args.tolerance, args.segment)
    o = result.overall
    print(f"{len(truth)} labelled, {len(predicted)} predicted: P {o.precision:.3f} R {o.recall:.3f} F1 {o.f1:.3f}")
    print(f"report: {event_report(result, args.out)}")
    return 0
