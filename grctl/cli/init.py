"""``grctl init NAME``: a new project from the template in ``grctl/cli/template/``.

The template is plain files (``*.tmpl``) where ``{{name}}`` is the project's name and
``{{package}}`` its Python package (the name with ``-`` as ``_``): a workflows module, a
worker and a client program, pytest tests on `grctl.testing`'s in-process engine, a README
and a Dockerfile. Plain files rather than a template tool: the project has two placeholders,
and `grctl` then needs nothing more to make it.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from grctl.cli.common import CommandFailed, handle_errors, out

__all__ = ["TEMPLATE", "init_cmd", "make_project"]

#: The template's folder (package data).
TEMPLATE = Path(__file__).with_name("template")
#: Where a template file goes: its path below the template, `package/` as the package's folder.
_RENAMES = {"package": "{{package}}", "dockerignore.tmpl": ".dockerignore.tmpl", "gitignore.tmpl": ".gitignore.tmpl"}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


def make_project(name: str, parent: Path) -> Path:
    """Write the project `name` into `parent / name`; returns its folder.

    Raises:
        CommandFailed: the name is not usable as a Python package, or the folder exists and is not empty.
    """
    if not _NAME.match(name):
        raise CommandFailed(
            f"project name {name!r} must start with a letter and hold only letters, digits, '_' and '-' "
            "(it names the folder and, with '-' as '_', the Python package)",
            code=2,
        )
    package = name.replace("-", "_").lower()
    if keyword.iskeyword(package) or package in {"grctl", "tests", "test"}:
        raise CommandFailed(f"project name {name!r} would shadow a Python module ({package}); pick another", code=2)
    target = parent / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CommandFailed(f"{target} exists and is not empty: pick another name or remove it")
    values = {"{{name}}": name, "{{package}}": package}
    for src in sorted(TEMPLATE.rglob("*.tmpl")):
        rel = Path(*(_RENAMES.get(part, part) for part in src.relative_to(TEMPLATE).parts))
        dest = target / _fill(str(rel), values).removesuffix(".tmpl")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_fill(src.read_text(), values))
    return target


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def init_cmd(
    name: Annotated[str, typer.Argument(help="The project's name: its folder and (with '-' as '_') its package.")],
    directory: Annotated[
        Path, typer.Option("--dir", "-d", help="Where to create the project's folder [default: here].")
    ] = Path(),
) -> None:
    """Create a new project: workflows, a worker, a client, tests that run without Kafka, a Dockerfile.

    **Example**

      grctl init signups && cd signups && pip install -e '.[test]' && pytest
    """

    def main() -> None:
        target = make_project(name, directory)
        out.print(escape(f"created {target}/ (workflows, worker, client, tests, README.md, Dockerfile)"))
        steps = f"cd {target} && python -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest"
        out.print(escape(f"next: {steps}"))

    handle_errors(main)
