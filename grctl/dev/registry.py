"""Run a real local schema registry (Apicurio Registry, Confluent-compatible API), without Docker.

Apicurio Registry publishes its complete runnable Quarkus distribution on Maven Central as the
``all`` classifier of ``io.apicurio:apicurio-registry-app`` (type ``tar.gz``). It is fetched
once with Maven into the dev home (the same folder as the Kafka jars, see
`grctl.dev.kafka.resolve_home`), unpacked, and run as a detached JVM on 127.0.0.1 with in-memory
(H2) storage: a registry's schemas live as long as its process. Its Confluent-compatible API is
served under ``/apis/ccompat/v7``, which is the URL confluent-kafka's ``SchemaRegistryClient``
takes (`RegistryStatus.url`)::

    <home>/registry-<version>/app/...        the unpacked distribution
    <home>/registry-<version>/.fetched       written only after a complete fetch and unpack
    <home>/registry-<version>.lock           fcntl lock held while fetching
    <home>/registries/.<name>.lock           fcntl lock held while starting/stopping <name>
    <home>/registries/<name>/registry.json   name, port, version
    <home>/registries/<name>/pid, registry.log (the JVM's output)

Version: Apicurio Registry 3.3.3 needs Java 21+; the first Java runtime that is new enough is
used, in the order `grctl.dev.java.find_javas` prefers them (``$JAVA_HOME``, then the runtimes
under ``/usr/lib/jvm``, newest first, then ``java`` on PATH). Without one, 2.4.2.Final runs on
Java 17 (same ccompat v7 API).

Typical use::

    from grctl.dev import registry

    url = registry.ensure_running().url     # http://127.0.0.1:8081/apis/ccompat/v7, idempotent
    registry.stop()

Every failure the user can fix raises `LocalKafkaError` with a message saying what to do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from grctl.dev._errors import LocalKafkaError
from grctl.dev.java import JavaRuntime, parse_java_major
from grctl.dev.java import find_javas as _find_javas
from grctl.dev.kafka import (
    MAVEN_DEPENDENCY_PLUGIN,
    _file_lock,
    _port_free,
    _port_holder,
    _tail_file,
    _tail_text,
    find_maven,
    resolve_home,
)
from grctl.settings import dev_maven_settings

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_PORT",
    "DISTRIBUTIONS",
    "Distribution",
    "JavaCandidate",
    "RegistryStartResult",
    "RegistryStatus",
    "choose_runtime",
    "ensure_distribution",
    "ensure_running",
    "find_javas",
    "list_registries",
    "parse_java_major",
    "status",
    "stop",
    "stop_all",
    "url_of",
]

logger = logging.getLogger(__name__)

DEFAULT_NAME = "dev"
#: Confluent Schema Registry's usual port.
DEFAULT_PORT = 8081
CCOMPAT_PATH = "/apis/ccompat/v7"
#: A cold start takes ~3 s on 2 shared cores; a first start after the fetch a little more.
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
KILL_WAIT_S = 10.0
#: The 3.3.3 tarball is 158 MB.
FETCH_TIMEOUT_S = 900.0
POLL_INTERVAL_S = 0.2
LOG_TAIL_LINES = 25
#: A JVM property put on the command line so that a pid file cannot match another process.
_MARKER_PROPERTY = "grctl.dev.registry"
# Apicurio's parent POMs declare repositories this machine may not reach (jitpack, GitHub
# packages, ...); the fetch mirrors every repository to Central, where the tarball is.
_SETTINGS_XML = """<settings>
  <mirrors>
    <mirror>
      <id>grctl-central-only</id>
      <mirrorOf>*</mirrorOf>
      <url>https://repo.maven.apache.org/maven2</url>
    </mirror>
  </mirrors>
