"""Operator commands for alerting: the dispatcher stage, acknowledgements, the incident log, Grafana provisioning."""
from __future__ import annotations

import getpass
import json
import time
from pathlib import Path

from cityguard.arguments import PORT, number_in, shown_time
from cityguard.stages import open_store
from infra.listeners import http_url
from schemas.settings.base import env_value
from schemas.settings.config import Config, ConfigError

INFRA_DIR = Path(__file__).resolve().parent.parent / "infra"
GRAFANA_DIR = INFRA_DIR / "grafana"
DATASOURCE_UID = "cityguard-prometheus"


def register(commands, add_command) -> None:
    alerts = commands.add_parser("alerts", help="alert dispatcher and acknowledgements")
    alert_commands = alerts.add_subparsers(dest="alerts_command", required=True)
    dispatch = add_command(alert_commands, "dispatch",
                           "alert dispatcher: events topic + Alertmanager webhook -> SMS, webhook, sound",
                           lambda args, config: run_alert_dispatch(config, args.port))
    dispatch.add_argument("--port", type=PORT, default=None, help="receiver port (default alerting.receiver.port)")
    ack = add_command(alert_commands, "ack", "acknowledge an alert (its number or id) with the other alerts of its "
                      "incident, or all alerts of an incident (its id); stops escalation", acknowledge)
    ack.add_argument("id")
    ack.add_argument("--by", default=None, help="who acknowledges (default: the login name)")
    ack.add_argument("--note", default="")

    incidents = commands.add_parser("incidents", help="the incident log")
    incident_commands = incidents.add_subparsers(dest="incidents_command", required=True)
    listing = add_command(incident_commands, "list", "recent incidents, newest first", list_incidents)
    listing.add_argument("--open", action="store_true", help="only incidents not resolved")
    listing.add_argument("--limit", type=number_in(int, 1, 100_000), default=50, help="incidents listed at most")
    show = add_command(incident_commands, "show", "one incident with its events, alerts, deliveries and acks",
                       show_incident)
    show.add_argument("id")

    grafana = commands.add_parser("grafana", help="Grafana dashboards")
    grafana_commands = grafana.add_subparsers(dest="grafana_command", required=True)
    provision = add_command(grafana_commands, "provision",
                            "push the datasource and dashboards of infra/grafana to a Grafana server",
                            provision_grafana, needs_config=False)
    provision.add_argument("--url", required=True, help="Grafana base URL, e.g. http://grafana:3000")
    provision.add_argument("--token", default=None,
                           help="service account token (default: $GRAFANA_TOKEN; the variable keeps it out of ps)")
    provision.add_argument("--prometheus-url", default="http://prometheus:9090",
                           help="created as the datasource when Grafana has none with uid " + DATASOURCE_UID)
    provision.add_argument("--dashboards", type=Path, default=GRAFANA_DIR / "dashboards",
                           help="folder of dashboard JSON files (default: %(default)s)")
    provision.add_argument("--prometheus-config", type=Path, default=INFRA_DIR / "prometheus" / "prometheus.yml",
                           help="Prometheus configuration whose global scrape_interval a created datasource is given "
                           "(default: %(default)s)")


def run_alert_dispatch(config: Config, port: int | None = None) -> None:
    """The dispatcher stage (composition root): store, channels, receiver, Kafka consumer and producer."""
    from cityguard.stages import require_bootstrap, stop_on_signals
    from infra.kafka import create_topics, make_consumer, make_producer
    from sinks.alerts.channels import build_channels
    from sinks.alerts.dispatcher import AlertDispatcher
    from sinks.alerts.service import (
        WEBHOOK_PATH,
        AlertmanagerReceiver,
        BrokerLink,
        DispatcherService,
        publisher,
        receiver_token,
    )

    servers = require_bootstrap(config)
    alerting, topics = config.alerting, config.broker.topics
    stop = stop_on_signals()
    channels = build_channels(alerting.channels, config.resolve_path)  # fails now if a secret variable is unset
    token = receiver_token(alerting.receiver)  # likewise, unless the receiver is on loopback
    store = open_store(config)
    receiver = AlertmanagerReceiver(alerting.receiver, token, port).start()
    print(f"alerts: Alertmanager webhook {http_url(alerting.receiver.host, receiver.port, WEBHOOK_PATH)}, "
          f"metrics /metrics", flush=True)

    def connect():
        create_topics(servers, [topics.events, topics.alerts, topics.dead_letter], config.broker.partitions,
                      replication_factor=config.broker.replication_factor)
        producer = make_producer(servers)
        return make_consumer(servers, config.group_id("alerts"), topics.events), producer

    # Alerts are published with the producer the link makes (none yet: the publish fails as in an outage).
    dispatcher = AlertDispatcher(alerting, config.site, store, channels,
                                 publisher(lambda: service.producer, topics.alerts))
    service = DispatcherService(dispatcher, None, None, topics, receiver, alerting.escalation_check_interval_s,
                               [camera.id for camera in config.cameras])
    link = BrokerLink(connect, service).start(stop)  # the receiver answers meanwhile: a broker outage pages too
    try:
        service.run(stop)
    finally:
        receiver.stop()
        link.thread.join(timeout=5)
        for client in (service.consumer, service.producer):
            if client is not None:
                client.close()
        store.close()


def acknowledge(args, config: Config) -> int:
    store = open_store(config)
    try:
        alerts = store.acknowledge(args.id, args.by or getpass.getuser(), args.note, time.time())
    finally:
        store.close()
    if alerts is None:
        raise ValueError(f"no alert or incident {args.id!r} in the incident store")
    if not alerts:
        raise ValueError(f"nothing to acknowledge for {args.id!r}: no alert of it notified anyone")
    for alert in alerts:
        print(f"acknowledged alert {alert.id} ({alert.alert_id}): {alert.title}")
    return 0


