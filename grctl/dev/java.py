"""The Java runtimes of this machine, for the local Kafka broker and the local schema registry.

Where a ``java`` may be, in the order it is preferred:

1. ``$JAVA_HOME/bin/java``: the user's explicit choice;
2. every JDK or JRE installed under ``/usr/lib/jvm`` (Debian, Ubuntu, Fedora and the Temurin
   packages put them there), newest version first;
3. ``java`` on PATH.

`chosen_java` is the java the user chose (1, else 3): the Kafka broker runs on it, and it must
be Java 17+ (`grctl.dev.kafka.find_java` says so when it is not). `find_javas` probes all of
them, each once, so that the schema registry can pick the newest release a java runs
(`grctl.dev.registry.choose_runtime`): Apicurio Registry 3 needs Java 21 even where the default
java is 17.

May import: nothing of grctl (JAVA_HOME is the JDK's own variable, read here).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "JVM_ROOT",
    "JavaRuntime",
    "chosen_java",
    "find_javas",
    "installed_javas",
    "java_home_java",
    "parse_java_major",
    "probe",
    "version_output",
]

#: Where Linux distributions (and the Temurin packages) install Java runtimes, one folder each.
JVM_ROOT: Final = Path("/usr/lib/jvm")
#: ``java -version`` answers at once; a minute allows for a machine under load.
VERSION_TIMEOUT_S: Final = 60.0

_VERSION_RE: Final = re.compile(r'version "(\d+)(?:\.(\d+))?[^"]*"')


@dataclass(frozen=True, slots=True)
class JavaRuntime:
    """A ``java`` executable and its version.

    Attributes:
        path: The executable.
        major: Its major version (17, 21, ...; 0: it could not be told).
        version_line: The first line of ``java -version`` ("" if not known).
    """

    path: str
    major: int
    version_line: str = ""


def parse_java_major(text: str) -> int | None:
    """The major version in ``java -version`` output (``1.8.0_392`` is 8), None if absent."""
    match = _VERSION_RE.search(text)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def version_output(java: str) -> str:
    """What ``java -version`` prints (it writes to stderr).

    Raises:
        OSError: `java` cannot be run.
        subprocess.TimeoutExpired: it did not answer within `VERSION_TIMEOUT_S`.
    """
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT_S, check=False)
    return (out.stderr or "") + (out.stdout or "")


def probe(java: str) -> JavaRuntime:
    """`java` and its version; major 0 when it cannot be run or its version cannot be told."""
    try:
        text = version_output(java)
    except (OSError, subprocess.TimeoutExpired):
        return JavaRuntime(java, 0)
    lines = text.strip().splitlines()
    return JavaRuntime(java, parse_java_major(text) or 0, lines[0] if lines else "")


def _executable(path: Path) -> str | None:
    return str(path) if os.access(path, os.X_OK) else None


def java_home_java(env: Mapping[str, str] | None = None) -> str | None:
    """``$JAVA_HOME/bin/java`` when JAVA_HOME is set and it is executable."""
    java_home = (os.environ if env is None else env).get("JAVA_HOME")
    return _executable(Path(java_home) / "bin" / "java") if java_home else None


def chosen_java(env: Mapping[str, str] | None = None) -> str | None:
    """The java the user chose: ``$JAVA_HOME/bin/java``, else ``java`` on PATH (None: neither)."""
    return java_home_java(env) or shutil.which("java")


def installed_javas(root: Path = JVM_ROOT) -> list[str]:
    """Every executable ``<root>/*/bin/java`` (in name order; `find_javas` orders them by version)."""
    if not root.is_dir():
        return []
    return [java for folder in sorted(root.iterdir()) if (java := _executable(folder / "bin" / "java")) is not None]


def find_javas(root: Path = JVM_ROOT, env: Mapping[str, str] | None = None) -> list[JavaRuntime]:
    """Every Java runtime of this machine, probed, in the order they are preferred (see the module doc).

    A runtime reachable by several paths (``/usr/bin/java`` is a link into ``/usr/lib/jvm``) is
    listed once, at its first place.
    """
    seen: set[str] = set()

    def fresh(paths: list[str]) -> list[JavaRuntime]:
        out = []
        for path in paths:
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                out.append(probe(path))
        return out

    home = java_home_java(env)
    first = fresh([home] if home else [])
    installed = sorted(fresh(installed_javas(root)), key=lambda j: j.major, reverse=True)
    on_path = shutil.which("java")
    return first + installed + fresh([on_path] if on_path else [])
