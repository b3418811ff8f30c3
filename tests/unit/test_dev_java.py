"""`grctl.dev.java`: which Java runtimes the local Kafka and schema registry find, and in what order.

The runtimes are small scripts that answer ``-version`` as a JDK does, in folders laid out like
``/usr/lib/jvm``: no vendor's path is known to the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grctl.dev import java
from grctl.dev.registry import DISTRIBUTIONS, choose_runtime


def fake_java(folder: Path, version: str) -> str:
    """``<folder>/bin/java`` printing `version` as ``java -version`` does (on stderr)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    path = bin_dir / "java"
    path.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2026-01-20' >&2\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine whose PATH holds nothing but what a test puts in ``<tmp>/path``."""
    (tmp_path / "path").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return tmp_path


def test_installed_runtimes_come_newest_first_between_java_home_and_path(machine: Path) -> None:
    jvm = machine / "jvm"
    j17 = fake_java(jvm / "java-17-openjdk-amd64", "17.0.15")
    j25 = fake_java(jvm / "some-vendor-25-jdk", "25.0.3")
    j21 = fake_java(jvm / "zulu21", "21.0.7")
    (jvm / "not-a-runtime").mkdir()
    home = fake_java(machine / "home-jdk", "17.0.2")
    on_path = fake_java(machine / "elsewhere", "11.0.22")
    (machine / "path" / "java").symlink_to(on_path)
    found = java.find_javas(jvm, {"JAVA_HOME": str(machine / "home-jdk")})
    assert [(j.path, j.major) for j in found] == [
        (home, 17),
        (j25, 25),
        (j21, 21),
        (j17, 17),
        (str(machine / "path" / "java"), 11),
    ]
    assert found[1].version_line == 'openjdk version "25.0.3" 2026-01-20'
    # The registry takes the newest release a runtime runs, on the first runtime that runs it.
    assert choose_runtime(found) == (DISTRIBUTIONS[0], found[1])


def test_a_runtime_reached_by_two_paths_is_listed_once(machine: Path) -> None:
    jvm = machine / "jvm"
    j21 = fake_java(jvm / "jdk-21", "21.0.7")
    (machine / "path" / "java").symlink_to(j21)  # /usr/bin/java -> /usr/lib/jvm/...
    assert [j.path for j in java.find_javas(jvm, {})] == [j21]


def test_without_any_runtime_nothing_is_found(machine: Path) -> None:
    assert java.find_javas(machine / "no-such-root", {}) == []
    assert java.chosen_java({}) is None
    assert java.installed_javas(machine / "no-such-root") == []


def test_the_chosen_java_is_java_home_else_path_never_an_installed_one(machine: Path) -> None:
    fake_java(machine / "jvm" / "jdk-25", "25.0.3")
    on_path = fake_java(machine / "elsewhere", "17.0.15")
    (machine / "path" / "java").symlink_to(on_path)
    assert java.chosen_java({}) == str(machine / "path" / "java")
    home = fake_java(machine / "home-jdk", "21.0.7")
    assert java.chosen_java({"JAVA_HOME": str(machine / "home-jdk")}) == home
    # A JAVA_HOME without an executable java is passed over.
    assert java.chosen_java({"JAVA_HOME": str(machine / "missing")}) == str(machine / "path" / "java")


def test_a_runtime_that_does_not_answer_has_major_zero(machine: Path) -> None:
    broken = machine / "broken" / "bin" / "java"
    broken.parent.mkdir(parents=True)
    broken.write_text("#!/bin/sh\necho 'no version here' >&2\n")
    broken.chmod(0o755)
    assert java.probe(str(broken)) == java.JavaRuntime(str(broken), 0, "no version here")
    assert java.probe(str(machine / "missing")).major == 0


def test_java_versions_are_parsed() -> None:
    assert java.parse_java_major('openjdk version "17.0.12" 2024-07-16') == 17
    assert java.parse_java_major('java version "1.8.0_392"') == 8
    assert java.parse_java_major("nothing") is None
