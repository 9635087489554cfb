"""Rule files, Alertmanager config and dashboards checked with the real Debian tools and structurally."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from schemas import CameraState

INFRA = Path(__file__).resolve().parents[2] / "infra"
DASHBOARDS = sorted((INFRA / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((INFRA / "prometheus" / "rules").glob("*.yml"))
GRID_WIDTH = 24


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run infra/setup.sh (Debian prometheus / prometheus-alertmanager)")
    return path


def run(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_check_rules():
    output = run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert output.count("SUCCESS") == len(RULE_FILES)


def test_promtool_unit_tests_of_the_rules():
    tests = sorted((INFRA / "prometheus" / "tests").glob("*_test.yml"))
    assert tests
    run(tool("promtool"), "test", "rules", *(path.name for path in tests), cwd=INFRA / "prometheus" / "tests")


def test_every_alert_rule_has_for_severity_and_runbook():
    runbooks = (INFRA / "prometheus" / "runbooks.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r"^## (\S+)$", runbooks, re.MULTILINE))
    alerts = [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule]
    assert len(alerts) >= 10
    for rule in alerts:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["runbook_url"].split("#")[1] in anchors, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_prometheus_config_with_the_rules_is_valid():
    run(tool("promtool"), "check", "config", "--syntax-only", str(INFRA / "prometheus" / "prometheus.yml"))


def test_amtool_check_config():
    output = run(tool("amtool"), "check-config", str(INFRA / "alertmanager" / "alertmanager.yml"))
    assert "SUCCESS" in output


@pytest.mark.parametrize(("labels", "receivers"), [
    # The dispatcher cannot page about itself: these also go past it.
    ("alertname=CityguardStageDown job=cityguard-alerts severity=critical team=sre",
     "alerting-path,cityguard-dispatcher"),
    ("alertname=CityguardStageStuck job=cityguard-alerts stage=alerts severity=critical team=sre",
     "alerting-path,cityguard-dispatcher"),
    ("alertname=CityguardStageAbsent job=cityguard-alerts severity=critical team=sre",
     "alerting-path,cityguard-dispatcher"),
    ("alertname=CityguardConsumerLagGrowing job=cityguard-exporter stage=alerts severity=warning team=sre",
     "alerting-path,cityguard-dispatcher"),
    ("alertname=CityguardAlertDeliveryFailed job=cityguard-alerts channel=sms severity=critical team=sre",
     "alerting-path,cityguard-dispatcher"),
    ("alertname=CityguardAlertWebhookRefused job=cityguard-alerts code=401 severity=critical team=sre",
     "alerting-path,cityguard-dispatcher"),
    ("alertname=CityguardAlertStoreDown job=cityguard-alerts severity=critical team=sre",
     "alerting-path,cityguard-dispatcher"),
    ("alertname=CityguardStageDown job=cityguard-inference severity=critical team=sre", "cityguard-dispatcher"),
    ("alertname=CityguardZoneStale job=cityguard-exporter camera=c zone=z severity=critical team=operations",
     "cityguard-dispatcher"),
    # Paged by the analytics' own events: a second page from here would be a second SMS for one incident.
    ("alertname=CityguardTrafficIncidentOpen camera=c type=stopped_vehicle severity=warning team=operations",
     "dashboards-only"),
    ("alertname=CityguardZoneDanger camera=c zone=z severity=critical team=operations", "dashboards-only"),
    ("alertname=CityguardWatchdog severity=info team=sre", "dead-mans-switch"),
], ids=["dispatcher-down", "dispatcher-stuck", "dispatcher-absent", "dispatcher-lag", "delivery-failed",
        "webhook-refused", "store-down", "inference-down", "zone-stale", "traffic-incident", "zone-danger", "watchdog"])
def test_alertmanager_routes_each_alert_to_the_receivers_that_can_deliver_it(labels, receivers):
    output = run(tool("amtool"), "config", "routes", "test",
                 f"--config.file={INFRA / 'alertmanager' / 'alertmanager.yml'}", *labels.split())
    assert output.splitlines()[0] == receivers, output


@pytest.mark.parametrize("path", DASHBOARDS, ids=[path.stem for path in DASHBOARDS])
def test_dashboard_structure(path):
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids must be unique"
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__interval", "__range"}
            assert used <= variables, f"{panel['title']}: undefined variables {used - variables}"


def test_geomap_locates_cameras_by_the_lat_lon_labels_it_queries():
    dashboard = json.loads((INFRA / "grafana" / "dashboards" / "city-operations.json").read_text(encoding="utf-8"))
    geomap = next(panel for panel in dashboard["panels"] if panel["type"] == "geomap")
    location = geomap["options"]["layers"][0]["location"]
    assert location["mode"] == "coords"
    expr = geomap["targets"][0]["expr"]
    assert "cityguard_camera_info" in expr
    grouped = re.search(r"max by \(([^)]*)\)", expr).group(1).replace(" ", "").split(",")
    assert {location["latitude"], location["longitude"]} <= set(grouped)
    assert geomap["targets"][0]["format"] == "table" and geomap["targets"][0]["instant"]


def test_every_risk_level_panel_shows_minus_one_as_unknown():
    """The metrics sink reports -1 for a zone whose windows stopped; a panel must not show it as a number or calm."""
    panels = [panel for path in DASHBOARDS for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]
              if any("cityguard_zone_risk_level" in target["expr"] for target in panel["targets"])]
    assert len(panels) >= 2
    for panel in panels:
        texts = {value: option["text"] for mapping in panel["fieldConfig"]["defaults"]["mappings"]
                 if mapping["type"] == "value" for value, option in mapping["options"].items()}
        assert texts.get("-1") == "unknown", panel["title"]
        assert texts.get("0") == "normal", panel["title"]


def test_the_camera_health_panel_shows_every_camera_state_by_name():
    """A degraded, stalled or reconnecting camera is not up, but neither is it down: the panel shows the state the
    producer reports, each number the query makes of one named as the state it stands for."""
    dashboard = json.loads((INFRA / "grafana" / "dashboards" / "sre.json").read_text(encoding="utf-8"))
    panel = next(panel for panel in dashboard["panels"] if panel["title"] == "Camera health")
    texts = {value: option["text"] for mapping in panel["fieldConfig"]["defaults"]["mappings"]
             if mapping["type"] == "value" for value, option in mapping["options"].items()}
    [target] = panel["targets"]
    codes = {state: code or "1" for state, code in
             re.findall(r'cityguard_camera_state\{[^}]*state="(\w+)"\}(?: \* (\d+))?', target["expr"])}
    assert sorted(codes) == sorted(state.value for state in CameraState)
    assert all(texts.get(code) == state for state, code in codes.items())  # so no two states share a number
