"""Entry point of the ``grctl`` command line.

Each command group is a `typer.Typer` defined in its own module and mounted here, so new
groups are added with one ``app.add_typer(...)`` line.
"""

from __future__ import annotations

import typer

from grctl.cli.dev import dev_app

app = typer.Typer(
    name="grctl",
    help="grctl: durable workflows on Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dev_app, name="dev")


def main() -> None:
    """Run the ``grctl`` command line (console script entry point)."""
    app()


if __name__ == "__main__":
    main()
