"""Unit tests of the generation hooks, imported as modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_hook

pre_gen = load_hook("pre_gen_project")
post_gen = load_hook("post_gen_project")

VALID = {
    "project_slug": "chat-service",
    "package_name": "chat_service",
    "author_email": "jane@example.com",
    "python_version": "3.11",
    "license": "MIT",
    "ci_provider": "github",
    "use_gateway": "y",
    "use_notifications": "y",
    "use_docker": "y",
}


def test_valid_options_pass() -> None:
    pre_gen.validate(VALID)


@pytest.mark.parametrize("slug", ["chat-service", "a", "svc2", "my-chat-2"])
def test_slug_accepted(slug: str) -> None:
    pre_gen.validate_slug(slug)


@pytest.mark.parametrize(
    "slug", ["", "Chat", "2chat", "chat--service", "chat_service", "-chat", "chat-", "ch at"]
)
def test_slug_rejected(slug: str) -> None:
    with pytest.raises(pre_gen.InvalidOption, match="project_slug"):
        pre_gen.validate_slug(slug)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Chat", "lowercase Python identifier"),
        ("chat-service", "lowercase Python identifier"),
        ("1chat", "lowercase Python identifier"),
        ("class", "keyword"),
        ("match", "keyword"),
        ("json", "standard-library"),
        ("asyncio", "standard-library"),
        ("redis", "dependency"),
        ("fastapi", "dependency"),
        ("jose", "dependency"),
        ("rich", "dependency"),
        ("test", "regression-test"),
        ("tests", "test package"),
        ("bench", "benchmark"),
    ],
)
def test_package_name_rejected(name: str, reason: str) -> None:
    with pytest.raises(pre_gen.InvalidOption, match=reason):
        pre_gen.validate_package_name(name)


@pytest.mark.parametrize("name", ["app", "api", "server", "realtime", "processes", "gateway", "chat", "ops"])
def test_common_package_names_accepted(name: str) -> None:
    pre_gen.validate_package_name(name)


@pytest.mark.parametrize("email", ["jane", "jane@", "@example.com", "jane@example", "ja ne@example.com"])
def test_email_rejected(email: str) -> None:
    with pytest.raises(pre_gen.InvalidOption, match="author_email"):
        pre_gen.validate_email(email)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("python_version", "3.10"),
        ("license", "GPL"),
        ("ci_provider", "jenkins"),
        ("use_gateway", "yes"),
        ("use_docker", "Y"),
    ],
)
def test_unsupported_choice_rejected(option: str, value: str) -> None:
    with pytest.raises(pre_gen.InvalidOption, match=option):
        pre_gen.validate({**VALID, option: value})


def options(**overrides: str) -> dict[str, str]:
    return {
        "package_name": "chat_service",
        "use_gateway": "y",
        "use_notifications": "y",
        "use_docker": "y",
        "ci_provider": "github",
        **overrides,
    }


def test_everything_chosen_removes_only_other_ci() -> None:
    assert post_gen.paths_to_remove(options()) == [".gitlab-ci.yml"]


def test_nothing_chosen_removes_every_optional_part() -> None:
    removed = post_gen.paths_to_remove(
        options(use_gateway="n", use_notifications="n", use_docker="n", ci_provider="none")
    )
    assert removed == [
        "src/chat_service/gateway",
        "tests/gateway",
        "tests/e2e",
        "src/chat_service/consumers/notifications.py",
        "src/chat_service/routers/notifications.py",
        "src/chat_service/static/js/notifications.js",
        "tests/app/test_notifications.py",
        "tests/hardening/test_subscription_limits.py",
        "Dockerfile",
        ".dockerignore",
        "docker-compose.yml",
        ".github",
        ".gitlab-ci.yml",
    ]


def test_paths_use_the_package_name() -> None:
    assert "src/acme/gateway" in post_gen.paths_to_remove(options(package_name="acme", use_gateway="n"))


def test_remove_paths_deletes_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "inner.py").write_text("")
    (tmp_path / "file.txt").write_text("")
    (tmp_path / "kept.txt").write_text("")
    post_gen.remove_paths(tmp_path, ["gone", "file.txt", "never-existed"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept.txt"]
