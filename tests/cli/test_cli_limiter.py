"""Every ``grctl limiter`` command against a real broker and a real ``grctl worker`` process."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli.conftest import ServedNamespace

pytestmark = pytest.mark.kafka


def test_limiter_commands(cli: Any, served: ServedNamespace) -> None:
    name = served.new_id("api")
    created = cli("--identity", "ana@ops", "limiter", "set", name, "--concurrency", "20", "--rate", "50/s",
                  "--per-key", "2", "--weights", '{"gold": 3}', "--json")  # fmt: skip
    assert created.exit_code == 0, created.stderr
    d = created.json()
    assert (d["concurrency"], d["rate"], d["burst"], d["per_key"], d["weights"]) == (20, "50/s", 50, 2, {"gold": 3})
    assert d["created_by"] == "ana@ops"
    # Only what is given changes: the rate, the per-key limit and the weights stay.
    changed = cli("limiter", "set", name, "--concurrency", "10", "--json")
    assert changed.exit_code == 0, changed.stderr
    d = changed.json()
    assert (d["concurrency"], d["rate"], d["per_key"], d["weights"]) == (10, "50/s", 2, {"gold": 3})
    dropped = cli("limiter", "set", name, "--no-rate", "--json").json()
    assert (dropped["concurrency"], dropped["rate"]) == (10, None)
    text = cli("limiter", "describe", name)
    assert text.exit_code == 0 and "concurrency 10" in text.stdout and "in use 0, waiting 0" in text.stdout
    listed = cli("limiter", "list", "--json")
    assert listed.exit_code == 0 and name in [x["name"] for x in listed.json()]
    assert cli("limiter", "delete", name).exit_code == 0
    missing = cli("limiter", "describe", name)
    assert missing.exit_code == 1 and f"no limiter named {name!r}" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "a whole number from 1 to 1,000,000,000"),
        (["--rate", "fast"], "rate must look like"),
        (["--rate", "5/s", "--burst", "-1"], "a whole number from 1 to"),
        (["--concurrency", "2000000000"], "a whole number from 1 to"),
        ([], "needs a concurrency, a rate or a per-key limit"),
        (["--concurrency", "2", "--weights", '["a"]'], "a JSON object of fairness key to weight"),
    ],
)
def test_limiter_bad_input_is_refused_with_a_clear_message(
    cli: Any, served: ServedNamespace, args: list[str], message: str
) -> None:
    r = cli("limiter", "set", served.new_id("bad"), *args)
    assert r.exit_code != 0 and message in r.stderr + r.stdout, r.stderr
    assert "Traceback" not in r.stderr
