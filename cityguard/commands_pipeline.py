"""Subcommands that run the pipeline: up, broker and one per stage."""
from __future__ import annotations

from pathlib import Path

from cityguard import stages


def register(commands, add_command) -> None:
    up = add_command(commands, "up", "run broker, producer, inference, analytics and metrics sink together", run_up)
    up.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    up.add_argument("--log-dir", type=Path, default=Path("var/log"))

    broker = add_command(commands, "broker", "run the embedded Kafka broker (Tansu) on 127.0.0.1, create the topics",
                         lambda args, config: stages.run_broker(config, args.port))
    broker.add_argument("--port", type=int, default=0)

    produce = add_command(
        commands, "produce", "frame producer: cameras -> frames topic",
        lambda args, config: stages.run_produce(config, args.cameras, args.max_frames, not args.no_realtime,
                                                args.metrics_port))
    produce.add_argument("--camera", action="append", dest="cameras", help="only this camera id (repeatable)")
    produce.add_argument("--max-frames", type=int, default=None, help="per camera")
    produce.add_argument("--no-realtime", action="store_true", help="replay files as fast as possible")
    produce.add_argument("--metrics-port", type=int, default=None)

    infer = add_command(commands, "infer", "inference worker: frames -> detections (run several to scale out)",
                        lambda args, config: stages.run_infer(config, args.metrics_port))
    infer.add_argument("--metrics-port", type=int, default=None)

    add_command(commands, "analyze", "analytics worker (faust): detections -> zone metrics and events",
                lambda args, config: stages.run_analyze(config, args.log_level.lower()))

    export = add_command(commands, "export-metrics", "metrics sink: topics -> Prometheus exporter",
                         lambda args, config: stages.run_export_metrics(config, args.metrics_port))
    export.add_argument("--metrics-port", type=int, default=None)

    add_command(commands, "check-config", "validate a site configuration and print a summary", check_config)


def run_up(args, config) -> int:
    from cityguard.up import run_up as up

    return up(config, args.config, args.duration, args.log_dir)


def check_config(args, config) -> int:
    zones = sum(len(camera.zones) for camera in config.cameras)
    print(f"{args.config}: site {config.site!r}, {len(config.cameras)} cameras, {zones} zones: OK")
    return 0
