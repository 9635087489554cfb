"""Subcommands that run the pipeline: up, broker and one per stage."""
from __future__ import annotations

import os
from pathlib import Path

from cityguard import stages
from cityguard.arguments import COUNT, NON_NEGATIVE_COUNT, PORT, POSITIVE, counted, number_in
from schemas.settings.capture import MAX_SHARDS
from schemas.settings.config import ConfigError

# A producer's shard from its environment, where each replica of one workload gets its own value (a StatefulSet's
# pod index) but all share one command line.
SHARD_INDEX_ENV = "CITYGUARD_PRODUCER_SHARD_INDEX"
SHARD_COUNT_ENV = "CITYGUARD_PRODUCER_SHARD_COUNT"


def register(commands, add_command) -> None:
    up = add_command(commands, "up", "run broker, producer, inference, analytics, metrics sink, alert dispatcher and "
                     "console together", run_up)
    up.add_argument("--duration", type=POSITIVE, default=None, help="stop after this many seconds")
    up.add_argument("--log-dir", type=Path, default=Path("var/log"))

    broker = add_command(commands, "broker", "run the embedded Kafka broker (Tansu) on 127.0.0.1, create the topics",
                         lambda args, config: stages.run_broker(config, args.port))
    broker.add_argument("--port", type=PORT, default=0, help="listen port (default broker.embedded_port)")

    produce = add_command(commands, "produce", "frame producer: cameras -> frames topic", run_produce)
    produce.add_argument("--camera", action="append", dest="cameras", help="only this camera id (repeatable)")
    produce.add_argument("--max-frames", type=COUNT, default=None, help="per camera")
    produce.add_argument("--no-realtime", action="store_true", help="replay files as fast as possible")
    produce.add_argument("--metrics-port", type=PORT, default=None)
    produce.add_argument("--shard-index", type=NON_NEGATIVE_COUNT, default=os.environ.get(SHARD_INDEX_ENV),
                         help="read this share of the cameras, 0 to --shard-count - 1, with --shard-count "
                         f"(default: ${SHARD_INDEX_ENV}, else producer.shard_index)")
    produce.add_argument("--shard-count", type=number_in(int, 1, MAX_SHARDS), default=os.environ.get(SHARD_COUNT_ENV),
                         help="producer processes the cameras are split across, each with its own --shard-index "
                         f"(default: ${SHARD_COUNT_ENV}, else producer.shard_count)")
    produce.add_argument("--frames-by-reference", action="store_true",
                         help="every frame to the frame store (producer.frame_store_dir), its message carrying the "
                         "reference, whatever producer.max_message_bytes says: only where every stage reads that "
                         "store (cityguard up gives it on the embedded broker)")

    infer = add_command(commands, "infer", "inference worker: frames -> detections (run several to scale out)",
                        lambda args, config: stages.run_infer(config, args.metrics_port))
    infer.add_argument("--metrics-port", type=PORT, default=None)

    analyze = add_command(commands, "analyze", "analytics worker (faust): detections -> zone metrics and events",
                          lambda args, config: stages.run_analyze(config, args.log_level.lower(), args.metrics_port))
    analyze.add_argument("--metrics-port", type=PORT, default=None)

    export = add_command(commands, "export-metrics", "metrics sink: topics -> Prometheus exporter",
                         lambda args, config: stages.run_export_metrics(config, args.metrics_port))
    export.add_argument("--metrics-port", type=PORT, default=None)

    add_command(commands, "check-config", "validate a site configuration and print a summary", check_config)

    replay = add_command(commands, "replay", "play a recorded clip through detector, tracker, background model and "
                         "the camera's analyzers in video time, without a broker; prints and writes the events",
                         run_replay)
    replay.add_argument("clip", nargs="?", help="video file of the camera, a folder of its numbered pictures (at the "
                        "camera's fps), or asset:NAME (or use --detections)")
    replay.add_argument("--camera", required=True, help="camera id in the site configuration (its fps and scene)")
    replay.add_argument("--events", type=Path, default=None, help="write the Event messages here, one JSON per line")
    replay.add_argument("--start-time", type=number_in(float, 0.0, 4_102_444_800.0, low_open=True), default=None,
                        help="capture time of the first frame, unix seconds (default: times from the clip start)")
    replay.add_argument("--record-detections", type=Path, default=None,
                        help="also write every frame's Detections message here, one JSON per line "
                        "(gzip-compressed when the name ends in .gz)")
    replay.add_argument("--frame-scores", type=Path, default=None,
                        help="write each frame's vehicle-in-pedestrian-area score per area as CSV "
                        "camera,type,start,end,score,frame (for `cityguard eval events` ROC/AUC; the frame column, "
                        "the frame's number from 1, tells it from events)")
    replay.add_argument("--line-counts", type=Path, default=None,
                        help="write the scene's counting lines' windows as LineCounts JSON lines, in the events' "
                        "times (the first window starts with the footage, the last ends with it); their totals are "
                        "printed in any case")
    replay.add_argument("--detections", type=Path, default=None,
                        help="replay Detections recorded by --record-detections instead of a clip (analyzers only)")


