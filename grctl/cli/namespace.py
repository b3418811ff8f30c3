"""``grctl namespace create|describe|delete``: the topics of a namespace and its workers."""

from __future__ import annotations

from typing import Annotated, cast

import typer
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]  # untyped re-export
from rich.markup import escape
from rich.table import Table

from grctl.cli.common import CommandFailed, Globals, err, globals_of, handle_errors, out, print_json, progress
from grctl.client.namespace import REQUEST_TIMEOUT_S, describe_namespace, settings_json, worker_group
from grctl.display import fmt_span_ms
from grctl.errors import GrctlError, InvalidArgumentError, KafkaSetupError
from grctl.kafka import acls
from grctl.kafka.connection import Connection
from grctl.kafka.settings_topic import (
    NamespaceSettings,
    check_history_keeps,
    parse_duration,
    read_settings,
    with_retention,
    write_settings,
)
from grctl.kafka.topics import DEFAULT_PARTITIONS, ROLE_CONFIGS, ROLES, TopicNames, ensure_namespace, partition_counts

namespace_app = typer.Typer(
    help="Create, inspect and delete namespaces (one set of co-partitioned topics each).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

NamespaceArg = Annotated[
    str | None,
    typer.Argument(
        metavar="[NAMESPACE]",
        help="The namespace [default: --namespace, GRCTL_NAMESPACE or 'default'].",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of text.")]
RetentionOption = Annotated[
    str | None,
    typer.Option(
        "--retention",
        metavar="DURATION",
        help="How long an ended run's state is kept: 7d, 36h, 90m, 30s [default: 7d].",
        show_default=False,
    ),
]
TypeRetentionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--type-retention",
        metavar="TYPE=DURATION",
        help="A retention for one workflow type (repeatable), e.g. Report=12h.",
        show_default=False,
    ),
]


def _names(g: Globals, namespace: str | None) -> TopicNames:
    try:
        return TopicNames(namespace or g.resolved_namespace)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAMESPACE") from None


def _admin(g: Globals, names: TopicNames) -> AdminClient:
    admin = AdminClient({"bootstrap.servers": g.resolved_servers, **g.kafka_config()})
    try:
        admin.list_topics(topic=names.directives, timeout=g.connect_timeout)
    except KafkaException as exc:
        raise KafkaSetupError(
            f"cannot reach Kafka at {g.resolved_servers} within {g.connect_timeout:g}s "
            f"({exc.args[0] if exc.args else exc}); is the broker running? (`grctl dev kafka start` starts a "
            f"local one, --servers or GRCTL_KAFKA_SERVERS points at yours)"
        ) from None
    return admin


def _parse_configs(items: list[str]) -> dict[str, dict[str, str]]:
    configs: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        role, dot, name = key.partition(".")
        role = role.replace("_", "-")
        if not sep or not dot or role not in ROLE_CONFIGS or not name:
            raise typer.BadParameter(
                f"{item!r} is not ROLE.KEY=VALUE with ROLE one of {', '.join(ROLES)} "
                f"(e.g. history.retention.ms=604800000)",
                param_hint="--config",
            )
        configs.setdefault(role, {})[name] = value
    return configs


# --------------------------------------------------------------------------------------------
# create


@namespace_app.command("create")
def create_cmd(
    namespace: NamespaceArg = None,
    partitions: Annotated[
        int, typer.Option("--partitions", "-p", min=1, max=10_000, help="Partitions of every topic (fixed later).")
    ] = DEFAULT_PARTITIONS,
    replication_factor: Annotated[
        int | None,
        typer.Option("--replication-factor", "-r", min=1, help="Replicas per partition [default: min(3, brokers)]."),
    ] = None,
    configs: Annotated[
        list[str] | None,
        typer.Option(
            "--config",
            "-c",
            metavar="ROLE.KEY=VALUE",
            help="A topic config for one role (repeatable), e.g. history.retention.ms=604800000.",
            show_default=False,
        ),
    ] = None,
    retention: RetentionOption = None,
    type_retention: TypeRetentionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create the topics of a namespace (directives, history, state, replies, dead-letter, config).

    The state topic is compacted; with 3 or more replicas min.insync.replicas is 2. Topics that
    already exist are kept (their partition count must match: all topics are co-partitioned).
    Ended runs are kept for the run retention (default 7d, stored in the namespace's config
    topic); the history topic must keep events at least as long.

    **Examples**

      grctl namespace create orders --partitions 24 --replication-factor 3 --retention 3d

      grctl namespace create orders -c history.retention.ms=604800000 -c directives.retention.ms=86400000
    """
    g = globals_of()
    names = _names(g, namespace)
    extra = _parse_configs(configs or [])
    wanted = _wanted_settings(NamespaceSettings(), retention, type_retention)
    history_ms = int(extra.get("history", {}).get("retention.ms", ROLE_CONFIGS["history"]["retention.ms"]))

    def main() -> None:
        check_history_keeps(wanted, None if history_ms < 0 else history_ms, names.namespace)
        admin = _admin(g, names)
        with progress(f"creating namespace {names.namespace}"):
            before = partition_counts(admin, names, REQUEST_TIMEOUT_S)
            count = ensure_namespace(
                admin,
                names,
                partitions=partitions,
                replication_factor=replication_factor,
                extra_configs=extra,
                timeout=REQUEST_TIMEOUT_S,
            )
            conn = _connection(g, names)
            if names.config not in before or retention is not None or type_retention:
                write_settings(conn, wanted, REQUEST_TIMEOUT_S)
            settings = read_settings(conn, REQUEST_TIMEOUT_S)
        created = [t for t in names.all() if t not in before]
        existing = [t for t in names.all() if t in before]
        if as_json:
            print_json(
                {
                    "namespace": names.namespace,
                    "partitions": count,
                    "created": created,
                    "existing": existing,
                    "settings": settings_json(settings),
                }
            )
            return
        if not created:
            out.print(f"namespace {escape(names.namespace)!r} already exists ({count} partitions)")
        else:
            out.print(f"namespace {escape(names.namespace)!r}: created {len(created)} topic(s), {count} partitions")
            for t in created:
                out.print(f"  + {t}")
        if existing and count != partitions:
            err.print(f"note: the namespace keeps its {count} partitions (--partitions {partitions} ignored)")
        out.print(f"runs are kept {_retention_text(settings)} after they end")

    handle_errors(main)


@namespace_app.command("set")
def set_cmd(
    namespace: NamespaceArg = None,
    retention: RetentionOption = None,
    type_retention: TypeRetentionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a namespace's settings: how long ended runs are kept (for all, or per workflow type).

    Workers read the settings again within 30 s; the new retention applies to runs that end
    afterwards. The history topic must keep events at least as long as runs are kept.

    **Examples**

      grctl namespace set orders --retention 3d

      grctl namespace set orders --type-retention Report=12h
    """
    g = globals_of()
    names = _names(g, namespace)
    if retention is None and not type_retention:
        raise typer.BadParameter("give --retention and/or --type-retention", param_hint="--retention")

    def main() -> None:
        _admin(g, names)
        conn = _connection(g, names)
        with progress(f"updating namespace {names.namespace}"):
            settings = _wanted_settings(read_settings(conn, REQUEST_TIMEOUT_S), retention, type_retention)
            write_settings(conn, settings, REQUEST_TIMEOUT_S)
        if as_json:
            print_json({"namespace": names.namespace, "settings": settings_json(settings)})
        else:
            out.print(
                f"namespace {escape(names.namespace)!r}: runs are kept {_retention_text(settings)} after they end"
            )

    handle_errors(main)


def _wanted_settings(base: NamespaceSettings, retention: str | None, per_type: list[str] | None) -> NamespaceSettings:
    try:
        value = parse_duration(retention, "--retention") if retention is not None else None
        types = {}
        for item in per_type or []:
            wf_type, sep, text = item.partition("=")
            if not sep or not wf_type:
                raise typer.BadParameter(
                    f"{item!r} is not TYPE=DURATION (e.g. Report=12h)", param_hint="--type-retention"
                )
            types[wf_type] = parse_duration(text, f"--type-retention {wf_type}")
    except InvalidArgumentError as exc:
        raise typer.BadParameter(str(exc), param_hint="--retention") from None
    return with_retention(base, value, types)


def _connection(g: Globals, names: TopicNames) -> Connection:
    return Connection(g.resolved_servers, names.namespace, kafka_config=g.kafka_config())


def _retention_text(settings: NamespaceSettings) -> str:
    text = fmt_span_ms(settings.run_retention_ms)
    if settings.type_retention_ms:
        text += (
            " (" + ", ".join(f"{t}: {fmt_span_ms(ms)}" for t, ms in sorted(settings.type_retention_ms.items())) + ")"
        )
    return text


# --------------------------------------------------------------------------------------------
# describe


@namespace_app.command("describe")
def describe_cmd(namespace: NamespaceArg = None, as_json: JsonOption = False) -> None:
    """Show a namespace: its topics and configs, its workers (consumer group members) and their lag.

    Lag is per partition of the directives topic: committed end offset minus what the workers'
    group has committed (inputs not processed yet).

    **Examples**

      grctl namespace describe orders

      grctl -n orders namespace describe --json | jq .lag.total
    """
    g = globals_of()
    names = _names(g, namespace)

    def main() -> None:
        admin = _admin(g, names)
        with progress(f"reading namespace {names.namespace}"):
            info = describe_namespace(admin, names, _connection(g, names))
        if as_json:
            print_json(info)
            return
        out.print(f"[bold]namespace[/] {escape(names.namespace)}  ({info['partitions']} partitions)")
        t = Table(title="topics", title_justify="left", header_style="bold")
        for col in ("TOPIC", "PARTITIONS", "RF", "OFFSETS", "CONFIGS"):
            t.add_column(col, justify="right" if col in ("PARTITIONS", "RF", "OFFSETS") else "left")
        for tp in info["topics"]:
            cfg = " ".join(f"{k}={v}" for k, v in tp["configs"].items())
            rf = str(tp["replication_factor"])
            if tp["under_replicated_partitions"]:
                rf += f" ([red]{tp['under_replicated_partitions']} under-replicated[/])"
            t.add_row(tp["name"], str(tp["partitions"]), rf, str(tp["offsets"]), cfg)
        out.print(t)
        if info["missing_topics"]:
            err.print(f"[red]missing topics:[/] {', '.join(info['missing_topics'])}")
        w = info["workers"]
        out.print(f"[bold]workers[/] group {w['group']}: {w['state']}, {len(w['members'])} member(s)")
        if w["members"]:
            mt = Table(header_style="bold")
            for col in ("INSTANCE / CLIENT", "HOST", "PARTITIONS"):
                mt.add_column(col)
            for m in w["members"]:
                mt.add_row(m["instance_id"] or m["client_id"], m["host"], ",".join(map(str, m["partitions"])) or "-")
            out.print(mt)
        lag = info["lag"]
        lt = Table(title=f"lag (total {lag['total']})", title_justify="left", header_style="bold")
        for col in ("PARTITION", "END", "COMMITTED", "LAG", "OWNER"):
            lt.add_column(col, justify="right" if col != "OWNER" else "left")
        for r in lag["partitions"]:
            committed = "-" if r["committed"] is None else str(r["committed"])
            lt.add_row(str(r["partition"]), str(r["end_offset"]), committed, str(r["lag"]), r["owner"] or "-")
        out.print(lt)

    handle_errors(main)


# --------------------------------------------------------------------------------------------
# delete


@namespace_app.command("delete")
def delete_cmd(
    namespace: NamespaceArg = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete every topic of a namespace (all its runs and history) and its workers' group.

    Stop the namespace's workers first.

    **Examples**

      grctl namespace delete orders --yes
    """
    g = globals_of()
    names = _names(g, namespace)
    if not yes:
        typer.confirm(f"Delete namespace {names.namespace!r} with all its runs and history?", abort=True)

    def main() -> None:
        admin = _admin(g, names)
        with progress(f"deleting namespace {names.namespace}"):
            existing = list(partition_counts(admin, names, REQUEST_TIMEOUT_S))
            if not existing:
                raise CommandFailed(
                    f"namespace {names.namespace!r} does not exist (no topics grctl.{names.namespace}.*)"
                )
            for topic, fut in admin.delete_topics(existing, operation_timeout=REQUEST_TIMEOUT_S).items():
                try:
                    fut.result()
                except KafkaException as exc:
                    raise CommandFailed(f"cannot delete topic {topic}: {exc.args[0] if exc.args else exc}") from None
            group_deleted = False
            try:
                group = worker_group(names.namespace)
                admin.delete_consumer_groups([group], request_timeout=REQUEST_TIMEOUT_S)[group].result()
                group_deleted = True
            except KafkaException:
                pass  # no such group, or members still in it
        if as_json:
            print_json({"namespace": names.namespace, "deleted": existing, "group_deleted": group_deleted})
        else:
            out.print(f"namespace {escape(names.namespace)!r} deleted ({len(existing)} topics)")

    handle_errors(main)


# --------------------------------------------------------------------------------------------
# acls


@namespace_app.command("acls")
def acls_cmd(
    principal: Annotated[
        str, typer.Option("--principal", metavar="User:NAME", help="The Kafka principal to grant (User:NAME).")
    ],
    namespace: NamespaceArg = None,
    roles: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            metavar="ROLE",
            help="worker, client or admin (repeatable) [default: worker and client].",
            show_default=False,
        ),
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Create the ACLs on the cluster (needs an admin's credentials).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Print (or create, with --apply) the Kafka ACLs a principal needs for a namespace.

    Three prefixed patterns cover a namespace: its topics, its consumer groups and its workers'
    transactional ids all start with 'grctl.NAMESPACE.' (see docs/security.md).

    **Examples**

      grctl namespace acls orders --principal User:orders-worker --role worker

      grctl --kafka-config admin.properties namespace acls orders --principal User:api --role client --apply
    """
    g = globals_of()
    names = _names(g, namespace)
    wanted = roles or ["worker", "client"]
    for role in wanted:
        if role not in acls.ROLES:
            raise typer.BadParameter(f"unknown role {role!r}: use one of {', '.join(acls.ROLES)}", param_hint="--role")
    typed_roles = cast("list[acls.Role]", wanted)

    def main() -> None:
        try:
            bindings = acls.namespace_acls(names.namespace, principal, typed_roles)
        except GrctlError as exc:
            raise typer.BadParameter(str(exc), param_hint="--principal") from None
        lines = acls.acl_lines(names.namespace, principal, typed_roles)
        commands = acls.kafka_acls_commands(names.namespace, principal, typed_roles)
        if apply:
            admin = _admin(g, names)
            with progress(f"creating {len(bindings)} ACLs for {principal}"):
                for fut in admin.create_acls(bindings, request_timeout=REQUEST_TIMEOUT_S).values():
                    try:
                        fut.result()
                    except KafkaException as exc:
                        raise CommandFailed(
                            f"Kafka refused to create the ACLs ({exc.args[0] if exc.args else exc}): --apply needs a "
                            "principal allowed to Alter the cluster (a super user, e.g. the local secured "
                            "cluster's admin.properties)"
                        ) from None
        if as_json:
            print_json({"namespace": names.namespace, "principal": principal, "roles": wanted, "acls": lines,
                        "kafka_acls": commands, "applied": apply})  # fmt: skip
            return
        for line in lines:
            out.print(escape(line))
        if apply:
            err.print(f"created {len(bindings)} ACLs")
        else:
            err.print("with kafka-acls.sh:")
            for cmd in commands:
                err.print(escape(cmd), soft_wrap=True)

    handle_errors(main)
