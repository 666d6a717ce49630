"""The gateway loads only the part of the engine it uses: the WebSocket proxy."""

from __future__ import annotations

import json
import subprocess
import sys

import {{ cookiecutter.package_name }}

PACKAGE = {{ cookiecutter.package_name }}.__name__
LOADED_PARTS = f"""
import json, sys
import {PACKAGE}.gateway
print(json.dumps(sorted(name for name in sys.modules if name.startswith("{PACKAGE}."))))
"""


def test_importing_the_gateway_loads_only_the_proxy_of_the_engine() -> None:
    run = subprocess.run([sys.executable, "-c", LOADED_PARTS], capture_output=True, text=True, check=True)
    loaded = json.loads(run.stdout)
    engine = [name for name in loaded if name.startswith(f"{PACKAGE}.realtime")]
    assert engine == [f"{PACKAGE}.realtime", f"{PACKAGE}.realtime.proxy"]
    app_parts = {"db", "security", "consumers", "routers", "deps", "main"}
    assert not [name for name in loaded if name.split(".")[1] in app_parts]
