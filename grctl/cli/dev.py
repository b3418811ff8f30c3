"""``grctl dev``: the local development environment.

``grctl dev`` alone starts the local broker, creates the namespace, runs a worker with the demo
workflows (``examples.demo``) and prints what to try next. ``grctl dev kafka ...`` manages a
real local Apache Kafka (KRaft) run from its jars (see `grctl.dev.kafka`), ``grctl dev registry
...`` a local schema registry (see `grctl.dev.registry`). Progress goes to stderr; ``start``
prints the bootstrap address (the registry URL) alone on its last stdout line, so
``export GRCTL_KAFKA_SERVERS=$(grctl dev kafka start)`` and
``export GRCTL_SCHEMA_REGISTRY_URL=$(grctl dev registry start)`` work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from grctl.dev import kafka, registry

dev_app = typer.Typer(
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
kafka_app = typer.Typer(
    help="A real local Apache Kafka (KRaft mode) run from its jars; no Docker needed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app.add_typer(kafka_app, name="kafka")
registry_app = typer.Typer(
    help="A real local schema registry (Apicurio Registry, Confluent-compatible API) run from its Maven "
    "Central distribution; no Docker needed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
dev_app.add_typer(registry_app, name="registry")

NameOption = Annotated[
    str | None,
    typer.Option("--name", help="Cluster name [default: dev; cluster<N> when starting N>1 brokers]."),
]
HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Folder for jars and cluster data [default: $GRCTL_DEV_HOME, else ~/.cache/grctl].",
        file_okay=False,
    ),
]


DEMO_APP = "examples.demo:WORKFLOWS"
DEV_PARTITIONS = 4


def _next_steps(bootstrap: str, namespace: str) -> str:
    env = []
    if bootstrap != "127.0.0.1:9092":
        env.append(f"  export GRCTL_KAFKA_SERVERS={bootstrap}")
    if namespace != "default":
        env.append(f"  export GRCTL_NAMESPACE={namespace}")
    lines = [
        "",
        f"grctl dev: Kafka at {bootstrap}, namespace {namespace!r}, a worker with the demo workflows.",
        "In another terminal, try:",
        *env,
        "  grctl workflow start -t Order -i order-1 \\",
        '      --input \'{"order_id": "A-1", "items": ["book", "pen"], "unit_price": 9.5}\' --wait',
        '  grctl workflow start -t Approval -i approval-1 --input \'{"document": "Q3 budget"}\'',
        '  grctl workflow send approval-1 approve --payload \'{"approver": "alice"}\'',
        "  grctl workflow list                 # interactive: / to filter, Enter for a run's history",
        "  grctl workflow history approval-1",
        "  grctl namespace describe",
        "Ctrl-C stops the worker; the broker keeps running (grctl dev kafka stop).",
        "",
    ]
    return "\n".join(lines)


@dev_app.callback()
def dev_root(
    ctx: typer.Context,
    app_spec: Annotated[
        str,
        typer.Option("--app", "-a", metavar="MODULE[:ATTRIBUTE]", help="The workflows the worker serves."),
    ] = DEMO_APP,
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, help="Partitions if the namespace has to be created.")
    ] = DEV_PARTITIONS,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1024, max=65535, help="Client port of the local broker [default: 9092]."),
    ] = None,
) -> None:
    """Start the local Kafka, create the namespace, run a worker with the demo workflows.

    The broker is reused if it runs already and stays up when the worker stops (Ctrl-C).
    `grctl dev kafka ...` manages the broker itself.

    **Examples**

      grctl dev

      grctl -n sandbox dev --app myapp.workflows:WORKFLOWS
    """
    if ctx.invoked_subcommand is not None:
        return
    from grctl.cli.common import globals_of, handle_errors, run_async
    from grctl.cli.worker import load_workflows, serve, setup_worker_logging

    workflows = handle_errors(lambda: load_workflows(app_spec))
    _setup_logging()
    with _errors():
        result = kafka.ensure_running(None, port)
    g = globals_of()
    g.servers = result.bootstrap
    setup_worker_logging("info")
    message = _next_steps(result.bootstrap, g.resolved_namespace)

    async def main() -> None:
        await serve(
            workflows,
            partitions=partitions,
            state_dir=None,
            max_concurrent_steps=1000,
            shutdown_timeout=5.0,
            ready_message=message,
        )

    run_async(main)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("grctl.dev")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn a `LocalKafkaError` into one ``error:`` line (plus log details) and exit code 1."""
    try:
        yield
    except kafka.LocalKafkaError as exc:
        typer.echo(f"error: {exc.summary}", err=True)
        if exc.details:
            typer.echo(exc.details, err=True)
        raise typer.Exit(1) from None