def list_incidents(args, config: Config) -> int:
    store = open_store(config)
    try:
        incidents = store.list_incidents(args.open, args.limit)
    finally:
        store.close()
    if not incidents:
        print("no incidents")
    for incident in incidents:
        place = "/".join(part for part in (incident.camera_id, incident.zone_id) if part) or "-"
        print(f"{incident.id}  {incident.state:8}  {incident.severity:8}  {shown_time(incident.opened_at)}  "
              f"{incident.type}  {place}  {incident.title}")
    return 0


def show_incident(args, config: Config) -> int:
    store = open_store(config)
    try:
        detail = store.incident_detail(args.id)
    finally:
        store.close()
    if detail is None:
        raise ValueError(f"no incident {args.id!r}")
    incident = detail.incident
    print(f"incident {incident.id} ({incident.source}): {incident.title}")
    print(f"  type {incident.type}, camera {incident.camera_id or '-'}, zone {incident.zone_id or '-'}, "
          f"severity {incident.severity}, {incident.state}, opened {shown_time(incident.opened_at)}, "
          f"resolved {shown_time(incident.resolved_at)}")
    for row in detail.events:
        print(f"  event   {shown_time(row.at)}  {row.state:8}  {row.severity:8}  {row.message}")
    for alert in detail.alerts:
        print(f"  alert {alert.id}  {alert.alert_id}  {alert.status}{' (' + alert.reason + ')' if alert.reason else ''}"
              f"  step {alert.escalation_step}  acked {shown_time(alert.acked_at)}")
    attempts = {}
    for attempt in detail.attempts:
        attempts.setdefault(attempt.delivery_id, []).append(attempt)
    for delivery in detail.deliveries:
        print(f"  delivery {delivery.id}  alert {delivery.alert_ref}  {delivery.channel_id} -> "
              f"{delivery.contact_id or 'broadcast'}  {delivery.status}  {delivery.provider_id or ''}"
              f"{'  ' + delivery.error if delivery.error else ''}")
        for attempt in attempts.get(delivery.id, []):
            print(f"    attempt {shown_time(attempt.at)}  {attempt.outcome}  {attempt.status_code or ''}  "
                  f"{attempt.error or ''}")
    for ack in detail.acknowledgements:
        print(f"  ack     {shown_time(ack.at)}  alert {ack.alert_ref}  by {ack.by}  {ack.note}")
    for review in detail.reviews:
        print(f"  review  {shown_time(review.at)}  {review.verdict}  by {review.by}  {review.note}"
              f"{'  evidence ' + review.evidence_path if review.evidence_path else ''}")
    return 0


def scrape_interval(prometheus_config: Path) -> str:
    """The global scrape_interval of a Prometheus configuration file, as Prometheus writes durations (15s)."""
    if not prometheus_config.is_file():
        raise FileNotFoundError(f"no Prometheus configuration at {prometheus_config}: give --prometheus-config FILE")
    import yaml

    try:
        settings = yaml.safe_load(prometheus_config.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{prometheus_config} is not YAML: {exc}") from None
    global_settings = settings.get("global") if isinstance(settings, dict) else None
    if not isinstance(global_settings, dict) or "scrape_interval" not in global_settings:
        raise ConfigError(f"{prometheus_config} has no global scrape_interval")
    return str(global_settings["scrape_interval"])


def provision_grafana(args, config: None) -> int:
    """Datasource (only if missing, so an operator's edits survive) and every dashboard (overwritten)."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    # An installed package has no infra/ beside it, and pushing no dashboards must not look like success.
    dashboards = sorted(args.dashboards.glob("*.json")) if args.dashboards.is_dir() else []
    if not dashboards:
        raise FileNotFoundError(f"no dashboards (*.json) in {args.dashboards}: give --dashboards DIR")
    token = args.token or env_value("GRAFANA_TOKEN", "grafana")
    if not token:
        raise ConfigError("a Grafana token is needed (--token or GRAFANA_TOKEN)")
    grafana = GrafanaApi.from_url(args.url, credential=token)
    try:
        try:
            present = grafana.datasource.get_datasource_by_uid(DATASOURCE_UID)
            url = present.get("url") if isinstance(present, dict) else None
            print(f"datasource {DATASOURCE_UID}: present" + (
                f", kept with its URL {url} (not {args.prometheus_url}: change it in Grafana)"
                if url and url != args.prometheus_url else ""))
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            # Grafana sizes $__rate_interval, which the dashboards' rates span, on the scrape interval it is told.
            interval = scrape_interval(args.prometheus_config)
            grafana.datasource.create_datasource({"uid": DATASOURCE_UID, "name": "Prometheus (cityguard)",
                                                  "type": "prometheus", "access": "proxy",
                                                  "url": args.prometheus_url, "isDefault": True,
                                                  "jsonData": {"timeInterval": interval}})
            print(f"datasource {DATASOURCE_UID}: created for {args.prometheus_url}")
        for path in dashboards:
            dashboard = json.loads(path.read_text(encoding="utf-8"))
            dashboard.pop("id", None)  # Grafana assigns ids; the uid identifies the dashboard
            result = grafana.dashboard.update_dashboard({"dashboard": dashboard, "overwrite": True,
                                                         "message": "cityguard grafana provision"})
            print(f"dashboard {dashboard['uid']}: {result.get('status', 'ok')} {result.get('url', '')}")
    except GrafanaException as exc:
        raise RuntimeError(f"Grafana refused: {exc}") from None
    return 0
