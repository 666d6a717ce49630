"""Bake every supported option set, then check, lint, type-check and test what it generates."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import TEMPLATE_DIR, python_for, run
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
    "acme-gitlab-bsd-py3.13": {
        "project_name": "Acme Realtime",
        "python_version": "3.13",
        "license": "BSD-3-Clause",
        "use_notifications": "n",
        "ci_provider": "gitlab",
    },
    # A package that sorts after the tests' helper modules (`processes`), as `acme_realtime` sorts before.
    "zulu-apache-no-gateway": {
        "project_name": "Zulu Realtime",
        "license": "Apache-2.0",
        "use_gateway": "n",
    },
}

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
    return Bake(options=options, project_dir=Path(result.project_path))


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


def test_ruff_check_is_clean(bake: Bake) -> None:
    python = python_for(bake.option("python_version"), bake.project_dir)
    run([str(python), "-m", "ruff", "check", "--no-cache", "."], bake.project_dir)


def test_ruff_format_is_clean(bake: Bake) -> None:
    python = python_for(bake.option("python_version"), bake.project_dir)
    run([str(python), "-m", "ruff", "format", "--check", "--no-cache", "."], bake.project_dir)


def test_mypy_is_clean(bake: Bake) -> None:
    python = python_for(bake.option("python_version"), bake.project_dir)
    run([str(python), "-m", "mypy"], bake.project_dir)


def test_generated_test_suite_passes(bake: Bake) -> None:
    python = python_for(bake.option("python_version"), bake.project_dir)
    env = {**os.environ, "PYTHONPATH": str(bake.project_dir / "src")}
    # A temporary directory of its own: in the shared /tmp/pytest-of-<user>, each new session deletes all but
    # the newest three, which with several suites at once can be this run's, bakes included.
    basetemp = bake.project_dir.parent / "pytest-tmp"
    command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(basetemp)]
    output = run(command, bake.project_dir, env)
    assert re.search(r"\d+ passed", output), output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"project_slug": "Chat Service"}, "project_slug"),
        ({"package_name": "json"}, "standard-library"),
        ({"package_name": "redis"}, "dependency"),
        ({"package_name": "class"}, "keyword"),
        ({"author_email": "not-an-email"}, "author_email"),
    ],
    ids=["bad-slug", "stdlib-package", "dependency-package", "keyword-package", "bad-email"],
)
def test_invalid_options_fail_with_the_hook_message(
    cookies: Any, capfd: pytest.CaptureFixture[str], options: dict[str, str], message: str
) -> None:
    result = cookies.bake(extra_context=options)
    assert isinstance(result.exception, FailedHookException)
    error_lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("ERROR:")]
    assert len(error_lines) == 1
    assert message in error_lines[0]