</settings>
"""
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Distribution:
    """One Apicurio Registry release on Maven Central.

    Attributes:
        version: The release, e.g. ``"3.3.3"``.
        min_java: The oldest Java major version that runs it.
    """

    version: str
    min_java: int

    @property
    def artifact(self) -> str:
        """The Maven coordinates of its runnable tarball."""
        return f"io.apicurio:apicurio-registry-app:{self.version}:tar.gz:all"

    @property
    def major(self) -> int:
        """Its major version (2 or 3): the configuration properties differ."""
        return int(self.version.split(".", 1)[0])


#: Preferred first. 3.x is built for Java 21; 2.4.2 is the newest 2.x whose tarball runs here
#: and the first with ccompat v7.
DISTRIBUTIONS: tuple[Distribution, ...] = (Distribution("3.3.3", 21), Distribution("2.4.2.Final", 17))


#: A java of this machine and its major version (`grctl.dev.java.JavaRuntime`).
JavaCandidate = JavaRuntime


def find_javas() -> list[JavaCandidate]:
    """The Java runtimes of this machine in the order they are preferred (see the module docstring)."""
    return _find_javas()


def choose_runtime(
    javas: Sequence[JavaCandidate], distributions: Sequence[Distribution] = DISTRIBUTIONS
) -> tuple[Distribution, JavaCandidate]:
    """The first distribution (in preference order) that one of `javas` runs, with the first such java.

    Raises:
        LocalKafkaError: No java runs any of them; the message lists what was found.
    """
    for dist in distributions:
        for java in javas:
            if java.major >= dist.min_java:
                return dist, java
    found = ", ".join(f"{j.path} (Java {j.major or '?'})" for j in javas) or "none"
    need = " or ".join(f"Java {d.min_java}+ for Apicurio Registry {d.version}" for d in distributions)
    raise LocalKafkaError(
        f"no Java runtime can run the local schema registry (it needs {need}; found: {found}): "
        "install one (e.g. apt-get install openjdk-21-jre-headless), or point JAVA_HOME at one"
    )


# --------------------------------------------------------------------------------------------
# Fetch


def _dist_dir(home: Path, dist: Distribution) -> Path:
    return home / f"registry-{dist.version}"


def _launch_jar(app: Path) -> Path | None:
    """quarkus-run.jar (3.x fast-jar) or the ``*-runner.jar`` (2.x legacy jar) of an unpacked tarball."""
    fast = app / "quarkus-run.jar"
    if fast.is_file():
        return fast
    runners = sorted(app.glob("*-runner.jar")) + sorted(app.glob("*/*-runner.jar"))
    return runners[0] if runners else None


def ensure_distribution(dist: Distribution, home: str | os.PathLike[str] | None = None) -> Path:
    """Fetch and unpack `dist` into ``<home>/registry-<version>/app`` unless already there.

    A marker file is written only after a complete fetch and unpack; a file lock makes
    concurrent callers wait for one fetch. Maven keeps the tarball in its local repository too,
    so a fetch after a deleted dev home downloads nothing.

    Returns:
        The jar to launch.

    Raises:
        LocalKafkaError: Maven is missing, or the fetch or unpack failed (with Maven's last lines).
    """
    home_dir = resolve_home(home)
    ddir = _dist_dir(home_dir, dist)
    app, marker = ddir / "app", ddir / ".fetched"
    jar = _launch_jar(app) if marker.is_file() else None
    if jar is not None:
        return jar
    with _file_lock(home_dir / f"registry-{dist.version}.lock", f"fetching Apicurio Registry {dist.version}"):
        jar = _launch_jar(app) if marker.is_file() else None
        if jar is not None:
            return jar  # another process fetched it while we waited
        mvn = find_maven()
        t0 = time.monotonic()
        logger.info("fetching Apicurio Registry %s (%s) into %s (once)", dist.version, dist.artifact, ddir)
        ddir.mkdir(parents=True, exist_ok=True)
        download = ddir / "download"
        shutil.rmtree(download, ignore_errors=True)
        download.mkdir()
        chosen = dev_maven_settings()
        settings = Path(chosen) if chosen else ddir / "settings.xml"
        if not chosen:
            settings.write_text(_SETTINGS_XML)
        cmd = [
            mvn, "-B", "-q", "-C", "-s", str(settings),
            f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
            f"-Dartifact={dist.artifact}", f"-DoutputDirectory={download}", "-Dmdep.useBaseVersion=true",
        ]  # fmt: skip
        try:
            # Run project-less: cwd has no pom.xml.
            out = subprocess.run(
                cmd, cwd=download, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalKafkaError(
                f"Maven did not fetch Apicurio Registry {dist.version} within {FETCH_TIMEOUT_S:.0f} s; "
                "check the network access to Maven Central and retry"
            ) from exc
        tarballs = sorted(download.glob("*.tar.gz"))
        if out.returncode != 0 or not tarballs:
            raise LocalKafkaError(
                f"Maven could not fetch Apicurio Registry {dist.version} ({dist.artifact}, exit {out.returncode}); "
                "check access to Maven Central (or set GRCTL_DEV_MAVEN_SETTINGS to a settings.xml with your mirror) "
                "and retry",
                f"command: {shlex.join(cmd)}\nlast lines of Maven's output:\n"
                f"{_tail_text((out.stdout or '') + (out.stderr or ''), LOG_TAIL_LINES)}",
            )
        partial = ddir / "app.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            with tarfile.open(tarballs[0]) as tar:
                tar.extractall(partial, filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise LocalKafkaError(f"cannot unpack {tarballs[0]} ({exc}); delete {ddir} and retry") from exc
        if _launch_jar(partial) is None:
            raise LocalKafkaError(f"{tarballs[0]} holds no quarkus-run.jar or *-runner.jar; delete {ddir} and retry")
        shutil.rmtree(app, ignore_errors=True)
        partial.rename(app)
        shutil.rmtree(download, ignore_errors=True)
        marker.write_text(json.dumps({"artifact": dist.artifact}) + "\n")
        logger.info("fetched Apicurio Registry %s in %.1f s", dist.version, time.monotonic() - t0)
        jar = _launch_jar(app)
        assert jar is not None
        return jar


# --------------------------------------------------------------------------------------------
# Registries on disk


@dataclass(frozen=True, slots=True)
class _Paths:
    home: Path
    name: str

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise LocalKafkaError(
                f"invalid registry name {self.name!r}: use letters, digits, '.', '_' or '-' (at most 63 characters)"
            )

    @property
    def dir(self) -> Path:
        return self.home / "registries" / self.name

    @property
    def lock_file(self) -> Path:
        return self.home / "registries" / f".{self.name}.lock"

    @property
    def spec_file(self) -> Path:
        return self.dir / "registry.json"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "registry.log"


def list_registries(home: str | os.PathLike[str] | None = None) -> list[str]:
    """The names of the registries recorded under the dev home folder, sorted."""
    root = resolve_home(home) / "registries"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "registry.json").is_file())


def _load(paths: _Paths) -> dict[str, object] | None:
    try:
        data = json.loads(paths.spec_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LocalKafkaError(f"cannot read {paths.spec_file} ({exc}); delete {paths.dir}") from exc
    return data if isinstance(data, dict) else None


def _pid_if_alive(paths: _Paths) -> int | None:
    try:
        pid = int(paths.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    child = _children.get(pid)
    if child is not None:
        return pid if child.poll() is None else None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return pid if f"-D{_MARKER_PROPERTY}={paths.dir}" in cmd else None


def url_of(port: int) -> str:
    """The Confluent-compatible API of a local registry on `port` (what SchemaRegistryClient takes)."""
    return f"http://127.0.0.1:{port}{CCOMPAT_PATH}"


def _answers(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url_of(port)}/subjects", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Status, start, stop


@dataclass(frozen=True, slots=True)
class RegistryStatus:
    """The state of one local registry.

    Attributes:
        name: Registry name.
        home: The dev home folder.
        exists: Whether it was ever started (``registry.json`` exists).
        running: Whether its JVM runs.
        ready: Whether its API answers.
        pid: Its JVM's process id while it runs.
        port: Its HTTP port (0 when it does not exist).
        version: The Apicurio Registry version it runs.
        url: Its Confluent-compatible API ('' when it does not exist).
        log: Its JVM's output file.
    """

    name: str
    home: str
    exists: bool
    running: bool
    ready: bool
    pid: int | None
    port: int
    version: str
    url: str
    log: str

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return asdict(self)


def status(name: str = DEFAULT_NAME, *, home: str | os.PathLike[str] | None = None) -> RegistryStatus:
    """The state of a local registry (without taking its lock)."""
    paths = _Paths(resolve_home(home), name)
    spec = _load(paths)
    if spec is None:
        return RegistryStatus(name, str(paths.home), False, False, False, None, 0, "", "", str(paths.log_file))
    port = int(str(spec.get("port", 0)))
    pid = _pid_if_alive(paths)
    return RegistryStatus(
        name=name, home=str(paths.home), exists=True, running=pid is not None,
        ready=pid is not None and _answers(port, 1.0), pid=pid, port=port, version=str(spec.get("version", "")),
        url=url_of(port), log=str(paths.log_file),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class RegistryStartResult:
    """What `ensure_running` did.

    Attributes:
        url: The registry's Confluent-compatible API.
        name: Registry name.
        started: Whether this call started it (False: it ran already).
        version: The Apicurio Registry version.
        java: The java executable it runs on ('' when it ran already).
        elapsed_s: Seconds the call took.
    """

    url: str
    name: str
    started: bool
    version: str
    java: str
    elapsed_s: float


# JVMs started by this process, kept to reap them (no zombies) and read their exit codes.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _jvm_args(dist: Distribution, port: int) -> list[str]:
    args = [
        # Memory and start-up time: a dev registry holds a few hundred schemas at most.
        "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={port}",
    ]  # fmt: skip
    if dist.major >= 3:
        args += [
            # In-memory H2 storage is the default; a small pool (the default is 20/20/100).
            "-Dapicurio.datasource.jdbc.initial-size=2",
            "-Dapicurio.datasource.jdbc.min-size=2",
            "-Dapicurio.datasource.jdbc.max-size=20",
            # 3.x also opens a management interface (health, metrics), by default on 0.0.0.0:9000;
            # it cannot be turned off at run time, so it goes to a free loopback port.
            "-Dquarkus.management.host=127.0.0.1",
            "-Dquarkus.management.port=0",
            "-Dquarkus.http.access-log.enabled=false",
        ]
    else:
        args += [
            f"-Dquarkus.datasource.jdbc.url=jdbc:h2:mem:registry_{port}",
            "-Dquarkus.datasource.jdbc.initial-size=2",
            "-Dquarkus.datasource.jdbc.min-size=2",
            "-Dquarkus.datasource.jdbc.max-size=20",
        ]
    return args


def ensure_running(
    port: int | None = None,
    *,
    name: str = DEFAULT_NAME,
    home: str | os.PathLike[str] | None = None,
    timeout: float = READY_TIMEOUT_S,
) -> RegistryStartResult:
    """Start a local schema registry and wait until its API answers; reuse a running one.

    Steps: 1. take the registry's file lock; 2. if it runs, wait until it answers and return;
    3. choose the distribution and java (see the module docstring), check the port, fetch the
    distribution if needed; 4. start the JVM detached; 5. wait until ``GET <url>/subjects``
    answers 200. On failure the JVM is killed and the error shows the log's last lines.

    Args:
        port: Its HTTP port; None means the recorded port, else 8081.
        name: Registry name (several can run side by side on different ports).
        home: The dev home folder (see `grctl.dev.kafka.resolve_home`).
        timeout: Seconds to wait for readiness once the JVM is started.

    Returns:
        Its URL, and whether this call started it.

    Raises:
        LocalKafkaError: No java new enough, Maven missing or the fetch failed, the port is in
            use, a running registry on another port, or the JVM exited or was not ready in time.
    """
    t0 = time.monotonic()
    paths = _Paths(resolve_home(home), name)
    with _file_lock(paths.lock_file, f"starting or stopping registry {name!r}"):
        spec = _load(paths) or {}
        recorded = int(str(spec["port"])) if "port" in spec else None
        pid = _pid_if_alive(paths)
        if pid is not None and recorded is not None:
            if port is not None and port != recorded:
                raise LocalKafkaError(
                    f"registry {name!r} is running on port {recorded}, not {port}: stop it first "
                    f"(grctl dev registry stop --name {name}) or use another --name"
                )
            _wait_ready(paths, recorded, pid, timeout)
            return RegistryStartResult(
                url_of(recorded), name, False, str(spec.get("version", "")), "", time.monotonic() - t0
            )
        port = port or recorded or DEFAULT_PORT
        dist, java = choose_runtime(find_javas())
        if not _port_free(port):
            raise LocalKafkaError(
                f"port {port} (schema registry) is already in use by {_holder(port, paths.home)}: stop it, "
                "or use another port (--port)"
            )
        jar = ensure_distribution(dist, paths.home)
        paths.dir.mkdir(parents=True, exist_ok=True)
        tmp = paths.spec_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"name": name, "port": port, "version": dist.version}, indent=2) + "\n")
        tmp.replace(paths.spec_file)
        cmd = [java.path, *_jvm_args(dist, port), f"-D{_MARKER_PROPERTY}={paths.dir}", "-jar", str(jar)]
        if paths.log_file.exists():
            paths.log_file.replace(paths.log_file.with_name("registry.log.prev"))
        logger.info("starting Apicurio Registry %s (Java %d) as registry %r on port %d", dist.version, java.major,
                    name, port)  # fmt: skip
        with paths.log_file.open("wb") as out:
            out.write(f"# {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=paths.dir,  # the JVM may write files into its working folder
                start_new_session=True, close_fds=True,
            )  # fmt: skip
        _children[proc.pid] = proc
        paths.pid_file.write_text(f"{proc.pid}\n")
        try:
            _wait_ready(paths, port, proc.pid, timeout)
        except BaseException:
            _terminate(paths, timeout=5.0)
            raise
        elapsed = time.monotonic() - t0
        logger.info("registry %r ready in %.1f s: %s", name, elapsed, url_of(port))
        return RegistryStartResult(url_of(port), name, True, dist.version, java.path, elapsed)


def _holder(port: int, home: Path) -> str:
    for other in list_registries(home):
        st = status(other, home=home)
        if st.running and st.port == port:
            return f"the local schema registry {other!r} (pid {st.pid}; grctl dev registry stop --name {other})"
    return _port_holder(port, home)


def _wait_ready(paths: _Paths, port: int, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + max(timeout, 1.0)
    while not _answers(port):
        if _pid_if_alive(paths) != pid:
            child = _children.get(pid)
            code = f" with exit code {child.returncode}" if child is not None and child.returncode is not None else ""
            raise LocalKafkaError(
                f"the schema registry {paths.name!r} exited{code} while starting; see its log below",
                f"  log: {paths.log_file}\n  last lines:\n{_tail_file(paths.log_file, LOG_TAIL_LINES)}",
            )
        if time.monotonic() > deadline:
            raise LocalKafkaError(
                f"the schema registry {paths.name!r} did not answer on {url_of(port)} within {timeout:.0f} s; "
                "see its log below",
                f"  log: {paths.log_file}\n  last lines:\n{_tail_file(paths.log_file, LOG_TAIL_LINES)}",
            )
        time.sleep(POLL_INTERVAL_S)


def _terminate(paths: _Paths, timeout: float) -> int | None:
    pid = _pid_if_alive(paths)
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_if_alive(paths) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_if_alive(paths) == pid:
        logger.warning("registry %r (pid %d) did not stop within %.0f s: killing it", paths.name, pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while _pid_if_alive(paths) == pid:
            if time.monotonic() > deadline:
                raise LocalKafkaError(f"registry {paths.name!r} (pid {pid}) survived SIGKILL for {KILL_WAIT_S:.0f} s")
            time.sleep(0.05)
    _children.pop(pid, None)
    with contextlib.suppress(FileNotFoundError):
        paths.pid_file.unlink()
    return pid


def stop(
    name: str = DEFAULT_NAME, *, home: str | os.PathLike[str] | None = None, timeout: float = STOP_TIMEOUT_S
) -> bool:
    """Stop a local registry (SIGTERM, then SIGKILL after `timeout`); its schemas are gone with it.

    Returns:
        Whether it was running.
    """
    paths = _Paths(resolve_home(home), name)
    with _file_lock(paths.lock_file, f"starting or stopping registry {name!r}"):
        pid = _terminate(paths, timeout)
    if pid is not None:
        logger.info("stopped registry %r (pid %d)", name, pid)
    return pid is not None


def stop_all(home: str | os.PathLike[str] | None = None) -> list[str]:
    """Stop every local registry under the dev home; returns the names of those that ran."""
    return [name for name in list_registries(home) if stop(name, home=home)]
