"""The bench's servers start on a free port, and on another one when a process takes theirs first: a server
answering on the port is not taken for the one started there."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from bench import servers
from bench.servers import PortTaken, Server, ServerGroup, free_port


class Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on which this process, not the server under test, answers every readiness check."""
    squatter = ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    thread = threading.Thread(target=squatter.serve_forever, daemon=True)
    thread.start()
    try:
        yield squatter.server_address[1]
    finally:
        squatter.shutdown()
        squatter.server_close()


def test_a_server_whose_port_another_process_answers_on_is_not_ready(taken_port: int, tmp_path: Path) -> None:
    log_path = tmp_path / "sleeper.log"
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    server = Server("sleeper", taken_port, process, log_path)
    try:
        with pytest.raises(PortTaken):
            server.wait_ready("/healthz", timeout=5)
    finally:
        server.stop()


def test_a_server_whose_port_was_taken_starts_again_on_another(
    taken_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([taken_port, free_port()])
    monkeypatch.setattr(servers, "free_port", lambda: next(ports))
    with ServerGroup(tmp_path) as group:
        relay = group.start_uvicorn("relay", "bench.baselines.relay:app", options=[], env={})
        assert relay.port != taken_port
        assert group.servers == [relay]
        assert servers.listens_on(relay.pid, relay.port)
        assert (tmp_path / f"relay-{taken_port}.log").exists()  # it was tried there first