@kafka_app.command("start")
def start_cmd(
    brokers: Annotated[
        int | None,
        typer.Option("--brokers", min=1, max=9, help="Number of nodes [default: recorded, else 1]."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1024,
            max=65535,
            help="Client port of node 1; node i uses port+2(i-1), its controller the next one "
            "(secured: port+3(i-1), then its controller and mTLS ports) "
            "[default: recorded, else 9092, or 19092 for N>1].",
        ),
    ] = None,
    home: HomeOption = None,
    name: NameOption = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for readiness.")] = (
        kafka.READY_TIMEOUT_S
    ),
    secure: Annotated[
        bool | None,
        typer.Option(
            "--secure/--no-secure",
            help="SASL_SSL (SCRAM-SHA-512) on each node's client port, mTLS on its port+2 (also between "
            "brokers), an SSL controller listener, a certificate per node from a CA of the cluster's own, the "
            "standard authorizer; prints its admin client config [default: recorded, else not].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start a local Kafka (or reuse the running one) and print its bootstrap address."""
    _setup_logging()
    with _errors():
        result = kafka.ensure_running(brokers, port, name=name, home=home, timeout=timeout, secure=secure)
    if not result.started:
        typer.echo(f"Kafka cluster {result.name!r} is already running", err=True)
    if result.admin_config is not None:
        typer.echo(
            f"secured: SASL_SSL with SCRAM-SHA-512 on each node's client port and mTLS on its port+2; "
            f"admin client config (a super user): "
            f"grctl --kafka-config {result.admin_config} ...; grant a namespace to a principal with "
            "`grctl namespace acls NAMESPACE --principal User:NAME --apply` (docs/security.md)",
            err=True,
        )
    typer.echo(result.bootstrap)


@kafka_app.command("stop")
def stop_cmd(
    name: NameOption = None,
    home: HomeOption = None,
    all_clusters: Annotated[bool, typer.Option("--all", help="Stop every cluster under the home folder.")] = False,
) -> None:
    """Stop a local Kafka cluster (SIGTERM, then SIGKILL after 30 s)."""
    _setup_logging()
    with _errors():
        names = kafka.list_clusters(home) if all_clusters else [name or kafka.DEFAULT_NAME]
        for each in names:
            stopped = kafka.stop(each, home=home)
            if not stopped:
                typer.echo(f"Kafka cluster {each!r} is not running", err=True)


@kafka_app.command("status")
def status_cmd(
    name: Annotated[str | None, typer.Option("--name", help="Cluster name [default: all clusters].")] = None,
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the local Kafka clusters: per node its pid, state and ports."""
    with _errors():
        names = [name] if name else kafka.list_clusters(home)
        statuses = [kafka.status(n, home=home) for n in names]
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
        return
    home_dir = kafka.resolve_home(home)
    if not any(s.exists for s in statuses):
        which = f"cluster {name!r}" if name else "clusters"
        typer.echo(f"no local Kafka {which} under {home_dir}")
        return
    table = Table(title=f"local Kafka clusters ({home_dir})")
    for column in ("cluster", "node", "pid", "state", "port", "controller"):
        table.add_column(column)
    for st in statuses:
        for node in st.nodes:
            state = "running" if node.alive and node.port_open else "starting" if node.alive else "stopped"
            table.add_row(
                st.name,
                str(node.node_id),
                str(node.pid or "-"),
                state,
                str(node.port),
                str(node.controller_port),
            )
    table.caption = "\n".join(f"{st.name}: {st.bootstrap}" for st in statuses if st.running)
    Console().print(table)


@kafka_app.command("kill")
def kill_cmd(
    node: Annotated[int, typer.Option("--node", min=1, help="Node id to SIGKILL.")],
    name: NameOption = None,
    home: HomeOption = None,
) -> None:
    """SIGKILL one node (simulates a broker crash)."""
    _setup_logging()
    with _errors():
        pid = kafka.kill_node(name or kafka.DEFAULT_NAME, node, home=home)
    if pid is None:
        typer.echo(f"node {node} was not running", err=True)


@kafka_app.command("pause")
def pause_cmd(
    node: Annotated[int, typer.Option("--node", min=1, help="Node id to SIGSTOP.")],
    name: NameOption = None,
    home: HomeOption = None,
) -> None:
    """SIGSTOP one node (simulates a hung broker: a long GC pause or a network partition)."""
    _setup_logging()
    with _errors():
        kafka.pause_node(name or kafka.DEFAULT_NAME, node, home=home)


@kafka_app.command("resume")
def resume_cmd(
    node: Annotated[int, typer.Option("--node", min=1, help="Node id to SIGCONT.")],
    name: NameOption = None,
    home: HomeOption = None,
) -> None:
    """SIGCONT a node stopped by `grctl dev kafka pause`."""
    _setup_logging()
    with _errors():
        kafka.resume_node(name or kafka.DEFAULT_NAME, node, home=home)


@kafka_app.command("restart")
def restart_cmd(
    node: Annotated[int, typer.Option("--node", min=1, help="Node id to start again.")],
    name: NameOption = None,
    home: HomeOption = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for readiness.")] = (
        kafka.READY_TIMEOUT_S
    ),
) -> None:
    """Start a killed or stopped node again and wait until the cluster lists all brokers."""
    _setup_logging()
    with _errors():
        bootstrap = kafka.restart_node(name or kafka.DEFAULT_NAME, node, home=home, timeout=timeout)
    typer.echo(bootstrap)


@kafka_app.command("wipe")
def wipe_cmd(
    name: NameOption = None,
    home: HomeOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Stop a cluster and delete its data, logs and cluster id (the jar cache stays)."""
    _setup_logging()
    cluster = name or kafka.DEFAULT_NAME
    if not yes:
        typer.confirm(f"Delete all data of local Kafka cluster {cluster!r}?", abort=True)
    with _errors():
        if not kafka.wipe(cluster, home=home):
            typer.echo(f"no cluster {cluster!r} to wipe", err=True)


RegistryNameOption = Annotated[str, typer.Option("--name", help="Registry name.")]


@registry_app.command("start")
def registry_start_cmd(
    port: Annotated[
        int | None,
        typer.Option("--port", min=1024, max=65535, help="HTTP port on 127.0.0.1 [default: recorded, else 8081]."),
    ] = None,
    name: RegistryNameOption = registry.DEFAULT_NAME,
    home: HomeOption = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for readiness.")] = (
        registry.READY_TIMEOUT_S
    ),
) -> None:
    """Start a local schema registry (or reuse the running one) and print its URL.

    Apicurio Registry 3.3.3 on Java 21+ (else 2.4.2 on Java 17), fetched once with Maven into
    the dev home; in-memory storage, so its schemas last as long as it runs. The URL printed is
    its Confluent-compatible API: `export GRCTL_SCHEMA_REGISTRY_URL=$(grctl dev registry start)`.
    """
    _setup_logging()
    with _errors():
        result = registry.ensure_running(port, name=name, home=home, timeout=timeout)
    if result.started:
        typer.echo(f"registry {name!r}: Apicurio Registry {result.version} on {result.java}", err=True)
    else:
        typer.echo(f"registry {name!r} is already running", err=True)
    typer.echo(result.url)


@registry_app.command("stop")
def registry_stop_cmd(
    name: RegistryNameOption = registry.DEFAULT_NAME,
    home: HomeOption = None,
    all_registries: Annotated[bool, typer.Option("--all", help="Stop every registry under the home folder.")] = False,
) -> None:
    """Stop a local schema registry (SIGTERM, then SIGKILL); its schemas are gone with it."""
    _setup_logging()
    with _errors():
        names = registry.list_registries(home) if all_registries else [name]
        for each in names:
            if not registry.stop(each, home=home):
                typer.echo(f"registry {each!r} is not running", err=True)


@registry_app.command("status")
def registry_status_cmd(
    name: Annotated[str | None, typer.Option("--name", help="Registry name [default: all registries].")] = None,
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the local schema registries: pid, state, port, version and URL."""
    with _errors():
        names = [name] if name else registry.list_registries(home)
        statuses = [registry.status(n, home=home) for n in names]
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
        return
    home_dir = kafka.resolve_home(home)
    if not any(s.exists for s in statuses):
        which = f"registry {name!r}" if name else "registries"
        typer.echo(f"no local schema {which} under {home_dir}")
        return
    table = Table(title=f"local schema registries ({home_dir})")
    for column in ("registry", "pid", "state", "port", "version", "url"):
        table.add_column(column)
    for st in statuses:
        state = "running" if st.ready else "starting" if st.running else "stopped"
        table.add_row(st.name, str(st.pid or "-"), state, str(st.port), st.version, st.url if st.running else "-")
    Console().print(table)
