import argparse
import json

from cityguard.cli import run_reporting_errors
from cityguard.commands_alerts import DATASOURCE_UID, GRAFANA_DIR, provision_grafana
from tests.ops.fakes import FakeGrafana


def provision(url: str, token: str, prometheus_url: str = "http://prom.test:9090") -> int:
    """The command as the CLI runs it: a failure is one line on stderr and an exit status."""
    return run_reporting_errors(lambda: provision_grafana(argparse.Namespace(
        url=url, token=token, prometheus_url=prometheus_url, dashboards=GRAFANA_DIR / "dashboards"), None), False)


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
