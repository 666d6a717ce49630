"""Validate the chosen options before anything is generated.

Every check is a plain function so that the template's tests can import and call it.
"""

from __future__ import annotations

import keyword
import re
import sys

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PACKAGE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")

# Top-level modules of everything the generated project's uv.lock installs (the development tools too): a
# package of the same name would shadow one. `tests/test_bake.py` checks this against a locked environment.
DEPENDENCY_MODULES = frozenset(
    {
        "aiofastnet",
        "aiosqlite",
        "alembic",
        "annotated_doc",
        "annotated_types",
        "anyio",
        "argon2",
        "asgi_lifespan",
        "ast_serialize",
        "asyncpg",
        "attr",
        "attrs",
        "bcrypt",
        "certifi",
        "cffi",
        "charset_normalizer",
        "click",
        "cryptography",
        "distributed_websocket",
        "dotenv",
        "ecdsa",
        "execnet",
        "fastapi",
        "fastapi_offline",
        "graphql",
        "greenlet",
        "h11",
        "harfile",
        "httpcore",
        "httptools",
        "httpx",
        "hypothesis",
        "hypothesis_graphql",
        "idna",
        "iniconfig",
        "jose",
        "jsonschema",
        "jsonschema_rs",
        "jsonschema_specifications",
        "librt",
        "mako",
        "markdown_it",
        "markupsafe",
        "mdurl",
        "multidict",
        "multipart",
        "mypy",
        "mypy_extensions",
        "mypyc",
        "opentelemetry",
        "orjson",
        "packaging",
        "passlib",
        "pathspec",
        "picows",
        "playwright",
        "pluggy",
        "prometheus_client",
        "py",
        "pyasn1",
        "pycparser",
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
        "pygments",
        "pyrate_limiter",
        "pytest",
        "pytest_asyncio",
        "python_multipart",
        "python_socks",
        "redis",
        "referencing",
        "requests",
        "rich",
        "rpds",
        "rsa",
        "ruff",
        "schemathesis",
        "six",
        "sniffio",
        "sortedcontainers",
        "sqlalchemy",
        "starlette",
        "typing_extensions",
        "typing_inspection",
        "urllib3",
        "uvicorn",
        "uvloop",
        "watchfiles",
        "websockets",
        "werkzeug",
        "xdist",
        "yaml",
    }
)
# Other top-level packages a generated project imports, with what they are.
RESERVED_MODULES = {
    "bench": "the generated project's benchmark package",
    "tests": "the generated project's test package",
    "test": "the standard library's regression-test package",  # not in sys.stdlib_module_names
}

SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")
LICENSES = ("MIT", "BSD-3-Clause", "Apache-2.0", "Proprietary")
CI_PROVIDERS = ("github", "gitlab", "none")


class InvalidOption(ValueError):
    """An option value the template cannot generate a working project from."""


def validate_slug(slug: str) -> None:
    if not SLUG_PATTERN.match(slug):
        raise InvalidOption(
            f"project_slug {slug!r} is invalid: use lowercase letters, digits and single hyphens, "
            "starting with a letter (e.g. 'chat-service')"
        )


def validate_package_name(name: str) -> None:
    if not PACKAGE_PATTERN.match(name):
        raise InvalidOption(
            f"package_name {name!r} is invalid: use a lowercase Python identifier (letters, digits, "
            "underscores, starting with a letter)"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise InvalidOption(f"package_name {name!r} is a Python keyword")
    if name in sys.stdlib_module_names:
        raise InvalidOption(f"package_name {name!r} shadows the standard-library module of that name")
    if name in DEPENDENCY_MODULES:
        raise InvalidOption(f"package_name {name!r} shadows the dependency module of that name")
    if name in RESERVED_MODULES:
        raise InvalidOption(f"package_name {name!r} would shadow {RESERVED_MODULES[name]}")


def validate_email(email: str) -> None:
    if not EMAIL_PATTERN.match(email):
        raise InvalidOption(f"author_email {email!r} is not a valid e-mail address")


def validate_choice(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidOption(f"{option} {value!r} is not supported: choose one of {', '.join(allowed)}")


def validate_yes_no(option: str, value: str) -> None:
    validate_choice(option, value, ("y", "n"))


def validate(options: dict[str, str]) -> None:
    validate_slug(options["project_slug"])
    validate_package_name(options["package_name"])
    validate_email(options["author_email"])
    validate_choice("python_version", options["python_version"], SUPPORTED_PYTHONS)
    validate_choice("license", options["license"], LICENSES)
    validate_choice("ci_provider", options["ci_provider"], CI_PROVIDERS)
    for flag in ("use_gateway", "use_notifications", "use_docker"):
        validate_yes_no(flag, options[flag])


def main() -> int:
    options = {
        "project_slug": "{{ cookiecutter.project_slug }}",
        "package_name": "{{ cookiecutter.package_name }}",
        "author_email": "{{ cookiecutter.author_email }}",
        "python_version": "{{ cookiecutter.python_version }}",
        "license": "{{ cookiecutter.license }}",
        "ci_provider": "{{ cookiecutter.ci_provider }}",
        "use_gateway": "{{ cookiecutter.use_gateway }}",
        "use_notifications": "{{ cookiecutter.use_notifications }}",
        "use_docker": "{{ cookiecutter.use_docker }}",
    }
    try:
        validate(options)
    except InvalidOption as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
