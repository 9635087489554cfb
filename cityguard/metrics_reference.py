"""The metrics reference in the README, generated from the metrics the code defines so it cannot drift from them.

`python -m cityguard.metrics_reference --write` rewrites the block between the metrics-reference markers in README.md.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- metrics-reference:start -->", "<!-- metrics-reference:end -->"
# Every module that defines metrics, the shared ones first: a module's own metrics are those not already found in
# a module before it (the later ones import them).
MODULES = ("infra.kafka", "infra.broker", "infra.metrics_http", "producers.frame_producer",
           "processors.inference.stage", "processors.analytics.stage", "sinks.metrics_exporter", "sinks.alerts.service",
           "sinks.alerts.dispatcher")


def metrics() -> list[tuple[str, str, tuple[str, ...], str, str]]:
    """(name as exported, type, labels, help, defining module) of every metric, in the modules' order."""
    found: dict[str, tuple[str, str, tuple[str, ...], str, str]] = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                # prometheus_client keeps a counter's name without the _total its samples carry
                name = f"{metric._name}_total" if metric._type == "counter" else metric._name
                found.setdefault(name, (name, metric._type, tuple(metric._labelnames), metric._documentation,
                                        module_name))
    return list(found.values())


def table() -> str:
    lines = ["| metric | type | labels | meaning | defined in |", "|---|---|---|---|---|"]
    for name, kind, labels, documentation, module in metrics():
        shown_labels = ", ".join(f"`{label}`" for label in labels)
        lines.append(f"| `{name}` | {kind} | {shown_labels} | {documentation.replace('|', '/')} | `{module}` |")
    return "\n".join(lines)


def current_readme() -> str:
    """README.md with the generated table between the markers."""
    text = README.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table()}\n{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        README.write_text(current_readme(), encoding="utf-8")
    else:
        print(table())
