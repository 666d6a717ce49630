"""Bake every supported option set, then check, lint, type-check and test what it generates."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from conftest import TEMPLATE_DIR, UV, find_interpreter, load_hook, locked_environment, run
from cookiecutter.exceptions import FailedHookException

# Together these sets take every value of every option at least once.
OPTION_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "minimal-py3.12-proprietary": {
        "python_version": "3.12",
        "license": "Proprietary",
        "use_gateway": "n",
        "use_notifications": "n",
        "use_docker": "n",
        "ci_provider": "none",
    },
    # The most common package names of FastAPI services: no test helper package (`tests/app`) may shadow them.
    "server-gitlab-bsd-py3.13": {
        "project_name": "Server",
        "python_version": "3.13",
        "license": "BSD-3-Clause",
        "use_notifications": "n",
        "ci_provider": "gitlab",
    },
    "app-apache-no-gateway": {
        "project_name": "App",
        "license": "Apache-2.0",
        "use_gateway": "n",
    },
}

# The bake whose suite runs whole. The others leave out its `heavy` tests (fault-injection and load runs of
# tens of seconds each, through code that no option changes), which keeps `make test` within 25 minutes on
# two cores.
FULL_SUITE_BAKE = "defaults"

DEFAULTS: dict[str, Any] = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
# Jinja tags as people write them; Python's `{ratio:.1%}` format spec is not one.
LEFTOVER_MARKERS = re.compile(r"\{\{-?\s*cookiecutter|\{%-?\s|\s-?%\}|\{#-?\s")
LICENSE_FIRST_WORDS = {
    "MIT": "MIT License",
    "BSD-3-Clause": "BSD 3-Clause License",
    "Apache-2.0": "Apache License",
    "Proprietary": "Copyright",
}


@dataclass(frozen=True)
class Bake:
    name: str
    options: dict[str, str]
    project_dir: Path

    def option(self, name: str) -> str:
        default = DEFAULTS[name]
        return self.options.get(name, default[0] if isinstance(default, list) else default)

    @property
    def package_dir(self) -> Path:
        return self.project_dir / "src" / self.project_dir.name.replace("-", "_")


@pytest.fixture(scope="module", params=list(OPTION_SETS))
def bake(request: pytest.FixtureRequest, cookies_session: Any) -> Bake:
    options = OPTION_SETS[request.param]
    result = cookies_session.bake(extra_context=options)
    assert result.exception is None, result.exception
    assert result.exit_code == 0
    return Bake(name=request.param, options=options, project_dir=Path(result.project_path))


@pytest.fixture(scope="module")
def python(bake: Bake) -> Path:
    """An interpreter with the bake's dependencies, installed from its uv.lock by `uv sync --locked`."""
    return locked_environment(bake.name, bake.option("python_version"), bake.project_dir)


def text_files(root: Path) -> list[Path]:
    return [path for path in sorted(root.rglob("*")) if path.is_file() and "__pycache__" not in path.parts]


def test_project_directory_is_named_after_the_slug(bake: Bake) -> None:
    expected = bake.options.get("project_name", "Chat Service").lower().replace(" ", "-")
    assert bake.project_dir.name == expected
    assert bake.package_dir.is_dir()


def test_no_template_markers_are_left(bake: Bake) -> None:
    leftovers = [
        str(path.relative_to(bake.project_dir))
        for path in text_files(bake.project_dir)
        if LEFTOVER_MARKERS.search(path.read_text(errors="replace"))
    ]
    assert leftovers == []


def test_optional_parts_follow_the_options(bake: Bake) -> None:
    project, package = bake.project_dir, bake.package_dir
    assert (package / "gateway").exists() == (bake.option("use_gateway") == "y")
    assert (package / "consumers" / "notifications.py").exists() == (bake.option("use_notifications") == "y")
    assert (project / "docker-compose.yml").exists() == (bake.option("use_docker") == "y")
    assert (project / "Dockerfile").exists() == (bake.option("use_docker") == "y")
    assert (project / ".github" / "workflows" / "ci.yml").exists() == (bake.option("ci_provider") == "github")
    assert (project / ".gitlab-ci.yml").exists() == (bake.option("ci_provider") == "gitlab")


# What a bake without an option must not mention in its README, description or browser client.
PRUNED_MENTIONS: dict[str, re.Pattern[str]] = {
    "use_gateway": re.compile(r"\bgateway\b|GATEWAY_", re.IGNORECASE),
    "use_notifications": re.compile(r"notification", re.IGNORECASE),
    "use_docker": re.compile(r"Dockerfile|docker-compose\.yml|\.dockerignore|docker compose up"),
}


def test_no_text_or_request_about_a_pruned_part(bake: Bake) -> None:
    readme = (bake.project_dir / "README.md").read_text()
    description = bake.project_dir.joinpath("pyproject.toml").read_text().split("description = ", 1)[1]
    client = "\n".join(path.read_text() for path in sorted((bake.package_dir / "static").rglob("*.*")))
    for option, mention in PRUNED_MENTIONS.items():
        if bake.option(option) == "n":
            assert not mention.findall(readme), (option, mention.findall(readme))
            assert not mention.search(description.splitlines()[0]), option
    options = {**DEFAULTS, **bake.options, "package_name": bake.package_dir.name}
    for removed in load_hook("post_gen_project").paths_to_remove(options):
        name = Path(removed).name
        assert name not in readme, f"README names {removed}, which this bake leaves out"
        if Path(name).suffix:
            # The client may name a module it loads only where the server offers it (see static/js/app.js).
            loaded_on_offer = f'import("./{name}")'
            assert client.count(name) == client.count(loaded_on_offer), f"the client names {removed}"


