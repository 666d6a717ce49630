"""Every operation of the OpenAPI document, called by schemathesis with valid and invalid requests on a real
process, as a superuser so that the protected routes run to the end (logging out as another user, so that
the superuser's token stays valid): none answers with a server error.

The document is the app's own, built without starting it, so that each operation is a test of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from ..processes import ProcessGroup
from .support import Instance, create_room, sign_in, start_sqlite_instance

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 25

schema = schemathesis.openapi.from_dict(create_app(Settings(_env_file=None)).openapi())


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    directory = tmp_path_factory.mktemp("openapi")
    with ProcessGroup(directory) as group:
        instance = start_sqlite_instance(group, directory, "described", users=["alice"])
        with httpx.Client(base_url=instance.base_url, timeout=10) as http:
            create_room(http, instance.tokens["root"], "lobby")
        yield instance


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_server_error(case: schemathesis.Case[Any], instance: Instance) -> None:
    headers = instance.headers("root")
    if case.path == "/auth/logout":  # revokes the caller's tokens: alice's, signed in again each time
        with httpx.Client(base_url=instance.base_url, timeout=10) as http:
            headers = {"Authorization": f"Bearer {sign_in(http, 'alice', register=False)}"}
    case.call_and_validate(
        base_url=instance.base_url, headers=headers, checks=[not_a_server_error], timeout=10
    )
