"""Collects the measured figures of the crowd scenarios and prints them at the end (run with -s to see them live)."""
from __future__ import annotations

import pytest

FIGURES: dict[str, str] = {}


@pytest.fixture
def report():
    """report(name, text): records a measured figure; all of them are printed in the terminal summary."""
    def record(name: str, text: str) -> None:
        FIGURES[name] = text
        print(f"\n[crowd figure] {name}: {text}")

    return record


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("crowd scenario figures")
        for name, text in FIGURES.items():
            terminalreporter.write_line(f"{name}: {text}")