def run_up(args, config) -> int:
    from cityguard.up import run_up as up

    return up(config, args.config, args.duration, args.log_dir, args.log_level, args.debug)


def run_produce(args, config) -> int:
    if (args.shard_index is None) != (args.shard_count is None):  # one alone would pair with the file's other
        args.command_parser.error(f"--shard-index and --shard-count go together (or {SHARD_INDEX_ENV} and "
                                  f"{SHARD_COUNT_ENV})")
    if args.shard_index is not None:
        if args.shard_index >= args.shard_count:
            args.command_parser.error(f"argument --shard-index: {args.shard_index} must be below --shard-count "
                                      f"{args.shard_count}")
        producer = config.producer.model_copy(update={"shard_index": args.shard_index,
                                                      "shard_count": args.shard_count})
        config = config.model_copy(update={"producer": producer})
    if args.frames_by_reference:
        config.verify_frames_outlast_their_age()
    stages.run_produce(config, args.cameras, args.max_frames, not args.no_realtime, args.metrics_port,
                       args.frames_by_reference)
    return 0


def check_config(args, config) -> int:
    """The configuration validated (load_config did that), then each camera's source where it can be checked here:
    an asset name must be one the project knows (a typo fails), a local file should exist (a warning: it may be
    mounted later); streams, remote files and webcams are checked by the producer when it connects."""
    import sys

    from cityguard.start_checks import (
        its_without_key,
        model_class_names,
        passed_over_models,
        start_problems,
        watches_nothing,
    )
    from infra import assets
    from infra.redaction import redacted
    from producers.capture import source_kind
    from schemas.settings.alerting import WebhookChannelConfig
    from schemas.settings.capture import SourceKind
    from schemas.settings.crowd import area_disagreements, stray_entrances

    for camera in config.cameras:
        if assets.is_asset(camera.source):
            try:
                assets.catalogued(camera.source.removeprefix(assets.PREFIX))
            except assets.UnknownAssetError as exc:
                raise ConfigError(f"invalid configuration in {args.config}: camera {camera.id}: source: "
                                  f"{exc}") from None
        elif written_password(camera.source):
            print(f"cityguard: warning: camera {camera.id}: source holds a password in the configuration file: "
                  "name an environment variable there instead (user:${CAMERA_PASSWORD}@host)", file=sys.stderr)
        elif source_kind(camera, camera.source) is SourceKind.FILE and "://" not in camera.source:
            path = Path(config.resolve_path(camera.source))
            if not (path.is_file() or path.is_dir()):
                # A scheme mistyped (rtsp//viewer:pw@host) makes a URL read as a path: shown redacted all the same.
                print(redacted(f"cityguard: warning: camera {camera.id}: source {path} is not a file or folder "
                               "on this machine"), file=sys.stderr)
    for warning in (watches_nothing(config), its_without_key(config)):
        if warning:
            print(f"cityguard: warning: {warning}", file=sys.stderr)
    for channel in config.alerting.channels:
        if isinstance(channel, WebhookChannelConfig) and channel.url and written_password(channel.url):
            print(f"cityguard: warning: alert channel {channel.id}: url holds a password in the configuration file: "
                  "give the URL in an environment variable instead (url_env)", file=sys.stderr)
    for problem in start_problems(config):
        print(redacted(f"cityguard: warning: {problem} (the stage that needs it refuses to start here)"),
              file=sys.stderr)
    for passed_over in passed_over_models(config):
        print(redacted(f"cityguard: warning: {passed_over}"), file=sys.stderr)
    for camera in config.cameras:
        for mistake in [*area_disagreements(camera.zones, camera.calibration), *stray_entrances(camera.zones)]:
            print(f"cityguard: warning: camera {camera.id}: {mistake}", file=sys.stderr)
    model_classes = model_class_names(config)
    if model_classes is not None:
        model, names = model_classes
        for field, ids in config.model.class_ids_outside(set(names)):
            print(f"cityguard: warning: model.{field}: the model {model} has no class id {ids} (its ids are "
                  f"{min(names)}-{max(names)})", file=sys.stderr)
        for camera in config.cameras:
            for field, classes in camera.scene.classes_outside(set(names.values())) if camera.scene else ():
                print(f"cityguard: warning: camera {camera.id}: scene.{field}: the model {model} has no class "
                      f"{classes}", file=sys.stderr)
    zones = sum(len(camera.zones) for camera in config.cameras)
    print(f"{args.config}: site {config.site!r}, {counted(len(config.cameras), 'camera')}, {counted(zones, 'zone')}: "
          "OK")
    return 0


