"""``grctl limiter ...``: list, inspect, set and delete limiters (docs/tutorials/flow-control.md).

Every command goes through `Client` (a limiter lives in the partition that owns its name and
only that partition's worker answers), so a worker of the namespace must be running.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from grctl.cli.common import connect, globals_of, out, parse_json, print_json, run_async
from grctl.client.client import Client
from grctl.client.limiters import LimiterDescription
from grctl.display import fmt_time as format_time
from grctl.errors import LimiterNotFoundError
from grctl.models.limits import LimitSpec, format_rate

T = TypeVar("T")

limiter_app = typer.Typer(
    help="List, inspect, set and delete limiters (durable concurrency and rate limits of the namespace).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of text.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The limiter's name.", show_default=False)]


def _limits_text(d: LimiterDescription) -> str:
    return d.spec.describe() or "-"


@limiter_app.command("list")
def list_cmd(as_json: JsonOption = False) -> None:
    """List the namespace's limiters: their limits, permits in use, requests waiting, grants."""

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            found = await client.list_limiters()
        if as_json:
            print_json([d.to_dict() for d in found])
            return
        table = Table(box=None)
        for column in ("NAME", "LIMITS", "IN USE", "WAITING", "GRANTED", "MEAN WAIT"):
            table.add_column(column)
        for d in found:
            table.add_row(
                escape(d.name), escape(_limits_text(d)), str(d.in_use), str(d.waiting), str(d.granted),
                f"{d.mean_wait_ms:.0f} ms",
            )  # fmt: skip
        out.print(table if found else "no limiters")

    run_async(main)


@limiter_app.command("describe")
def describe_cmd(name: NameArg, as_json: JsonOption = False) -> None:
    """Show a limiter: its limits, permits in use (by key), requests waiting (by priority and fairness key)."""

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            d = await client.describe_limiter(name)
        if as_json:
            print_json(d.to_dict())
            return
        out.print(f"[bold]{escape(d.name)}[/]: {escape(_limits_text(d))}")
        out.print(f"  in use {d.in_use}, waiting {d.waiting}")
        out.print(
            f"  granted {d.granted}, released {d.released}, refused {d.refused}, mean wait {d.mean_wait_ms:.0f} ms"
        )
        if d.oldest_waiting_since is not None:
            out.print(f"  oldest request waiting since {format_time(d.oldest_waiting_since)}")
        if d.created_by or d.updated_by:
            out.print(f"  created by {escape(d.created_by or '?')}, last changed by {escape(d.updated_by or '?')}")
        for title, counts in (
            ("waiting by priority", d.waiting_by_priority),
            ("waiting by fairness key", d.waiting_by_fairness),
            ("in use by key", d.in_use_by_key),
        ):
            if counts:
                out.print(f"{title}:")
                for k, n in counts.items():
                    out.print(f"  {escape(k or '(none)')}: {n}")

    run_async(main)


@limiter_app.command("set")
def set_cmd(
    name: NameArg,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Permits held at once, all runs together.")
    ] = None,
    rate: Annotated[str | None, typer.Option("--rate", help='Permits per period: "50/s", "600/min", "5/10s".')] = None,
    burst: Annotated[
        int | None, typer.Option("--burst", help="The rate's bucket size [default: one period's].")
    ] = None,
    per_key: Annotated[int | None, typer.Option("--per-key", help="Permits one key may hold at once.")] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", help="Fairness weights as JSON, e.g. '{\"tenant-a\": 3}'.")
    ] = None,
    no_concurrency: Annotated[bool, typer.Option("--no-concurrency", help="Remove the concurrency limit.")] = False,
    no_rate: Annotated[bool, typer.Option("--no-rate", help="Remove the rate limit.")] = False,
    no_per_key: Annotated[bool, typer.Option("--no-per-key", help="Remove the per-key limit.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create a limiter, or change the limits given (the others keep their value); effective at its next grant.

    **Examples**

      grctl limiter set payments-api --concurrency 20 --rate 50/s --per-key 2

      grctl limiter set payments-api --concurrency 10
    """

    parsed = parse_json(weights, "--weights") if weights is not None else None
    if parsed is not None and not isinstance(parsed, dict):
        raise typer.BadParameter("a JSON object of fairness key to weight", param_hint="--weights")

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            try:
                old: LimitSpec | None = (await client.describe_limiter(name)).spec
            except LimiterNotFoundError:
                old = None
            kept = old or LimitSpec()
            kept_rate = format_rate(kept.rate_n, kept.rate_period_ms) if kept.rate_n and kept.rate_period_ms else None
            d = await client.set_limiter(
                name,
                concurrency=None if no_concurrency else _given(concurrency, kept.concurrency),
                rate=None if no_rate else _given(rate, kept_rate),
                burst=None if no_rate else _given(burst, kept.burst if rate is None else None),
                per_key=None if no_per_key else _given(per_key, kept.per_key),
                weights=parsed if parsed is not None else dict(kept.weights),
            )
        if as_json:
            print_json(d.to_dict())
            return
        out.print(f"limiter {escape(d.name)}: {escape(_limits_text(d))} (in use {d.in_use}, waiting {d.waiting})")

    run_async(main)


def _given(value: T | None, kept: T | None) -> T | None:
    """The option's value if it was given, else what the limiter has."""
    return value if value is not None else kept


@limiter_app.command("delete")
def delete_cmd(
    name: NameArg,
    force: Annotated[
        bool,
        typer.Option("--force", help="Delete it even while in use: waiting requests fail with LimiterNotFoundError."),
    ] = False,
) -> None:
    """Delete a limiter (refused while permits are held or requested, unless --force)."""

    async def main() -> None:
        conn = await connect()
        async with Client(conn, identity=globals_of().identity) as client:
            await client.delete_limiter(name, force=force)
        out.print(f"limiter {escape(name)} deleted")

    run_async(main)
