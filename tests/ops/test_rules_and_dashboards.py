"""Rule files, Alertmanager config and dashboards checked with the real Debian tools, structurally, and against the
metrics the code defines."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from cityguard.metrics_reference import metrics
from schemas import CameraState

INFRA = Path(__file__).resolve().parents[2] / "infra"
DASHBOARDS = sorted((INFRA / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((INFRA / "prometheus" / "rules").glob("*.yml"))
GRID_WIDTH = 24
# Series that Prometheus makes (`up`) or that prometheus_client's process collector exports in every stage, and the
# labels Prometheus adds to every series it scrapes.
PROMETHEUS_SERIES = {"up": frozenset(), "process_start_time_seconds": frozenset()}
TARGET_LABELS = frozenset({"job", "instance"})
# A series selector: a recording rule's level:metric:operations name, a cityguard metric or one of the above.
SELECTOR = re.compile(r"\b([a-z_]+:[\w:]+|cityguard_\w+|up|process_start_time_seconds)\b(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LABEL_REPLACE = re.compile(r'label_replace\(.*?,\s*"(\w+)",\s*"[^"]*",\s*"(\w+)",', re.DOTALL)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run infra/setup.sh (Debian prometheus / prometheus-alertmanager)")
    return path


def run(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the stages export, with its labels: a histogram's as its buckets, sum and count."""
    series = {}
    for name, kind, labels, _, _ in metrics():
        series[name] = frozenset(labels)
        if kind == "histogram":
            series |= {f"{name}_bucket": frozenset({*labels, "le"}), f"{name}_sum": frozenset(labels),
                       f"{name}_count": frozenset(labels)}
    return series


def rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def names(listed: str) -> set[str]:
    return {name.strip() for name in listed.split(",") if name.strip()}


def seconds(duration: str) -> float:
    """A Prometheus duration (15s, 1m30s, 1h) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    assert parts and "".join(number + unit for number, unit in parts) == duration, duration
    return sum(int(number) * units[unit] for number, unit in parts)


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
    alerts = [rule for rule in rules() if "alert" in rule]
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


def labels_the_query_can_see(where: str, expr: str, known: dict[str, frozenset[str]]) -> set[str]:
    """The labels of the series an expression selects, and those it adds by label_replace; every series it selects
    exists, with the labels its matchers name."""
    seen = set(TARGET_LABELS)
    for name, matchers in SELECTOR.findall(expr):
        assert name in known, f"{where}: {name} is not exported"
        unknown = set(MATCHER.findall(matchers)) - known[name] - TARGET_LABELS
        assert not unknown, f"{where}: {name} has no label {unknown}"
        seen |= known[name]
    for added, source in LABEL_REPLACE.findall(expr):
        assert source in seen, f"{where}: label_replace reads {source}, which no series here has"
        seen.add(added)
    return seen


def checked_queries() -> list[tuple[str, str, set[str]]]:
    """(where, expression, label names it uses for its output) of every rule and dashboard query."""
    queries = []
    for rule in rules():
        used = {label for text in rule.get("annotations", {}).values()
                for label in re.findall(r"\$labels\.(\w+)", text)}
        queries.append((rule.get("alert") or rule["record"], rule["expr"], used))
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
                queries.append((f"{path.stem}: {panel['title']}", target["expr"], used))
        for variable in dashboard["templating"]["list"]:
            queried = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable.get("definition", ""))
            if queried:
                queries.append((f"{path.stem}: ${variable['name']}", queried[1] + "{" + queried[2] + '!=""}', set()))
    return queries


def test_every_series_a_rule_or_panel_queries_is_exported_with_the_labels_it_uses():
    """A misspelt or renamed metric, a counter without its _total, or a label the metric does not carry makes a
    query that returns nothing: an alert that can never fire, a panel that stays empty."""
    known = exported_series() | PROMETHEUS_SERIES
    for rule in rules():  # a recording rule's series keeps the labels it aggregates by
        if "record" in rule:
            grouped = GROUPING.search(rule["expr"])
            known[rule["record"]] = frozenset(names(grouped[1]) - {"le"} if grouped else ())
    for where, expr, used in checked_queries():
        seen = labels_the_query_can_see(where, expr, known)
        grouped = set().union(*(names(listed) for listed in GROUPING.findall(expr)))
        assert grouped | used <= seen, f"{where}: no series here has {(grouped | used) - seen}"


def test_every_range_spans_four_scrapes():
    """A rate, increase or deriv over fewer than four scrapes is left with one sample, or none, after a scrape or two
    missed: the alert or panel goes blank, or jumps, when nothing changed."""
    scrape_s = seconds(yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())["global"]
                       ["scrape_interval"])
    for where, expr, _ in checked_queries():
        for duration in re.findall(r"\[(\w+)\]", expr):  # a range; Grafana's $__rate_interval is 4 scrapes or more
            assert seconds(duration) >= 4 * scrape_s, f"{where}: [{duration}] with a scrape every {scrape_s:g} s"


def test_the_rules_unit_tests_feed_series_as_the_stages_export_them():
    """The promtool tests prove the rules on the series they are given: those must carry the names and labels the
    stages' series carry, or an `on (...)` or a matcher that the real series fail passes there."""
    known = exported_series() | PROMETHEUS_SERIES
    for path in sorted((INFRA / "prometheus" / "tests").glob("*_test.yml")):
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for given in test["input_series"]:
                name, _, matchers = given["series"].partition("{")
                assert name in known, f"{test['name']}: {name} is not exported"
                labels = set(MATCHER.findall(matchers))
                assert labels - TARGET_LABELS == known[name], f"{test['name']}: {given['series']}"


def test_exported_metrics_pass_promtools_lint():
    """Prometheus' naming conventions (base units, counters ending in _total, no abbreviated units), as `promtool
    check metrics` lints them, on one series of every metric the code defines (it lints nothing of a metric without
    any)."""
    registry = CollectorRegistry()

    class OneSeriesEach:
        def collect(self):
            for name, kind, labels, documentation, _ in metrics():
                values = ["x"] * len(labels)
                if kind == "counter":
                    family = CounterMetricFamily(name, documentation, labels=labels)
                    family.add_metric(values, 0)
                elif kind == "histogram":
                    family = HistogramMetricFamily(name, documentation, labels=labels)
                    family.add_metric(values, buckets=[("+Inf", 0)], sum_value=0)
                else:
                    family = GaugeMetricFamily(name, documentation, labels=labels)
                    family.add_metric(values, 0)
                yield family

    registry.register(OneSeriesEach())
    exposition = generate_latest(registry).decode()
    assert exposition.count("# TYPE ") == len(metrics())
    result = subprocess.run([tool("promtool"), "check", "metrics"], input=exposition, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
