"""Fine-tuning with ultralytics, the run's curves, and its record in the model registry.

Ultralytics does the training and writes results.csv (one row of losses and validation figures per epoch); its own
plots are off (they fetch a font on first use, which an offline site cannot), and the curves are drawn here from
that CSV. The registered record says what the model was made from: the dataset's content hash, the base weights,
every setting, the final metrics and the version that was serving (the parent).
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from infra.files import replace_file
from processors.inference.model_registry import ModelRegistry, ModelVersion

# Ultralytics' augmentation hyperparameters that may be passed through (name=value).
AUGMENTATION_ARGS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
                     "fliplr", "bgr", "mosaic", "mixup", "cutmix", "copy_paste", "erasing", "close_mosaic")
# In a run folder: the data and settings it started with, what `--resume` needs to register the run the same way
# (ultralytics keeps its own arguments in the checkpoint).
RUN_RECORD = "cityguard-train.json"


@dataclass(frozen=True)
class TrainSettings:
    base: str  # weights to fine-tune (.pt), or a model definition (.yaml) to train from random initialisation
    epochs: int = 50
    image_size: int = 640
    batch: int = 16
    freeze: int | None = None  # the first N layers keep their weights (the backbone, for small site datasets)
    patience: int = 50
    device: str | None = None  # None: ultralytics picks (first CUDA GPU, else CPU)
    workers: int = 2
    seed: int = 0
    augmentation: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.augmentation) - set(AUGMENTATION_ARGS))
        if unknown:
            raise ValueError(f"unknown augmentation setting {', '.join(unknown)}; "
                             f"allowed: {', '.join(AUGMENTATION_ARGS)}")


@dataclass(frozen=True)
class TrainingRun:
    run_dir: Path
    weights: Path  # best.pt
    metrics: dict[str, float]  # the last epoch's row of results.csv
    curves: Path  # PNG


def dataset_hash(data_yaml: Path) -> str:
    """SHA-256 over data.yaml and every file under the dataset's images/ and labels/ (names and contents)."""
    root = Path(data_yaml).parent
    digest = hashlib.sha256(Path(data_yaml).read_bytes())
    for path in sorted(p for folder in ("images", "labels") for p in (root / folder).rglob("*") if p.is_file()):
        if path.suffix == ".cache":  # ultralytics' label cache, rewritten by every run
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def read_results(results_csv: Path) -> list[dict[str, float]]:
    with Path(results_csv).open(newline="") as handle:
        return [{key.strip(): float(value) for key, value in row.items() if value not in (None, "")}
                for row in csv.DictReader(handle)]


def plot_curves(results_csv: Path, out: Path) -> Path:
    """Losses (train and val) and validation precision/recall/mAP per epoch, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_results(results_csv)
    epochs = [row["epoch"] for row in rows]
    columns = [key for key in rows[0] if key not in ("epoch", "time") and not key.startswith("lr/")] if rows else []
    figure, axes = plt.subplots(2, (len(columns) + 1) // 2 or 1, figsize=(3 * max(1, (len(columns) + 1) // 2), 5),
                                squeeze=False)
    for axis, column in zip(axes.flat, columns, strict=False):  # a spare panel stays empty
        axis.plot(epochs, [row.get(column, float("nan")) for row in rows], marker="o", markersize=3)
        axis.set_title(column, fontsize=8)
        axis.set_xlabel("epoch", fontsize=7)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(columns):]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return Path(out)


def train(data_yaml: Path, settings: TrainSettings, runs_root: Path, run_name: str) -> TrainingRun:
    """One ultralytics training run into runs_root/run_name."""
    from ultralytics import YOLO

    model = YOLO(settings.base)
    model.train(data=str(Path(data_yaml).resolve()), epochs=settings.epochs, imgsz=settings.image_size,
                batch=settings.batch, freeze=settings.freeze, patience=settings.patience, device=settings.device,
                workers=settings.workers, seed=settings.seed, project=str(Path(runs_root).resolve()),
                # exist_ok: train_new_run made the folder (with its run record), refusing one that was there
                name=run_name, exist_ok=True, plots=False, verbose=False, **settings.augmentation)
    return finished_run(Path(model.trainer.save_dir))


def train_new_run(data_yaml: Path, settings: TrainSettings, runs_root: Path, run_name: str,
                  registry: ModelRegistry) -> TrainingRun:
    """`train` into a new run folder holding RUN_RECORD. A run that fails before its first checkpoint leaves no
    folder behind (there is nothing to resume). An existing folder is refused: ultralytics would train into it,
    over the weights and curves a registered version's record points to, or mixed with an earlier run's files."""
    run_dir = Path(runs_root) / run_name
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:
        registered = ", ".join(registered_from(registry, run_dir))
        if registered:
            raise FileExistsError(f"{run_dir} is the training run {registered} registered from: training into it "
                                  f"again would overwrite the weights and curves the registry's record of "
                                  f"{registered} points to; give a new --name") from None
        raise FileExistsError(f"{run_dir} exists: training into it would overwrite an earlier run's files and mix "
                              f"them with the new run's; give a new --name, or --resume {run_dir} to continue an "
                              "interrupted run") from None
    replace_file(run_dir / RUN_RECORD, json.dumps({"data": str(Path(data_yaml).resolve()),
                                                   "settings": asdict(settings)}, indent=2))
    try:
        return train(data_yaml, settings, runs_root, run_name)
    except BaseException:
        if not (run_dir / "weights" / "last.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def resume(run_dir: Path) -> TrainingRun:
    """Continues an interrupted run from its last checkpoint, with the settings it started with."""
    from ultralytics import YOLO

    last = Path(run_dir) / "weights" / "last.pt"
    if not last.exists():
        raise FileNotFoundError(f"{last} does not exist: nothing to resume in {run_dir}")
    try:
        # The checkpoint's path, not True: ultralytics then keeps the run's own data instead of its default dataset.
        YOLO(str(last)).train(resume=str(last), plots=False)
    except AssertionError as exc:  # how ultralytics says the run already reached its epochs
        raise ValueError(str(exc).splitlines()[0]) from None
    return finished_run(Path(run_dir))


def finished_run(run_dir: Path) -> TrainingRun:
    results = run_dir / "results.csv"
    rows = read_results(results)
    weights = run_dir / "weights" / "best.pt"
    if not weights.exists():
        weights = run_dir / "weights" / "last.pt"
    return TrainingRun(run_dir, weights, rows[-1] if rows else {}, plot_curves(results, run_dir / "curves.png"))


def registered_from(registry: ModelRegistry, run_dir: Path) -> list[str]:
    """The versions registered from the training run in run_dir (register_run's `run_dir`)."""
    found = []
    for version in registry.versions():
        try:
            recorded = registry.get(version).run.get("run_dir")
        except (KeyError, OSError, ValueError):  # pruned or damaged: no record to match
            continue
        if isinstance(recorded, str) and recorded and Path(recorded) == Path(run_dir).resolve():
            found.append(version)
    return found


def register_run(registry: ModelRegistry, run: TrainingRun, data_yaml: Path, settings: TrainSettings) -> ModelVersion:
    serving = registry.serving()
    return registry.register(run.weights, {
        "kind": "trained",
        "data": str(Path(data_yaml).resolve()),
        "data_hash": dataset_hash(data_yaml),
        "base_weights": settings.base,
        "settings": asdict(settings),
        "metrics": run.metrics,
        "run_dir": str(run.run_dir.resolve()),
        "curves": str(run.curves.resolve()),
        "parent": serving.version if serving else None,
        "created": time.time(),
    })
