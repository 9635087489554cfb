"""Evaluation reports: Markdown with PNG plots (matplotlib, Agg backend) and a JSON file with every figure, so two
model versions can be compared by diffing or loading the JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np

from cityguard.evaluation.detection import DetectionResult, PrCurve
from cityguard.evaluation.events import MIN_ROC_SEGMENTS, EventResult
from cityguard.evaluation.lines import LineCountResult
from cityguard.evaluation.runners import CountResult
from cityguard.evaluation.scoring import RocCurve


def plot_pr_curves(curves: dict[str, PrCurve], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6, 5))
    for label, curve in curves.items():
        axes.plot(np.r_[0.0, curve.recall], np.r_[1.0, curve.precision], label=label)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (IoU 0.5)")
    axes.legend(loc="lower left", fontsize="small")
    return _save(figure, path)


def plot_roc_curves(curves: dict[str, RocCurve], path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(6, 5))
    for label, curve in curves.items():
        axes.plot(curve.false_positive_rate, curve.true_positive_rate, label=f"{label} (AUC {curve.auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02), title="ROC")
    axes.legend(loc="lower right", fontsize="small")
    return _save(figure, path)


def plot_confusion(labels: list[str], matrix: np.ndarray, path: Path, title: str) -> Path:
    size = max(4.0, 0.6 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set(xlabel="predicted", ylabel="truth", title=title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), value in np.ndenumerate(matrix):
        axes.text(column, row, str(value), ha="center", va="center",
                  color="white" if value > threshold else "black", fontsize="small")
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _write(out_dir: Path, title: str, lines: list[str], figures: dict) -> Path:
    (out_dir / "report.json").write_text(json.dumps(figures, indent=2))
    report = out_dir / "report.md"
    report.write_text("\n".join([f"# {title}", "", *lines, "", "Every figure: [report.json](report.json)", ""]))
    return report


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def detector_report(results: dict[str, DetectionResult], out_dir: Path) -> Path:
    """One section per variant (e.g. plain and tiled): per-class table, PR curves and confusion matrix."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for variant, result in results.items():
        pr_png = plot_pr_curves({c.name: c.curve for c in result.classes}, out_dir / f"pr_{variant}.png")
        confusion_png = plot_confusion(result.confusion.labels, result.confusion.matrix,
                                       out_dir / f"confusion_{variant}.png", f"Confusion matrix ({variant})")
        lines += [f"## {variant}: {result.extra.get('detector', '')}", "",
                  f"{result.images} images, confidence {result.confidence:g}, IoU {result.iou_threshold:g}: "
                  f"**mAP@0.5 {result.mean_average_precision:.3f}**"
                  + (f", {result.extra['seconds_per_image'] * 1000:.0f} ms per image"
                     if "seconds_per_image" in result.extra else ""), "",
                  "| class | truth | TP | FP | FN | precision | recall | F1 | AP@0.5 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.truth_count} | {c.counts.true_positives} | {c.counts.false_positives} | "
                  f"{c.counts.false_negatives} | {_f(c.counts.precision)} | {_f(c.counts.recall)} | "
                  f"{_f(c.counts.f1)} | {_f(c.average_precision)} |" for c in result.classes]
        lines += ["", f"![PR curves]({pr_png.name})", f"![confusion matrix]({confusion_png.name})", ""]
    return _write(out_dir, "Detector evaluation", lines, {v: r.to_json() for v, r in results.items()})


def plot_counter_scatter(true: list[float], predicted: dict[str, list[float]], path: Path) -> Path:
    """Predicted against true count per image, one colour per counter, log axes (counts span 1 to thousands)."""
    figure, axes = plt.subplots(figsize=(6, 5.5))
    values = [value for counts in predicted.values() for value in counts]
    top = max([*true, *values, 2.0]) * 1.3
    for name, counts in predicted.items():
        axes.scatter(np.maximum(true, 1), np.maximum(counts, 1), s=12, alpha=0.7, label=name)
    axes.plot([1, top], [1, top], linestyle=":", color="grey")
    axes.set(xscale="log", yscale="log", xlim=(1, top), ylim=(1, top), xlabel="true count",
             ylabel="predicted count (values below 1 drawn at 1)", title="Counts per image")
    axes.legend(loc="upper left", fontsize="small")
    return _save(figure, path)


