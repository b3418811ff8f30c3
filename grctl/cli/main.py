"""Entry point of the ``grctl`` command line.

Each command group is a `typer.Typer` defined in its own module and mounted here, so new
groups are added with one ``app.add_typer(...)`` line. The root callback takes the global
options (cluster, namespace, Kafka client options, --debug) into a `Globals` object.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from grctl import __version__
from grctl.cli.common import Globals, out, parse_kafka_option, read_kafka_config_file, set_globals, setup_cli_logging
from grctl.cli.deploy import deploy_app, replay_cmd
from grctl.cli.dev import dev_app
from grctl.cli.init import init_cmd
from grctl.cli.limiter import limiter_app
from grctl.cli.namespace import namespace_app
from grctl.cli.schedule import schedule_app
from grctl.cli.ui import ui_cmd
from grctl.cli.verify import verify_cmd
from grctl.cli.worker import worker_cmd
from grctl.cli.workflow import workflow_app

WIDE_OUTPUT = 200

app = typer.Typer(
    name="grctl",
    help="""grctl: durable workflows on Apache Kafka, operated from a terminal.

Talks only to Kafka (no server). Every command takes --json for scripts. Exit codes: 0 success,
1 the operation failed (run failed, not found, broker unreachable), 2 bad usage.

**Examples**

  grctl init myapp                                # a new project: workflows, worker, tests, Dockerfile

  grctl dev                                       # local Kafka + a worker with the demo workflows

  grctl namespace create orders --partitions 12

  grctl -n orders worker --app myapp.workflows:WORKFLOWS

  grctl -n orders workflow start -t Order -I '{"order_id": "A-1"}' --wait

  grctl -n orders workflow list --status running
  grctl -n orders schedule create nightly --type Report --cron "0 2 * * *" --tz Europe/Berlin
  grctl -n orders limiter set payments-api --concurrency 20 --rate 50/s --per-key 2

  grctl -n orders ui                              # web UI on http://127.0.0.1:8233/
  grctl -n orders verify                          # after an incident: nothing lost or duplicated?

  grctl -n orders deploy check --app myapp.workflows:WORKFLOWS   # before a deploy: runs in flight served?

  grctl -s broker:9093 -X security.protocol=SASL_SSL -X sasl.mechanism=PLAIN ... workflow list
""",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(workflow_app, name="workflow")
app.add_typer(namespace_app, name="namespace")
app.add_typer(schedule_app, name="schedule")
app.add_typer(limiter_app, name="limiter")
app.command("worker")(worker_cmd)
app.command("ui")(ui_cmd)
app.command("verify")(verify_cmd)
app.add_typer(deploy_app, name="deploy")
app.command("replay")(replay_cmd)
app.add_typer(dev_app, name="dev")
app.command("init")(init_cmd)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"grctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    servers: Annotated[
        str | None,
        typer.Option(
            "--servers",
            "-s",
            envvar="GRCTL_KAFKA_SERVERS",
            help="Kafka bootstrap servers, host:port[,host:port...] [default: 127.0.0.1:9092].",
            show_default=False,
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace",
            "-n",
            envvar="GRCTL_NAMESPACE",
            help="The grctl namespace (its topics are grctl.NAMESPACE.*) [default: default].",
            show_default=False,
        ),
    ] = None,
    kafka_options: Annotated[
        list[str] | None,
        typer.Option(
            "-X",
            "--kafka-option",
            metavar="KEY=VALUE",
            help="A librdkafka client option for secured clusters (repeatable), e.g. -X security.protocol=SSL.",
            show_default=False,
        ),
    ] = None,
    kafka_config: Annotated[
        Path | None,
        typer.Option(
            "--kafka-config",
            envvar="GRCTL_KAFKA_CONFIG",
            help="A properties file of librdkafka options (key=value lines); -X options win.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    connect_timeout: Annotated[
        float, typer.Option("--connect-timeout", min=0.1, help="Seconds to wait for the broker.")
    ] = 10.0,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and client logs on errors.")] = False,
    identity: Annotated[
        str | None,
        typer.Option(
            "--identity",
            envvar="GRCTL_IDENTITY",
            help="Who you act as, recorded in the history of runs you start, signal, cancel or terminate "
            "[default: user@host/pid].",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Global options apply to every command."""
    options: dict[str, str] = {}
    if kafka_config is not None:
        options.update(read_kafka_config_file(kafka_config))
    for text in kafka_options or []:
        key, value = parse_kafka_option(text)
        options[key] = value
    argv = [*(["--servers", servers] if servers else []), *(["--namespace", namespace] if namespace else [])]
    argv += [*(["--kafka-config", str(kafka_config)] if kafka_config else [])]
    argv += [a for text in kafka_options or [] for a in ("-X", text)]
    argv += ["--connect-timeout", str(connect_timeout), *(["--debug"] if debug else [])]
    set_globals(
        Globals(
            servers=servers,
            namespace=namespace,
            kafka_options=options,
            connect_timeout=connect_timeout,
            debug=debug,
            argv=argv,
            identity=identity,
        )
    )
    setup_cli_logging(debug)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = WIDE_OUTPUT  # piped tables: do not wrap at 80 columns


def main() -> None:
    """Run the ``grctl`` command line (console script entry point)."""
    app()


if __name__ == "__main__":
    main()
