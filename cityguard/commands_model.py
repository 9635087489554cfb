"""`cityguard model ...`: export models for the inference backends, offline."""
from __future__ import annotations

from pathlib import Path


def register(commands, add_command) -> None:
    model = commands.add_parser("model", help="export models and build calibration sets")
    actions = model.add_subparsers(dest="model_command", required=True)

    export = add_command(actions, "export", "export a model with ultralytics (openvino, onnx, TensorRT engine)",
                         run_export, needs_config=False)
    export.add_argument("--weights", required=True, help="a .pt file (or an ultralytics yaml for a random-init test)")
    export.add_argument("--format", dest="export_format", required=True, choices=["openvino", "onnx", "engine"])
    precision = export.add_mutually_exclusive_group()
    precision.add_argument("--half", action="store_true", help="FP16 weights")
    precision.add_argument("--int8", action="store_true", help="int8 quantisation; needs --data")
    export.add_argument("--data", help="calibration dataset yaml for --int8")
    export.add_argument("--imgsz", type=int, default=640)
    export.add_argument("--batch", type=int, default=1, help="static batch size baked into the export")

    calibration = add_command(actions, "calibration-set", "build an int8 calibration set from local videos",
                              run_calibration_set, needs_config=False)
    calibration.add_argument("videos", nargs="+")
    calibration.add_argument("--out", type=Path, default=Path("var/calibration"))
    calibration.add_argument("--frames", type=int, default=100)


def run_export(args, config) -> int:
    from processors.inference.export import export_model

    path = export_model(args.weights, args.export_format, args.imgsz, args.half, args.int8, args.data, args.batch)
    print(f"exported: {path}")
    return 0


def run_calibration_set(args, config) -> int:
    from processors.inference.export import build_calibration_set

    dataset = build_calibration_set(args.videos, args.out, args.frames)
    print(f"calibration set: {dataset} (use with: cityguard model export --int8 --data {dataset})")
    return 0
