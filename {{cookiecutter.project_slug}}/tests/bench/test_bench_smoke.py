"""The benchmark's quick mode: every scenario runs end to end, and every message is accounted for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.scenarios import SCENARIOS as ALL_SCENARIOS

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

PROJECT_DIR = Path(__file__).resolve().parents[2]
# Every scenario, those through a proxy and those left out of a default run included; `nginx` where
# nginx is installed.
SCENARIOS = {name for name, scenario in ALL_SCENARIOS.items() if scenario.available}
RUN_TIMEOUT = 300


def test_quick_run_measures_every_scenario_and_accounts_for_every_message(
    redis_url: str, postgres_database_url: str
) -> None:
    command = [sys.executable, "-m", "bench", "--quick", "--scenarios", ",".join(sorted(SCENARIOS))]
    command += ["--redis-url", redis_url]
    command += ["--postgres-url", postgres_database_url]
    result = subprocess.run(
        command, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    assert result.returncode == 0, result.stderr[-5000:]

    runs = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted((run["scenario"], run["mode"]) for run in runs) == sorted(
        (scenario, mode) for scenario in SCENARIOS for mode in ("flat", "paced")
    )
    for run in runs:
        assert run["expected"] == run["clients"] * run["messages"]
        assert run["delivered"] + run["lost"] == run["expected"]
        assert 0 < run["delivered"] <= run["expected"]
        assert run["duplicates"] == 0
    assert "deliveries/s" in result.stderr  # the table