def written_password(source: str) -> bool:
    """Whether a source URL carries a password as such, not as a ${NAME} placeholder."""
    from urllib.parse import urlsplit

    from schemas.settings.base import SOURCE_VARIABLE

    try:
        password = urlsplit(source).password if "://" in source else None
    except ValueError:
        return False
    return bool(password) and not SOURCE_VARIABLE.fullmatch(password)


def run_replay(args, config) -> int:
    import errno
    import gzip
    import itertools
    import sys

    from cityguard.evaluation.loaders import FRAME_COLUMN
    from cityguard.replay import (
        CLIP_ORIGIN_S,
        CameraAnalytics,
        at_source_rate,
        clip_detections,
        clip_rate,
        describe,
        find_camera,
        line_totals,
        recorded_detections,
        recorded_rate,
        recording_offset,
        shift_event,
        shift_window,
        zone_summaries,
    )
    from infra import assets

    if (args.clip is None) == (args.detections is None):
        raise ValueError("give either a CLIP or --detections")
    if args.start_time is not None and args.detections is not None:
        raise ValueError("--start-time is for a clip: a recording replays in its own times (seconds from its clip's "
                         "start, or the unix times it was captured at)")
    configured = find_camera(config, args.camera)
    clip = None if args.clip is None else Path(assets.resolve(args.clip))
    if clip is not None and not clip.exists():
        raise FileNotFoundError(errno.ENOENT, "no such clip", str(clip))
    recorded = list(recorded_detections(args.detections, configured.id)) if args.detections else []
    if args.detections and not recorded:
        raise ValueError(f"{args.detections} holds no Detections of camera {configured.id}")
    origin = CLIP_ORIGIN_S if args.start_time is None else args.start_time
    offset = recording_offset(recorded) if recorded else CLIP_ORIGIN_S if args.start_time is None else 0.0
    if args.detections:
        camera = at_source_rate(configured, recorded_rate(recorded))
        source = iter(recorded)
    else:
        camera = at_source_rate(configured, clip_rate(config, clip))
        source = clip_detections(config, camera, clip, origin)
    if camera.fps < configured.fps:
        print(f"cityguard: warning: the footage runs at {camera.fps:.3g} fps, below camera {camera.id}'s "
              f"{configured.fps:g}: replayed at the footage's rate", file=sys.stderr)
    # The footage is checked, its first frame detected, the analyzers built and every output's folder found before
    # any output file is opened, so a replay refused at its start (footage that is no video, a model or an ignore
    # filter file that cannot be read, an output in a folder that is not there) leaves the files an earlier one wrote.
    source = itertools.chain(list(itertools.islice(source, 1)), source)
    analytics = CameraAnalytics(camera, config)
    for output in (args.events, args.record_detections, args.frame_scores, args.line_counts):
        if output is not None and not output.absolute().parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, "no such folder for the output", str(output.absolute().parent))
        if output is not None and output.is_dir():
            raise IsADirectoryError(errno.EISDIR, "an output file is a folder", str(output))
    events = open(args.events, "w") if args.events else None  # noqa: SIM115 - closed below with the recording
    recording = None  # gzip-compressed when named .gz, as recordings are read
    if args.record_detections:
        recording = (gzip.open(args.record_detections, "wt") if args.record_detections.suffix == ".gz"  # noqa: SIM115
                     else open(args.record_detections, "w"))  # noqa: SIM115
    scores = open(args.frame_scores, "w") if args.frame_scores else None  # noqa: SIM115
    line_counts = open(args.line_counts, "w") if args.line_counts else None  # noqa: SIM115
    if scores:
        scores.write(f"camera,type,start,end,score,{FRAME_COLUMN}\n")
    frames = opened = 0
    windows = []  # the counting lines' closed windows, then the one open at the end
    zone_windows = []  # the crowd zones' windows
    first = latest = None  # capture times of the footage's first frame and of the end of its latest

    def keep_windows(closed: list) -> None:
        windows.extend(closed)
        if line_counts:
            line_counts.writelines(shift_window(window, first, offset).model_dump_json() + "\n" for window in closed)

    try:
        interval = 1.0 / camera.fps
        for detections in source:
            replayed = analytics.update(detections)
            frames += 1
            first = detections.captured_at if first is None else first
            latest = max(latest or 0.0, detections.captured_at + interval)
            keep_windows(replayed.line_counts)
            zone_windows.extend(replayed.zone_metrics)
            for warning in replayed.warnings:
                print(f"cityguard: warning: {warning}", file=sys.stderr)
            if scores:
                start = replayed.detections.captured_at - offset
                for score in replayed.area_scores.values():
                    scores.write(f"{camera.id},vehicle_in_pedestrian_area,{start:.3f},{start + interval:.3f},"
                                 f"{score:.4f},{frames}\n")
            if recording:
                recording.write(replayed.detections.model_dump_json() + "\n")
            for event in replayed.events:
                event = shift_event(event, offset)
                opened += event.state.value == "opened"
                print(describe(event), flush=True)
                if events:
                    events.write(event.model_dump_json() + "\n")
        if latest is not None:
            keep_windows(analytics.end_of_footage_counts(latest))
    finally:
        for handle in (events, recording, scores, line_counts):
            if handle:
                handle.close()
    print(f"{counted(frames, 'frame')}, {counted(opened, 'event')} opened")
    for summary in zone_summaries(zone_windows, [zone.id for zone in camera.zones], latest):
        print(summary)
    totals = line_totals(windows)
    for line in (camera.scene.counting_lines if camera.scene else []):
        crossed = totals.get(line.id, {})
        parts = ", ".join(f"{name} {direction} {count}" for (name, direction), count in sorted(crossed.items()))
        print(f"line {line.id}: {counted(sum(crossed.values()), 'crossing')}" + (f" ({parts})" if parts else ""))
    return 0
