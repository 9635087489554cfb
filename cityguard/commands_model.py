"""`cityguard model ...`: export models for the inference backends (offline), fine-tune on the site's dataset, the
model registry, the promotion gate and roll-back. Inference workers follow the registry's serving pointer."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from cityguard.arguments import (
    COUNT,
    FILE,
    FOLDER,
    HELD_OUT_HELP,
    MODEL,
    NON_NEGATIVE,
    NON_NEGATIVE_COUNT,
    shown_names,
    weights_or_name,
)
from cityguard.training.train import AUGMENTATION_ARGS


def register(commands, add_command) -> None:
    model = commands.add_parser("model", help="export, train, register, gate and roll back models")
    actions = model.add_subparsers(dest="model_command", required=True)

    export = add_command(actions, "export", "export a model with ultralytics (openvino, onnx, TensorRT engine)",
                         run_export, needs_config=False)
    export.add_argument("--weights", required=True, type=weights_or_name,
                        help="a .pt file (or an ultralytics yaml for a random-init test)")
    export.add_argument("--format", dest="export_format", required=True, choices=["openvino", "onnx", "engine"])
    precision = export.add_mutually_exclusive_group()
    precision.add_argument("--half", action="store_true", help="FP16 weights")
    precision.add_argument("--int8", action="store_true", help="int8 quantisation; needs --data")
    export.add_argument("--data", help="calibration dataset yaml for --int8")
    export.add_argument("--imgsz", type=COUNT, default=640)
    export.add_argument("--batch", type=COUNT, default=1, help="static batch size baked into the export")
    export.add_argument("--out", type=Path, default=None,
                        help="folder to put the export in (default: beside the weights)")

    calibration = add_command(actions, "calibration-set", "build an int8 calibration set from local videos",
                              run_calibration_set, needs_config=False)
    calibration.add_argument("videos", nargs="+", type=FILE)
    calibration.add_argument("--out", type=Path, default=Path("var/calibration"))
    calibration.add_argument("--frames", type=COUNT, default=100)
    register_training(actions, add_command)


def run_export(args, config) -> int:
    from processors.inference.export import export_model

    path = export_model(args.weights, args.export_format, args.imgsz, args.half, args.int8, args.data, args.batch,
                        args.out)
    print(f"exported: {path}")
    return 0


def run_calibration_set(args, config) -> int:
    from processors.inference.export import build_calibration_set

    dataset = build_calibration_set([str(video) for video in args.videos], args.out, args.frames)
    print(f"calibration set: {dataset} (use with: cityguard model export --int8 --data {dataset})")
    return 0


def _setting(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def add_registry_option(parser) -> None:
    parser.add_argument("--registry", type=Path, default=None,
                        help="model registry folder (default: the configured model.registry)")


def register_training(actions, add_command) -> None:
    train = add_command(actions, "train", "fine-tune with ultralytics on a dataset and register the result as a "
                        "candidate version", run_train)
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=FILE, help="the dataset's data.yaml (cityguard dataset build)")
    source.add_argument("--resume", type=FOLDER, help="a run folder to continue from its last checkpoint")
    train.add_argument("--base", default="yolo11n.pt", type=weights_or_name,
                       help="weights to fine-tune, or a model .yaml to train from scratch (default: %(default)s)")
    train.add_argument("--epochs", type=COUNT, default=50)
    train.add_argument("--imgsz", type=COUNT, default=640)
    train.add_argument("--batch", type=int, default=16, help="images per batch (-1: ultralytics AutoBatch)")
    train.add_argument("--freeze", type=NON_NEGATIVE_COUNT, default=None,
                       help="keep the first N layers' weights (10: the backbone)")
    train.add_argument("--patience", type=NON_NEGATIVE_COUNT, default=50,
                       help="stop after this many epochs without improvement (0: never stop early)")
    train.add_argument("--device", default=None, help="cpu, 0, 0,1 ... (default: ultralytics picks)")
    train.add_argument("--workers", type=NON_NEGATIVE_COUNT, default=2, help="data loader processes")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--augment", type=_setting, action="append", default=[],
                       help=f"NAME=VALUE augmentation setting; names: {', '.join(AUGMENTATION_ARGS)}")
    train.add_argument("--runs", type=Path, default=None,
                       help="folder of training runs (default: var/models/runs beside the configuration file)")
    train.add_argument("--name", default=None,
                       help="run folder name, one not in --runs yet (default: the start time)")
    add_registry_option(train)

    registered = add_command(actions, "register", "add an existing model (e.g. an OpenVINO export) to the registry",
                             run_register)
    registered.add_argument("weights", type=MODEL)
    registered.add_argument("--note", default="", help="where it comes from")
    registered.add_argument("--no-load-check", action="store_true",
                            help="register without loading it with the site's backend (a model built for other "
                            "hardware); a TensorRT engine is never loaded here")
    registered.add_argument("--serve", action="store_true",
                            help="make it the serving model at once, without the gate (the site's first model: refused "
                            "while another serves)")
    add_registry_option(registered)

    listing = add_command(actions, "list", "registered versions, the serving one marked", run_list)
    add_registry_option(listing)

    gate = add_command(actions, "gate", "compare a candidate with the serving model on the site's labelled set and "
                       "false alarms; with --promote, serve it if it passes", run_gate)
    gate.add_argument("version", help="the candidate version, e.g. v3")
    gate.add_argument("--images", type=FOLDER, required=True,
                      help="the site's labelled images (e.g. dataset images/val)")
    gate.add_argument("--labels", type=Path, default=None, help="their YOLO labels (default: images -> labels)")
    gate.add_argument("--false-alarms", type=Path, default=None,
                      help="folder of marked false alarms (default: the configured console.hard_negatives_dir; the "
                      "check is reported as not checked if absent); those the candidate trained on are not scored")
    gate.add_argument("--dataset", type=Path, default=None,
                      help="folder of the dataset the candidate was trained on, when it has moved since (default: "
                      "the one its training run names, else the one --images are in when its content is the same)")
    gate.add_argument("--allow-unreviewed", action="store_true",
                      help="score on a dataset split whose labels operators have not reviewed (detector pre-labels)")
    gate.add_argument("--rule-classes", type=_names, default=None,
                      help="class names whose AP must not drop (default: those the site's rules use)")
    gate.add_argument("--tolerance", type=NON_NEGATIVE, default=0.0, help="how far a figure may fall and still pass")
    gate.add_argument("--promote", action="store_true", help="make the candidate the serving model if it passes")
    gate.add_argument("--out", type=Path, default=None,
                      help="report folder (default: var/models/gate/<version> beside the configuration file)")
    gate.add_argument("--held-out", type=Path, default=None,
                      help=HELD_OUT_HELP)
    add_registry_option(gate)

    rollback = add_command(actions, "rollback", "serve the previously promoted version again", run_rollback)
    add_registry_option(rollback)


def model_registry(args, config):
    from processors.inference.model_registry import ModelRegistry

    if args.registry is not None:
        return ModelRegistry(args.registry)
    if config.model.registry is None:
        raise ValueError("set model.registry in the configuration, or pass --registry")
    return ModelRegistry(Path(config.resolve_path(config.model.registry)))


def ultralytics_weights_dir() -> Path:
    """Where ultralytics looks for a bare weights name before it downloads one."""
    from ultralytics.utils import SETTINGS

    return Path(SETTINGS["weights_dir"])


def check_base(base: str) -> None:
    """ValueError for a --base ultralytics cannot train from here: an export, or a name it would download offline."""
    suffix = Path(base).suffix.lower()
    if suffix not in (".pt", ".yaml", ".yml"):
        raise ValueError(f"--base {base}: training starts from PyTorch weights (.pt) or a model .yaml, not an "
                         "export (an OpenVINO folder, .onnx, .engine)")
    if os.environ.get("YOLO_OFFLINE") == "1" and suffix == ".pt" and Path(base).name == base and not any(
            place.is_file() for place in (Path(base), ultralytics_weights_dir() / base)):
        raise ValueError(f"--base {base} would be downloaded, and YOLO_OFFLINE=1 says this machine has no internet: "
                         "give weights that are here (--base PATH.pt), or train from scratch (--base yolo11n.yaml)")


def run_train(args, config) -> int:
    from cityguard.training.train import RUN_RECORD, TrainSettings, register_run, resume, train_new_run

    registry = model_registry(args, config)  # before training: an unset registry is said before hours of work
    if args.resume:
        try:
            recorded = json.loads((args.resume / RUN_RECORD).read_text())
            settings, data = TrainSettings(**recorded["settings"]), Path(recorded["data"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{args.resume} is not a run that can be resumed ({RUN_RECORD}: "
                             f"{exc.strerror if isinstance(exc, OSError) else exc})") from None
        run = resume(args.resume)
    else:
        check_base(args.base)
        settings = TrainSettings(args.base, args.epochs, args.imgsz, args.batch, args.freeze, args.patience,
                                 args.device, args.workers, args.seed, dict(args.augment))
        data = args.data
        runs = args.runs or Path(config.resolve_path("var/models/runs"))
        run = train_new_run(data, settings, runs, args.name or time.strftime("%Y%m%d-%H%M%S"), registry)
    model = register_run(registry, run, data, settings)
    print(f"registered candidate {model.version}: {model.weights} (curves: {run.curves})")
    for key in ("metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)"):
        if key in run.metrics:
            print(f"  {key}: {run.metrics[key]:.3f}")
    print(f"next: cityguard model gate {model.version} --images {Path(data).parent / 'images' / 'val'} "
          "(add --promote to serve it if it passes)")
    return 0


def run_register(args, config) -> int:
    from cityguard.evaluation.runners import evaluation_detector
    from processors.inference.model_registry import WeightsChanged

    registry = model_registry(args, config)
    serving = registry.pointer()["version"] if args.serve else None
    if serving is not None:
        raise ValueError(f"--serve is for the site's first model and {serving} is serving; "
                         "register without it, then `cityguard model gate <version> --images ... --promote`")
    same = registry.holding(args.weights)
    if same is not None:
        raise ValueError(f"{args.weights} is registered already, as {same}")
    # What the inference stage would load, refused here rather than when it is promoted. An engine loads only on
    # the GPU it was built for; nothing is installed for the check.
    if not args.no_load_check and args.weights.suffix.lower() != ".engine":
        os.environ["YOLO_AUTOINSTALL"] = "false"
        try:
            evaluation_detector(config, config.model.confidence, args.weights)
        except Exception as exc:
            raise ValueError(f"{args.weights} cannot be loaded as a model by the {config.model.backend} backend "
                             f"{args.config} configures ({str(exc).strip() or type(exc).__name__}): give the site's "
                             "--config, or --no-load-check for a model built for other hardware") from None
    model = registry.register(args.weights, {"kind": "imported", "source": str(args.weights.resolve()),
                                             "note": args.note, "created": time.time()})
    print(f"registered {model.version}: {model.weights}")
    if args.serve:
        try:
            registry.promote(model.version, "registered as serving without the gate", replacing=None)
        except WeightsChanged:
            raise  # says what is wrong: its files, not the order of promotions
        except ValueError as exc:  # another model was served while this one was checked and copied
            raise ValueError(f"{exc}; it stays registered: `cityguard model gate {model.version} --images ... "
                             "--promote` to serve it") from None
        print(f"serving {model.version}")
    return 0


def run_list(args, config) -> int:

    registry = model_registry(args, config)
    serving = registry.pointer()["version"]
    if not registry.versions():
        print(f"no models registered in {registry.root}")
    for version in registry.versions():
        run = registry.get(version).run
        mark = "*" if version == serving else " "
        map50 = run.get("metrics", {}).get("metrics/mAP50(B)")
        print(f"{mark} {version} {run.get('kind', '')} {run['weights']}"
              + (f" mAP50(train val) {map50:.3f}" if map50 is not None else "")
              + (f" parent {run['parent']}" if run.get("parent") else "")
              + (f" - {run['note']}" if run.get("note") else ""))
    return 0


def rule_class_names(config) -> list[str]:
    """Classes the site's rules act on: people where crowd zones are drawn, vehicles where a traffic scene is."""
    names = ["person"] if any(camera.zones for camera in config.cameras) else []
    for camera in config.cameras:
        if camera.scene is not None:
            names += [name for name in camera.scene.vehicle_classes if name not in names]
    return names


