"""Remove the files of options that were not chosen.

Deterministic and offline: no network, no `git init`, no secrets written. Paths are relative to the
generated project; `{package}` stands for the package directory name.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

GATEWAY_PATHS = (
    "src/{package}/gateway",
    "tests/gateway",
    "tests/e2e",
)
NOTIFICATIONS_PATHS = (
    "src/{package}/consumers/notifications.py",
    "src/{package}/routers/notifications.py",
    "src/{package}/static/js/notifications.js",
    "tests/app/test_notifications.py",
    "tests/hardening/test_subscription_limits.py",
)
DOCKER_PATHS = (
    "Dockerfile",
    ".dockerignore",
    "docker-compose.yml",
)
CI_PATHS = {
    "github": (".github",),
    "gitlab": (".gitlab-ci.yml",),
}


def paths_to_remove(options: dict[str, str]) -> list[str]:
    """The project-relative paths that the chosen options leave out, in a stable order."""
    package = options["package_name"]
    unwanted: list[str] = []
    if options["use_gateway"] == "n":
        unwanted += GATEWAY_PATHS
    if options["use_notifications"] == "n":
        unwanted += NOTIFICATIONS_PATHS
    if options["use_docker"] == "n":
        unwanted += DOCKER_PATHS
    for provider, paths in CI_PATHS.items():
        if options["ci_provider"] != provider:
            unwanted += paths
    return [path.format(package=package) for path in unwanted]


def remove_paths(project_dir: Path, paths: list[str]) -> None:
    for relative in paths:
        target = project_dir / relative
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def main() -> int:
    options = {
        "package_name": "{{ cookiecutter.package_name }}",
        "use_gateway": "{{ cookiecutter.use_gateway }}",
        "use_notifications": "{{ cookiecutter.use_notifications }}",
        "use_docker": "{{ cookiecutter.use_docker }}",
        "ci_provider": "{{ cookiecutter.ci_provider }}",
    }
    remove_paths(Path.cwd(), paths_to_remove(options))
    return 0


if __name__ == "__main__":
    sys.exit(main())
