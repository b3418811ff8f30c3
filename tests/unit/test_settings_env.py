"""`grctl.settings`: the one reader of the GRCTL_* environment variables (issue 25)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from grctl import settings
from grctl.errors import InvalidArgumentError

PACKAGE = Path(__file__).resolve().parents[2] / "grctl"


@pytest.mark.parametrize(("raw", "seconds"), [(None, 0.0), ("0", 0.0), ("2.5", 0.0025), ("40", 0.04)])
def test_the_commit_linger_is_milliseconds_from_the_environment(raw: str | None, seconds: float) -> None:
    env = {} if raw is None else {"GRCTL_COMMIT_LINGER_MS": raw}
    assert settings.commit_linger_s(env) == seconds


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "", "1ms"])
def test_a_commit_linger_that_is_not_a_number_of_ms_is_named(raw: str) -> None:
    with pytest.raises(ValueError, match=f"GRCTL_COMMIT_LINGER_MS must be a number of milliseconds >= 0.*{raw!r}"):
        settings.commit_linger_s({"GRCTL_COMMIT_LINGER_MS": raw})
    with pytest.raises(InvalidArgumentError) as info:
        settings.commit_linger_s({"GRCTL_COMMIT_LINGER_MS": raw})
    assert info.value.argument == "GRCTL_COMMIT_LINGER_MS"


def test_the_commit_linger_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRCTL_COMMIT_LINGER_MS", "5")
    assert math.isclose(settings.commit_linger_s(), 0.005)
    monkeypatch.delenv("GRCTL_COMMIT_LINGER_MS")
    assert settings.commit_linger_s() == 0.0


def test_the_schema_registry_url_is_stripped_and_blank_is_none() -> None:
    assert settings.schema_registry_url({}) is None
    assert settings.schema_registry_url({"GRCTL_SCHEMA_REGISTRY_URL": "  "}) is None
    url = " http://127.0.0.1:8081/apis/ccompat/v7 "
    assert settings.schema_registry_url({"GRCTL_SCHEMA_REGISTRY_URL": url}) == url.strip()


def test_the_dev_variables() -> None:
    assert (settings.dev_home({}), settings.dev_kafka_heap_opts({}), settings.dev_maven_settings({})) == (None,) * 3
    env = {
        "GRCTL_DEV_HOME": "/tmp/grctl-dev",
        "GRCTL_DEV_KAFKA_HEAP_OPTS": "-Xmx1g",
        "GRCTL_DEV_MAVEN_SETTINGS": "/etc/mvn.xml",
    }
    assert settings.dev_home(env) == "/tmp/grctl-dev"
    assert settings.dev_kafka_heap_opts(env) == "-Xmx1g"
    assert settings.dev_maven_settings(env) == "/etc/mvn.xml"
    assert settings.dev_home({"GRCTL_DEV_HOME": ""}) is None


def environment_reads(path: Path) -> list[str]:
    """The GRCTL_* names a module passes to os.environ / os.getenv, and reads of a name it cannot see."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func
            reads_env = (target.attr in ("get", "__getitem__") and ast.unparse(target.value) == "os.environ") or (
                ast.unparse(target) == "os.getenv"
            )
            if reads_env and node.args:
                name = node.args[0]
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    if name.value.startswith("GRCTL_"):
                        found.append(name.value)
                else:
                    found.append(ast.unparse(name))
        elif (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)
            and str(node.slice.value).startswith("GRCTL_")
        ):
            found.append(str(node.slice.value))
    return found


def test_only_settings_reads_grctl_variables() -> None:
    readers = {
        str(path.relative_to(PACKAGE)): names
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "settings.py" and (names := environment_reads(path))
    }
    assert not readers, f"modules reading GRCTL_* variables besides grctl/settings.py: {readers}"
