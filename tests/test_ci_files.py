"""The generated CI files: valid for their provider, locked installs, and every program the suite starts."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import run

BIN = Path(sys.executable).parent
CI_FILES = {
    "github": ".github/workflows/ci.yml",
    "gitlab": ".gitlab-ci.yml",
}
SCHEMAS = {
    "github": "vendor.github-workflows",
    "gitlab": "vendor.gitlab-ci",
}
# How a CI file may provide each program the generated tests start, beside the Redis and PostgreSQL services.
PROVISIONS = {
    "redis-server": [r"apt-get install [^\n]*\bredis-server\b"],
    "redis-cli": [r"apt-get install [^\n]*\bredis-server\b"],  # redis-server's package depends on redis-tools
    "nginx": [r"apt-get install [^\n]*\bnginx(?:-light)?\b"],
    "chromium": [r"apt-get install [^\n]*\bchromium\b", r"playwright install [^\n]*\bchromium\b"],
}
# Where the generated tests name a program they start: `shutil.which("redis-server")`, a command list
# starting with it, or the browser's CHROMIUM_PATH.
PROGRAM_PATTERNS = [
    re.compile(r"shutil\.which\(\s*\"([\w.-]+)\""),
    re.compile(r"Popen\(\s*\[\s*\"([\w.-]+)\""),
    re.compile(r"(?:subprocess\.)?run\(\s*\[\s*\"([\w.-]+)\""),
]


@pytest.fixture(scope="module", params=list(CI_FILES))
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def project(provider: str, cookies_session: Any) -> Path:
    result = cookies_session.bake(extra_context={"ci_provider": provider})
    assert result.exception is None, result.exception
    return Path(result.project_path)


@pytest.fixture(scope="module")
def ci_text(provider: str, project: Path) -> str:
    return (project / CI_FILES[provider]).read_text()


def programs_started_by_tests(project: Path) -> set[str]:
    programs: set[str] = set()
    for path in (project / "tests").rglob("*.py"):
        text = path.read_text()
        for pattern in PROGRAM_PATTERNS:
            programs.update(pattern.findall(text))
        if "CHROMIUM_PATH" in text:
            programs.add("chromium")
    return programs - {"python", sys.executable}


def test_ci_file_matches_its_providers_schema(provider: str, project: Path) -> None:
    checker = [str(BIN / "check-jsonschema"), "--builtin-schema", SCHEMAS[provider]]
    run([*checker, CI_FILES[provider]], project)


def test_github_workflow_passes_actionlint(cookies_session: Any) -> None:
    result = cookies_session.bake(extra_context={"ci_provider": "github"})
    assert result.exception is None, result.exception
    run([str(BIN / "actionlint"), "-no-color", CI_FILES["github"]], Path(result.project_path))


def test_every_install_is_locked(ci_text: str) -> None:
    installs = re.findall(r"\buv (?:sync|run)\b[^\n]*", ci_text)
    assert installs, "the CI file installs nothing with uv"
    assert all("--locked" in install for install in installs), installs
    assert "pip install -e" not in ci_text
    assert not re.search(r"pip install [^\n]*-r ", ci_text)


def test_every_program_the_suite_starts_is_provisioned(project: Path, ci_text: str) -> None:
    programs = programs_started_by_tests(project)
    assert {"redis-server", "chromium"} <= programs, "the scan no longer finds what the tests start"
    unknown = programs - PROVISIONS.keys()
    assert unknown == set(), f"the tests start {sorted(unknown)}: add how CI provides them to PROVISIONS"
    missing = [
        program
        for program in sorted(programs)
        if not any(re.search(pattern, ci_text) for pattern in PROVISIONS[program])
    ]
    assert missing == []


def test_the_services_run_where_the_tests_look(ci_text: str) -> None:
    assert re.search(r"postgres:\d+", ci_text), "no PostgreSQL service"
    assert re.search(r"redis:\d+|apt-get install [^\n]*\bredis-server\b", ci_text), "no Redis server"
    assert "REQUIRE_SERVICES" in ci_text
    urls = dict(re.findall(r"(TEST_(?:REDIS|POSTGRES)_URL): (\S+)", ci_text))
    assert urls.keys() == {"TEST_REDIS_URL", "TEST_POSTGRES_URL"}
