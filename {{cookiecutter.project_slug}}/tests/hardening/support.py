"""What the hardening tests share: app instances on their own database, users signed in over HTTP, and the
memory a process holds."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..app.support import PASSWORD, create_tables
from ..app.ws_support import instance_env
from ..processes import ProcessGroup, ServerProcess

HTTP_TIMEOUT = 10.0


@dataclass
class Instance:
    """An app process, its environment, and the access tokens of the users registered on it (`root` is a
    superuser)."""

    server: ServerProcess
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def ws(self, path: str) -> str:
        return self.server.ws_url + path

    def headers(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[username]}"}


def sign_in(http: httpx.Client, username: str, *, register: bool = True) -> str:
    """The access token of `username`, registered first unless told otherwise."""
    if register:
        registered = http.post("/auth/register", json={"username": username, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
    response = http.post("/auth/token", data={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def create_room(http: httpx.Client, token: str, name: str, *, private: bool = False) -> None:
    response = http.post(
        "/rooms",
        json={"name": name, "title": name.title(), "is_private": private},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text


def start_sqlite_instance(
    group: ProcessGroup, directory: Path, name: str, users: Iterable[str] = (), **settings: str
) -> Instance:
    """An app process on a new SQLite file and the memory broker, with `settings` in its environment and
    `users` registered and signed in, and `root` signed in."""
    database_url = f"sqlite+aiosqlite:///{directory / f'{name}.db'}"
    asyncio.run(create_tables(database_url))
    env = instance_env(database_url, "memory://", f"hardening-{secrets.token_hex(4)}", **settings)
    instance = Instance(group.start_app(name, env=env), env)
    with httpx.Client(base_url=instance.base_url, timeout=HTTP_TIMEOUT) as http:
        instance.tokens["root"] = sign_in(http, "root", register=False)
        for username in users:
            instance.tokens[username] = sign_in(http, username)
    return instance


def resident_bytes(pid: int) -> int:
    """The resident memory of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmRSS for process {pid}")
