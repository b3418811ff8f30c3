"""The documentation's code: every Python block on the site and in the README comes from a file
under docs/examples/, and the example tests (grctl_env, in process) pass.

The example programs themselves run against the broker in `test_docs_examples_kafka.py`; the
site's build (`mkdocs build --strict`, a stage of scripts/test) fails on a snippet that is missing.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"$')


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def test_every_python_block_of_the_site_is_included_from_an_example_file() -> None:
    inline = []
    for page in pages():
        for block in FENCE.findall(page.read_text()):
            lines = [ln for ln in block.strip().splitlines() if ln.strip()]
            for ln in lines:
                m = SNIPPET.match(ln.strip())
                if m is None:
                    inline.append(f"{page.relative_to(REPO)}: {ln.strip()[:60]}")
                    break
                path = REPO / m["path"]
                assert path.is_file(), f"{page.relative_to(REPO)} includes {m['path']}, which does not exist"
                if m["section"]:
                    assert f"# --8<-- [start:{m['section']}]" in path.read_text(), (
                        f"{page.relative_to(REPO)} includes section {m['section']!r} of {m['path']}, which has none"
                    )
    assert not inline, "code on a page that no test runs (put it in docs/examples/ and include it): " + "; ".join(
        inline
    )


def test_the_readme_example_is_the_file_the_tests_run() -> None:
    blocks = FENCE.findall((REPO / "README.md").read_text())
    assert blocks == [(EXAMPLES / "readme.py").read_text()], "README's Python block must equal docs/examples/readme.py"
    assert len((EXAMPLES / "readme.py").read_text().splitlines()) <= 25


def test_the_readme_is_a_landing_page_whose_links_resolve() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (REPO / target).exists(), f"README links to {target}, which does not exist"


def test_the_example_tests_pass_in_process() -> None:
    installed = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    plugin = [] if "grctl" in installed else ["-p", "grctl.testing.pytest_plugin"]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{EXAMPLES}"}
    tests = sorted(str(p) for p in EXAMPLES.glob("test_*.py"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, *tests],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{len(tests)} failed" not in run.stdout