def test_license_follows_the_option(bake: Bake) -> None:
    license_text = (bake.project_dir / "LICENSE").read_text()
    assert license_text.lstrip().startswith(LICENSE_FIRST_WORDS[bake.option("license")])
    pyproject = (bake.project_dir / "pyproject.toml").read_text()
    if bake.option("license") == "Proprietary":
        assert "license =" not in pyproject
    else:
        assert f'license = "{bake.option("license")}"' in pyproject


def test_python_version_is_applied(bake: Bake) -> None:
    version = bake.option("python_version")
    pyproject = (bake.project_dir / "pyproject.toml").read_text()
    assert f'requires-python = ">={version}"' in pyproject
    assert f'target-version = "py{version.replace(".", "")}"' in pyproject
    assert (bake.project_dir / ".python-version").read_text() == f"{version}\n"
    assert f'requires-python = ">={version}"' in (bake.project_dir / "uv.lock").read_text()


def test_lock_is_current(bake: Bake) -> None:
    """The bake's uv.lock satisfies its pyproject.toml as rendered: `uv sync --locked` will accept it."""
    interpreter = find_interpreter(bake.option("python_version"))
    run([str(UV), "lock", "--check", "--python", interpreter], bake.project_dir)


def test_hook_refuses_the_name_of_every_installed_module(bake: Bake, python: Path) -> None:
    """A package named like a module the lock installs would shadow it: the pre-generation hook knows each
    (those with a standard library name, such as the stray `venv/` folder of fastapi-distributed-websocket's
    wheel, it refuses as such)."""
    listing = "from importlib.metadata import packages_distributions as p; print(*p(), sep='\\n')"
    installed = {
        name
        for name in run([str(python), "-c", listing], TEMPLATE_DIR).split()
        if name.isidentifier() and name.islower() and not name.startswith("_")
    }
    assert installed - load_hook("pre_gen_project").DEPENDENCY_MODULES - sys.stdlib_module_names == set()


def test_ruff_check_is_clean(bake: Bake, python: Path) -> None:
    run([str(python), "-m", "ruff", "check", "--no-cache", "."], bake.project_dir)


def test_ruff_format_is_clean(bake: Bake, python: Path) -> None:
    run([str(python), "-m", "ruff", "format", "--check", "--no-cache", "."], bake.project_dir)


def test_mypy_is_clean(bake: Bake, python: Path) -> None:
    run([str(python), "-m", "mypy"], bake.project_dir)


def failures_first(junit_xml: Path) -> str:
    """The failing tests of a run, one a line with the first line of why, from pytest's JUnit XML report."""
    if not junit_xml.exists():
        return "(no JUnit report: pytest stopped before it ran the tests)"
    lines = []
    for case in ElementTree.parse(junit_xml).iter("testcase"):
        for outcome in (*case.iter("failure"), *case.iter("error")):
            why = (outcome.get("message") or outcome.text or "").strip().splitlines()
            lines.append(f"{case.get('classname')}::{case.get('name')} - {why[0] if why else outcome.tag}")
    return "\n".join(lines)


def test_generated_test_suite_passes(bake: Bake, python: Path) -> None:
    # A temporary directory of its own: in the shared /tmp/pytest-of-<user>, each new session deletes all but
    # the newest three, which with several suites at once can be this run's, bakes included.
    basetemp = bake.project_dir.parent / "pytest-tmp"
    junit_xml = bake.project_dir.parent / "junit.xml"
    command = [str(python), "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider"]
    if bake.name != FULL_SUITE_BAKE:
        command += ["-m", "not heavy"]
    result = subprocess.run(
        [*command, "--basetemp", str(basetemp), f"--junitxml={junit_xml}"],
        cwd=bake.project_dir,
        env={**os.environ, "PYTHONPATH": str(bake.project_dir / "src")},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(
            f"The generated suite of {bake.name} exited {result.returncode}. Failing tests:\n"
            f"{failures_first(junit_xml)}\n\nThe end of its output:\n{output[-20000:]}"
        )
    assert re.search(r"\d+ passed", output), output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"project_slug": "Chat Service"}, "project_slug"),
        ({"package_name": "json"}, "standard-library"),
        ({"package_name": "redis"}, "dependency"),
        ({"package_name": "class"}, "keyword"),
        ({"author_email": "not-an-email"}, "author_email"),
        ({"project_name": "Test"}, "regression-test"),
    ],
    ids=["bad-slug", "stdlib-package", "dependency-package", "keyword-package", "bad-email", "test-package"],
)
def test_invalid_options_fail_with_the_hook_message(
    cookies: Any, capfd: pytest.CaptureFixture[str], options: dict[str, str], message: str
) -> None:
    result = cookies.bake(extra_context=options)
    assert isinstance(result.exception, FailedHookException)
    error_lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("ERROR:")]
    assert len(error_lines) == 1
    assert message in error_lines[0]
