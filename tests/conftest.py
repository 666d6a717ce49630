"""Fixtures for baking the template and running what it generates."""

from __future__ import annotations

import fcntl
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


def find_interpreter(python_version: str) -> str:
    """A working `pythonX.Y`: from PATH, else from a pyenv installation whose shim is not enabled."""
    candidates = [shutil.which(f"python{python_version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(
        str(path) for path in pyenv_root.glob(f"versions/{python_version}.*/bin/python{python_version}")
    )
    for candidate in candidates:
        if (
            candidate
            and subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0
        ):
            return candidate
    pytest.fail(f"Python {python_version} is needed to test bakes that choose it, and none was found")


def python_for(python_version: str, project_dir: Path) -> Path:
    """The interpreter of a virtual environment holding a generated project's dependencies.

    There is one environment per Python version; every bake of that version shares it and runs with
    `PYTHONPATH=src`, so the matrix installs once. A file lock keeps parallel test workers from building
    the same environment at once.
    """
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    venv = VENVS_DIR / f"py{python_version}"
    python = venv / "bin" / "python"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    with (VENVS_DIR / f"py{python_version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not python.exists():
            interpreter = find_interpreter(python_version)
            run([str(UV), "venv", "--quiet", "--python", interpreter, str(venv)], TEMPLATE_DIR, env)
        install = [str(UV), "pip", "install", "--quiet", "--python", str(python)]
        run([*install, "-r", str(project_dir / "pyproject.toml"), "--extra", "dev"], TEMPLATE_DIR, env)
    return python
