import argparse
import json

from cityguard.commands_alerts import DATASOURCE_UID, GRAFANA_DIR, provision_grafana
from tests.ops.fakes import FakeGrafana


def provision(url: str, token: str) -> int:
    return provision_grafana(argparse.Namespace(url=url, token=token, prometheus_url="http://prom.test:9090",
                                                dashboards=GRAFANA_DIR / "dashboards"), None)


def test_provision_pushes_the_datasource_and_every_dashboard(capsys):
    fake = FakeGrafana(token="glsa_test")
    with fake.serve() as server:
        assert provision(server.url, "glsa_test") == 0
        expected = {json.loads(path.read_text())["uid"] for path in (GRAFANA_DIR / "dashboards").glob("*.json")}
        assert set(fake.dashboards) == expected
        assert fake.datasources[DATASOURCE_UID]["url"] == "http://prom.test:9090"
        first = capsys.readouterr()
        assert provision(server.url, "glsa_test") == 0  # idempotent: the datasource is kept, dashboards overwritten
        assert f"datasource {DATASOURCE_UID}: present" in capsys.readouterr().out
        assert provision(server.url, "wrong") == 1
        refused = capsys.readouterr()
        assert "Grafana refused" in refused.err
        assert "glsa_test" not in first.out + first.err and "wrong" not in refused.err  # tokens never printed
