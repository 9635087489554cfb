import json

import yaml

from cityguard.cli import build_parser, run_reporting_errors
from cityguard.commands_alerts import DATASOURCE_UID, GRAFANA_DIR, INFRA_DIR, provision_grafana
from tests.ops.fakes import FakeGrafana


def provision(url: str, token: str, prometheus_url: str = "http://prom.test:9090", *options: str) -> int:
    """The command as the CLI parses and runs it: a failure is one line on stderr and an exit status."""
    args = build_parser().parse_args(["grafana", "provision", "--url", url, "--token", token,
                                      "--prometheus-url", prometheus_url, *options])
    return run_reporting_errors(lambda: provision_grafana(args, None), False)


def test_provision_pushes_the_datasource_and_every_dashboard(capsys):
    fake = FakeGrafana(token="glsa_test")
    with fake.serve() as server:
        assert provision(server.url, "glsa_test") == 0
        expected = {json.loads(path.read_text())["uid"] for path in (GRAFANA_DIR / "dashboards").glob("*.json")}
        assert set(fake.dashboards) == expected
        assert fake.datasources[DATASOURCE_UID]["url"] == "http://prom.test:9090"
        first = capsys.readouterr()
        assert provision(server.url, "glsa_test") == 0  # idempotent: the datasource is kept, dashboards overwritten
        assert f"datasource {DATASOURCE_UID}: present\n" in capsys.readouterr().out
        assert provision(server.url, "glsa_test", "http://other:9090") == 0
        assert (f"datasource {DATASOURCE_UID}: present, kept with its URL http://prom.test:9090 (not "
                "http://other:9090: change it in Grafana)") in capsys.readouterr().out
        assert provision(server.url, "wrong") == 1
        refused = capsys.readouterr()
        assert refused.err == "cityguard: error: Grafana refused: Unauthorized\n"
        assert "glsa_test" not in first.out + first.err and "wrong" not in refused.err  # tokens never printed


def provisioned(*options: str) -> FakeGrafana:
    """A Grafana without the datasource, after `cityguard grafana provision` with these options."""
    fake = FakeGrafana(token="glsa_test")
    with fake.serve() as server:
        provision(server.url, "glsa_test", "http://prom.test:9090", *options)
    return fake


def test_a_created_datasource_has_the_scrape_interval_of_the_prometheus_configuration(tmp_path, capsys):
    """Grafana's $__rate_interval, which the dashboards' rates span, is sized on the datasource's timeInterval."""
    compose_config = yaml.safe_load((INFRA_DIR / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    assert provisioned().datasources[DATASOURCE_UID]["jsonData"] == {
        "timeInterval": compose_config["global"]["scrape_interval"]}
    site_config = tmp_path / "prometheus.yml"
    site_config.write_text("global:\n  scrape_interval: 30s\n", encoding="utf-8")
    assert provisioned("--prometheus-config", str(site_config)).datasources[DATASOURCE_UID]["jsonData"] == {
        "timeInterval": "30s"}
    capsys.readouterr()
    missing = tmp_path / "absent.yml"
    fake = provisioned("--prometheus-config", str(missing))
    assert not fake.datasources and not fake.dashboards  # refused before anything is pushed
    assert capsys.readouterr().err == (f"cityguard: error: no Prometheus configuration at {missing}: give "
                                       "--prometheus-config FILE\n")