def candidate_dataset(args, run: dict, scored_images: list[Path]) -> Path | None:
    """The folder of the dataset the candidate was trained on (None: not trained here). Refuses images it trained on,
    and warns when the dataset has changed since: its split is then today's, not the one trained on."""
    from cityguard.training.gate import trained_images, training_dataset

    dataset = training_dataset(run, args.images, args.dataset)
    if dataset is None:
        return None
    trained_on = dataset.folder
    seen = trained_images(scored_images, trained_on)
    if seen:
        raise ValueError(f"refused: {len(seen)} of the {len(scored_images)} images in {args.images} are in the "
                         f"training split of {trained_on}, which {args.version} was trained on (e.g. {seen[0].name}): "
                         f"gate on images it has not seen, e.g. {trained_on / 'images' / 'val'}")
    if dataset.changed:
        print(f"cityguard: warning: {trained_on} has changed since {args.version} was trained on it (its content no "
              "longer matches the run's data_hash): the frames and false alarms it trained on are taken from the "
              "dataset as it is now", file=sys.stderr)
    return trained_on


def run_gate(args, config) -> int:
    from cityguard.evaluation.loaders import default_labels_folder, image_files
    from cityguard.evaluation.runners import evaluate_detector, evaluation_detector
    from cityguard.training.dataset import read_false_alarms
    from cityguard.training.gate import (
        class_differences,
        dataset_label_files,
        decide,
        labelled_class_ids,
        repeated_false_alarms,
        report_folder,
        reported_classes,
        unreviewed_images,
        unseen_false_alarms,
        write_report,
    )
    from cityguard.training.held_out import check_held_out
    from processors.inference.model_registry import WeightsChanged

    registry = model_registry(args, config)
    try:
        candidate_model = registry.get(args.version)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    candidate_model.check_unchanged()  # the stage would not serve it: nothing to gate
    out = args.out or Path(config.resolve_path(f"var/models/gate/{args.version}"))  # beside the site, as its var/
    report_folder(out)
    scored_images = image_files(args.images)
    trained_on = candidate_dataset(args, candidate_model.run, scored_images)
    labels = args.labels or default_labels_folder(args.images)
    unreviewed, images = unreviewed_images(args.images, labels)
    if unreviewed:
        problem = (f"{args.images}: {unreviewed} of {images} images carry only the detector's pre-labels (manifest.csv "
                   "reviewed 0)")
        if not args.allow_unreviewed:
            raise ValueError(f"{problem}: review them (cityguard dataset export/import) or pass --allow-unreviewed")
        print(f"cityguard: warning: {problem}; both models are scored against the pre-labelling model's boxes",
              file=sys.stderr)
    serving_model = registry.serving()
    # Both keep boxes down to 0.001, the usual mAP floor, so the PR curves are complete. Without a serving version
    # the candidate is compared with the configured model.
    serving = evaluation_detector(config, 0.001, serving_model.weights if serving_model else None)
    candidate = evaluation_detector(config, 0.001, candidate_model.weights)
    serving_name = serving_model.version if serving_model else f"configured model {serving.name}"
    differences = class_differences(serving.names, candidate.names)
    if differences:
        raise ValueError(f"refused: {args.version} detects other classes than {serving_name} "
                         f"({shown_names(differences, 5)}): the site's "
                         "labels and class thresholds go by class id and its rules by name, so it can neither be "
                         "compared nor serve in its place; train it on a dataset built here (cityguard dataset build)")
    # A name the model lacks would be reported as not checked, unlabelled, and pass: a misspelt class goes unguarded.
    unknown = [name for name in args.rule_classes or [] if name not in serving.names.values()]
    if unknown:
        raise ValueError(f"--rule-classes {unknown[0]}: {serving_name} detects no class of that name (its classes: "
                         f"{shown_names(sorted(serving.names.values()))})")
    confidence, class_confidence = config.model.confidence, config.model.class_confidence
    # The console writes them to console.hard_negatives_dir, relative to the configuration file.
    folder = args.false_alarms or Path(config.resolve_path(config.console.hard_negatives_dir))
    records = read_false_alarms(folder, serving.names) if folder.is_dir() else []
    scored = unseen_false_alarms(records, trained_on)
    print(f"false alarms: {len(records)} records read from {folder}" + ("" if folder.is_dir() else " (absent)")
          + (f", {len(scored)} scored (not in the training split of {trained_on} nor dropped from its validation "
             "split)" if trained_on and records else ""))
    warning = check_held_out([*scored_images, *(record.image for record in scored)], args.held_out)
    if warning:
        print(f"cityguard: warning: {warning}", file=sys.stderr)
    rule_classes = args.rule_classes if args.rule_classes is not None else rule_class_names(config)
    label_files = [labels / f"{image.stem}.txt" for image in scored_images]
    labelled = labelled_class_ids([*label_files, *(dataset_label_files(trained_on) if trained_on else [])])
    results = [evaluate_detector(detector, args.images, labels, confidence, class_ids=sorted(labelled))
               for detector in (serving, candidate)]
    false_alarms = None
    if scored:
        marked = [(record.image, record.wrong) for record in scored]
        false_alarms = tuple(repeated_false_alarms(detector, marked, confidence, class_confidence)
                             for detector in (serving, candidate))
    classes = reported_classes(rule_classes, class_confidence, serving.names, labelled)
    report = decide(*results, classes, false_alarms, args.tolerance, serving_name, args.version, class_confidence)
    path = write_report(report, out, promoted=False)  # first: a report that cannot be written promotes nothing
    promoted = report.passed and args.promote
    if promoted:
        try:
            registry.promote(args.version, report.reason, replacing=serving_model.version if serving_model else None)
        except WeightsChanged:
            raise  # its files changed while it was gated: the report judged other files
        except ValueError as exc:
            raise ValueError(f"{exc}: gate it again against the model serving now (report: {path})") from None
        write_report(report, out, promoted=True)
    print(f"{args.version}: {report.reason}")
    print(f"{args.version}: {report.outcome(promoted)}")
    print(f"report: {path}")
    return 0 if report.passed else 1


def run_rollback(args, config) -> int:

    try:
        model = model_registry(args, config).rollback()
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    print(f"serving {model.version} again: {model.weights}")
    return 0
