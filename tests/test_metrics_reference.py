"""The README's metrics reference is the code's: current, and listing every metric any module defines."""
from __future__ import annotations

import re
import subprocess

from cityguard.metrics_reference import README, current_readme, metrics
from tests.pipeline_helpers import REPO


def test_readme_metrics_reference_is_current():
    assert README.read_text(encoding="utf-8") == current_readme(), \
        "README metrics reference is stale: run python -m cityguard.metrics_reference --write"


def test_every_metric_the_code_defines_is_in_the_reference():
    sources = subprocess.run(["git", "ls-files", "*.py", ":!tests"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    defined = {name.removesuffix("_total") for path in sources
               for name in re.findall(r'(?:Gauge|Counter|Histogram|Summary)\(\s*"(cityguard_\w+)"',
                                      (REPO / path).read_text(encoding="utf-8"))}
    listed = {name.removesuffix("_total") for name, *_ in metrics()}
    assert defined - listed == set(), "a module defining these is missing from cityguard.metrics_reference.MODULES"
