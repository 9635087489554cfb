"""The deployment descriptions agree with the code: ports, env names, topics, consumer groups, commands, paths."""
import functools
import json
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from cityguard.cli import build_parser
from cityguard.commands_alerts import DATASOURCE_UID
from schemas.settings.config import Config, load_config, parse_config
from sinks.alerts.service import WEBHOOK_PATH

INFRA = Path(__file__).resolve().parents[2] / "infra"
DEFAULTS = Config()
STAGE_PORTS = {  # compose service / k8s component -> the port the code serves metrics on
    "exporter": DEFAULTS.metrics.exporter_port,
    "producer": DEFAULTS.metrics.producer_port,
    "inference": DEFAULTS.metrics.inference_port,
    "alerts": DEFAULTS.alerting.receiver.port,
}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


@functools.cache
def parser():
    return build_parser()


def is_command(args: list[str]) -> bool:
    try:
        parsed = parser().parse_args(args)
    except SystemExit:
        return False
    return hasattr(parsed, "handler")


def test_prometheus_scrapes_every_stage_on_its_configured_port():
    config = load_yaml(INFRA / "prometheus" / "prometheus.yml")
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {f"cityguard-{stage}": [f"{stage}:{port}"] for stage, port in STAGE_PORTS.items()}
    compose = load_yaml(INFRA / "compose" / "compose.yaml")
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "alertmanager" in compose["services"]


def test_alertmanager_delivers_to_the_dispatcher_receiver():
    config = load_yaml(INFRA / "alertmanager" / "alertmanager.yml")
    urls = [hook["url"] for receiver in config["receivers"] for hook in receiver.get("webhook_configs", [])]
    assert urls, "no webhook receiver"
    for url in urls:
        parts = urlsplit(url)
        assert (parts.hostname, parts.port, parts.path) == ("alerts", DEFAULTS.alerting.receiver.port, WEBHOOK_PATH)


def test_compose_stages_share_the_broker_env_and_run_real_commands():
    compose = load_yaml(INFRA / "compose" / "compose.yaml")
    services = compose["services"]
    kafka_env = services["kafka"]["environment"]
    assert "broker,controller" == kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft: no ZooKeeper service
    assert "zookeeper" not in services
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split("://", 1)[1]
    site = load_config(INFRA / "compose" / "cityguard.yaml")
    stages = {name: service for name, service in services.items() if service.get("image") == "cityguard:latest"}
    assert set(stages) == {"exporter", "analytics", "inference", "producer", "alerts"}
    for name, service in stages.items():
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == advertised, name
        assert service["environment"]["CITYGUARD_CONFIG"] == "/etc/cityguard/cityguard.yaml"
        assert is_command(service["command"]), f"{name}: {service['command']} is not a cityguard command"
        if name in STAGE_PORTS:
            assert service["expose"] == [str(STAGE_PORTS[name])], name
    configured = {"exporter": site.metrics.exporter_port, "producer": site.metrics.producer_port,
                  "inference": site.metrics.inference_port, "alerts": site.alerting.receiver.port}
    assert configured == STAGE_PORTS
    assert site.metrics.host == "0.0.0.0" and site.alerting.receiver.host == "0.0.0.0"  # reachable in containers
    alerts_env = stages["alerts"]["environment"]
    sms = site.alerting.channel("sms")
    for variable in (sms.account_sid_env, sms.auth_token_env, sms.from_number_env):
        assert variable in alerts_env
    for service in services.values():  # every mounted file of the repository exists
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") or source.startswith("../"):
                assert (INFRA / "compose" / source).exists() or "shared" in source, source


def test_kubernetes_manifests_match_the_code():
    docs = load_all(INFRA / "k8s" / "cityguard.yaml")
    config_map = next(doc for doc in docs if doc["kind"] == "ConfigMap")
    site = parse_config(yaml.safe_load(config_map["data"]["cityguard.yaml"]), Path("."))
    deployments = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Deployment"}
    assert set(deployments) == {"exporter", "analytics", "inference", "producer", "alerts"}
    bootstrap = set()
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert is_command(container["args"]), name
        env = {item["name"]: item for item in container["env"]}
        bootstrap.add(env["KAFKA_BOOTSTRAP_SERVERS"]["value"])
        if name in STAGE_PORTS:
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert int(annotations["prometheus.io/port"]) == STAGE_PORTS[name]
            assert container["ports"][0]["containerPort"] == STAGE_PORTS[name]
    alerts_env = {item["name"] for item in deployments["alerts"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    sms = site.alerting.channel("sms")
    assert {sms.account_sid_env, sms.auth_token_env, sms.from_number_env} <= alerts_env
    service = next(doc for doc in docs if doc["kind"] == "Service" and doc["metadata"]["name"] == "alerts")
    assert service["spec"]["ports"][0]["port"] == site.alerting.receiver.port

    scaled = load_yaml(INFRA / "k8s" / "keda-inference.yaml")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "inference"
    assert trigger["metadata"]["consumerGroup"] == site.group_id("inference")
    assert trigger["metadata"]["topic"] == site.broker.topics.frames
    assert {trigger["metadata"]["bootstrapServers"]} == bootstrap
    assert scaled["spec"]["maxReplicaCount"] == site.broker.partitions


def test_grafana_dashboards_use_the_provisioned_datasource():
    datasources = load_yaml(INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [source["uid"] for source in datasources] == [DATASOURCE_UID]
    provider = load_yaml(INFRA / "grafana" / "provisioning" / "dashboards" / "cityguard.yml")["providers"][0]
    compose = load_yaml(INFRA / "compose" / "compose.yaml")
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in compose["services"]["grafana"]["volumes"]
    for path in (INFRA / "grafana" / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
        uids |= {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
        assert uids == {DATASOURCE_UID}, path.name


def test_alertmanager_presents_the_token_the_dispatcher_requires_and_the_port_stays_internal():
    token_env = DEFAULTS.alerting.receiver.token_env
    hooks = [hook for receiver in load_yaml(INFRA / "alertmanager" / "alertmanager.yml")["receivers"]
             for hook in receiver.get("webhook_configs", [])]
    for hook in hooks:
        authorization = hook["http_config"]["authorization"]
        assert authorization["type"] == "Bearer"
        assert hook["max_alerts"] == DEFAULTS.alerting.receiver.max_alerts_per_request
    secret_file = hooks[0]["http_config"]["authorization"]["credentials_file"]
    secret_name = Path(secret_file).name

    compose = load_yaml(INFRA / "compose" / "compose.yaml")
    services = compose["services"]
    assert token_env in services["alerts"]["environment"]
    assert "ports" not in services["alerts"]  # exposed on the compose network only
    assert secret_file == f"/run/secrets/{secret_name}" and secret_name in services["alertmanager"]["secrets"]
    assert compose["secrets"][secret_name] == {"environment": token_env}

    docs = load_all(INFRA / "k8s" / "cityguard.yaml")
    alerts = next(doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "alerts")
    env = {item["name"]: item for item in alerts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[token_env]["valueFrom"]["secretKeyRef"]["key"] == secret_name
    policy = next(doc for doc in docs if doc["kind"] == "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == alerts["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": DEFAULTS.alerting.receiver.port}]
    assert {peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for peer in rule["from"]} == {
        "alertmanager", "prometheus"}