def count_comparison_report(results: dict[str, CountResult], out_dir: Path) -> Path:
    """Several counters on the same images: errors by crowd size per counter, one scatter plot, a per-image table
    (also as per_image.csv)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(results.values()))
    scatter = plot_counter_scatter(first.true, {name: r.predicted for name, r in results.items()},
                                   out_dir / "count_scatter.png")
    lines = ["| counter | crowd size (true count) | images | MAE | RMSE | mean relative error | mean error |",
             "|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        for label, errors in {"all": result.overall, **result.by_size}.items():
            lines.append(f"| {name} | {label} | {errors.images} | {_f(errors.mean_absolute_error, 2)} | "
                         f"{_f(errors.root_mean_squared_error, 2)} | {_f(errors.mean_relative_error)} | "
                         f"{_f(errors.mean_error, 2)} |")
    lines += ["", "Relative error is over images with at least one person; mean error > 0 means over-counting.",
              "", f"![count scatter]({scatter.name})", "", "## Per image", "",
              "| image | true | " + " | ".join(results) + " |", "|---|---|" + "---|" * len(results)]
    rows = []
    for index, (image, true) in enumerate(zip(first.images, first.true, strict=True)):
        predicted = [result.predicted[index] for result in results.values()]
        rows.append([image, true, *predicted])
        lines.append(f"| {image} | {true:g} | " + " | ".join(f"{value:.1f}" for value in predicted) + " |")
    with (out_dir / "per_image.csv").open("w") as handle:
        handle.write(",".join(["image", "true", *results]) + "\n")
        handle.writelines(",".join(str(value) for value in row) + "\n" for row in rows)
    figures = {name: result.to_json() for name, result in results.items()}
    return _write(out_dir, "Counting evaluation", lines, figures)


def score_report(rocs: dict[str, RocCurve | None], segment_s: float, out_dir: Path) -> Path:
    """Scores over time (per-frame scores): each type's AUC and ROC curve, nothing matched as events."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"Scores over time, ROC over {segment_s:g} s segments (AUC n/a: unscored rows, or under "
             f"{MIN_ROC_SEGMENTS} segments with the event or without it). Precision and recall need events.", "",
             "| type | AUC |", "|---|---|",
             *(f"| {kind} | {_f(roc.auc if roc else None)} |" for kind, roc in rocs.items())]
    curves = {kind: roc for kind, roc in rocs.items() if roc is not None}
    if curves:
        lines += ["", f"![ROC]({plot_roc_curves(curves, out_dir / 'roc.png').name})"]
    figures = {"segment_s": segment_s, "types": [{"type": kind, "roc": roc.to_json() if roc else None}
                                                 for kind, roc in rocs.items()]}
    return _write(out_dir, "Score evaluation", lines, figures)


def event_report(result: EventResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    confusion_png = plot_confusion(result.confusion_labels, result.confusion, out_dir / "confusion_events.png",
                                   "Event types")
    lines = [f"Temporal matching with {result.tolerance_s:g} s tolerance; ROC over {result.segment_s:g} s segments "
             f"(AUC n/a: no or unscored predictions, or under {MIN_ROC_SEGMENTS} segments with the event or without "
             "it).",
             "", "| type | TP | FP | FN | precision | recall | F1 | mean delay (s) | AUC |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in result.types:
        lines.append(f"| {t.type} | {t.counts.true_positives} | {t.counts.false_positives} | "
                     f"{t.counts.false_negatives} | {_f(t.counts.precision)} | {_f(t.counts.recall)} | "
                     f"{_f(t.counts.f1)} | {_f(t.mean_delay_s, 2)} | {_f(t.roc.auc if t.roc else None)} |")
    o = result.overall
    lines += [(f"| all | {o.true_positives} | {o.false_positives} | {o.false_negatives} | {_f(o.precision)} | "
               f"{_f(o.recall)} | {_f(o.f1)} | | |"), "", f"![event type confusion]({confusion_png.name})"]
    curves = {t.type: t.roc for t in result.types if t.roc is not None}
    if curves:
        lines.append(f"![ROC]({plot_roc_curves(curves, out_dir / 'roc.png').name})")
    return _write(out_dir, "Event evaluation", lines, result.to_json())


def line_count_report(result: LineCountResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["Crossings per counting line and direction: the hand count (true), the product's count, their difference "
             "(counted - true) and that as a share of the true count (n/a where nothing crossed).", "",
             "| camera | line | direction | true | counted | error | relative error |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {s.camera} | {s.line} | {s.direction} | {s.true} | {s.counted} | {s.error:+d} | "
              f"{_f(s.relative_error)} |" for s in result.scores]
    lines += ["", f"All lines: {result.true_total} true, {result.counted_total} counted; {result.absolute_error_total} "
              f"missed or extra (relative absolute error {_f(result.relative_absolute_error)})."]
    if result.unlabelled:
        lines += ["", "Counted but not labelled (not scored): " + ", ".join("/".join(key) for key in result.unlabelled)]
    return _write(out_dir, "Line count evaluation", lines, result.to_json())
