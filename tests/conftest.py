"""Fixtures for baking the template and running what it generates."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
VENVS_DIR = TEMPLATE_DIR / "build" / "venvs"
UV = Path(sys.executable).parent / "uv"


def load_hook(name: str) -> ModuleType:
    """Import a hook module by path: hooks are scripts, not a package."""
    spec = importlib.util.spec_from_file_location(name, TEMPLATE_DIR / "hooks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATED_SUITE_TEST = "test_generated_test_suite_passes"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put two generated suites (minutes each) at the head of each half of the run, the quick tests after.

    With `-n 2 --dist worksteal` (CI) each worker starts on one half, so both run suites from the start,
    the longest (defaults) beside the shortest (minimal), and steal the quick tests at the end.
    """
    suites = [item for item in items if getattr(item, "originalname", "") == GENERATED_SUITE_TEST]
    quick = [item for item in items if getattr(item, "originalname", "") != GENERATED_SUITE_TEST]
    first_half = suites[::3]
    second_half = [suite for suite in suites if suite not in first_half]
    split = max(len(items) // 2 - len(first_half), 0)
    items[:] = first_half + quick[:split] + second_half + quick[split:]


@pytest.fixture(scope="session")
def template_dir() -> Path:
    return TEMPLATE_DIR


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """Run a command; fail the test with its output when it exits non-zero."""
    result = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode} in {cwd}:\n{output[-20000:]}")
    return output


def runs(interpreter: str | None) -> bool:
    if not interpreter:
        return False
    return subprocess.run([interpreter, "-c", "pass"], capture_output=True, check=False).returncode == 0


def find_interpreter(python_version: str) -> str:
    """A working Python X.Y for uv to build a bake's environment with.

    One on PATH, else one of pyenv's (active or not: uv gives up on a pyenv shim of an inactive version),
    else one uv installed or installs now. Only a machine where none of these works fails, saying how to
    get one.
    """
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{python_version}")]
    pattern = f"versions/{python_version}.*/bin/python{python_version}"
    candidates += sorted(str(path) for path in pyenv_root.glob(pattern))
    for candidate in candidates:
        if candidate and runs(candidate):
            return candidate
    find = [str(UV), "python", "find", "--managed-python", python_version]
    found = subprocess.run(find, capture_output=True, text=True, check=False)
    if found.returncode != 0:
        install = [str(UV), "python", "install", python_version]
        installed = subprocess.run(install, capture_output=True, text=True, check=False)
        found = subprocess.run(find, capture_output=True, text=True, check=False)
        if found.returncode != 0:
            reason = (installed.stderr.strip().splitlines() or ["no reason given"])[-1]
            pytest.fail(
                f"Python {python_version} is needed to test the bakes that choose it, and none was found on "
                f"PATH, in pyenv or among uv's, nor could uv install one ({reason}). Install it with "
                f"`{UV} python install {python_version}` or `pyenv install {python_version}`."
            )
    return found.stdout.strip()


def locked_environment(name: str, python_version: str, project_dir: Path) -> Path:
    """The interpreter of a bake's virtual environment, synced from the bake's own uv.lock (`--locked`).

    One environment per option set and test worker in build/venvs, kept between runs, so that no sync ever
    changes an environment another worker is using; uv's cache is shared, so a sync links or copies what an
    earlier one downloaded. The project itself is not installed but run from its `src` (`PYTHONPATH`).
    """
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    venv = VENVS_DIR / f"{name}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    interpreter = find_interpreter(python_version)
    sync = [str(UV), "sync", "--locked", "--no-install-project", "--quiet", "--python", interpreter]
    run(sync, project_dir, env)
    return venv / "bin" / "python"
