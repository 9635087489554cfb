"""`cityguard console`: the operator console, a web application over the topics and the incident store."""
from __future__ import annotations

import asyncio
from pathlib import Path

from cityguard.arguments import PORT, listen_host
from schemas.settings.config import Config


def register(commands, add_command) -> None:
    console = add_command(commands, "console", "operator console: live annotated cameras, zone risk, incidents, "
                          "scene editor (web)", run_console)
    console.add_argument("--host", type=listen_host, default=None, help="listen address (default console.host)")
    console.add_argument("--port", type=PORT, default=None, help="listen port (default console.port)")


def run_console(args, config: Config) -> int:
    """Composition root: topic feed thread, incident store, web server; stops on SIGINT/SIGTERM."""
    from cityguard.stages import open_store, require_broker, stop_on_signals
    from infra.kafka import create_topics, make_consumer
    from infra.listeners import http_url
    from producers.frame_store import open_frame_store
    from sinks.console.feed import TopicFeed
    from sinks.console.scene_file import SceneFile
    from sinks.console.server import ConsoleServer, Site, console_token, serve
    from sinks.console.state import ConsoleState
    from sinks.topic_reading import zone_stale_after_s

    settings, topics = config.console, config.broker.topics
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    token, generated = console_token(config, host)
    store = open_store(config)
    servers = require_broker(config)  # after what the site gives is checked: a mistake there is named first
    stop = stop_on_signals()
    stale_after_s = zone_stale_after_s(config.analytics.window_seconds)
    state = ConsoleState(settings.frame_buffer, settings.zone_history, settings.recent_events, stale_after_s)
    watched = [topics.frames, topics.detections, topics.zone_metrics, topics.events, topics.line_counts,
               topics.camera_status]
    create_topics(servers, watched, config.broker.partitions, replication_factor=config.broker.replication_factor)
    # Only partitions assigned by the feed itself and no commits: see sinks/console/feed.py.
    # A short fetch wait: a fetch that waits for data on every partition would hold the newest frame back.
    consumer = make_consumer(servers, config.group_id("console"), enable_auto_commit=False,
                             auto_offset_reset="latest", fetch_max_wait_ms=50)
    backlog = {topics.frames: 2, topics.detections: 2, topics.camera_status: 2, topics.line_counts: 100,
               topics.zone_metrics: settings.zone_history, topics.events: settings.recent_events}
    feed = TopicFeed(consumer, topics, state, open_frame_store(config).resolve, backlog)
    feed.assign()
    feed.start(stop)
    site = Site(config, SceneFile(Path(args.config)),
                Path(config.resolve_path(settings.hard_negatives_dir)))
    server = ConsoleServer(site, state, store, token, host, settings.refresh_hz,
                           status_silence_s=config.producer.report_silence_s())

    def announce(actual_port: int) -> None:
        # The token appears only where this process made it up; a configured one stays in its variable.
        url = http_url(host, actual_port)
        print(f"console: {url}?token={token}" if generated else
              f"console: {url} (token in ${settings.token_env})", flush=True)

    try:
        asyncio.run(serve(server, host, port, stop, announce))
    finally:
        stop.set()
        feed.thread.join(timeout=5)
        consumer.close()
        store.close()
    return 0
