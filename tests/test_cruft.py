"""A project created with cruft records the template and its options, so it can be updated later."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import TEMPLATE_DIR, run


def test_cruft_create_records_the_options(tmp_path: Path) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=TEMPLATE_DIR, capture_output=True, text=True, check=True
    ).stdout.strip()
    cruft = Path(sys.executable).parent / "cruft"
    run(
        [
            str(cruft),
            "create",
            str(TEMPLATE_DIR),
            "--no-input",
            "--output-dir",
            str(tmp_path),
            "--extra-context",
            json.dumps({"project_name": "Orders Realtime", "use_gateway": "n"}),
        ],
        tmp_path,
    )
    record = json.loads((tmp_path / "orders-realtime" / ".cruft.json").read_text())
    assert record["commit"] == head
    context = record["context"]["cookiecutter"]
    assert context["project_slug"] == "orders-realtime"
    assert context["package_name"] == "orders_realtime"
    assert context["use_gateway"] == "n"
    for option in ("python_version", "license", "use_notifications", "use_docker", "ci_provider"):
        assert option in context
    assert not (tmp_path / "orders-realtime" / "src" / "orders_realtime" / "gateway").exists()
