"""The web UI's limiter form: what it accepts and how it refuses, without a broker (`grctl.ui.data`)."""

from __future__ import annotations

import pytest

from grctl.errors import InvalidArgumentError
from grctl.ui.app import ordinal
from grctl.ui.data import MAX_FORM_LIMIT, parse_limit_form


def form(**fields: str) -> dict[str, str]:
    return {"concurrency": "", "rate": "", "burst": "", "per_key": "", **fields}


def test_empty_fields_are_no_limit_and_numbers_are_whole() -> None:
    assert parse_limit_form(form(concurrency=" 20 ", rate="50/s", burst="100")) == {
        "concurrency": 20, "rate": "50/s", "burst": 100, "per_key": None,
    }  # fmt: skip
    assert parse_limit_form(form(per_key="2")) == {"concurrency": None, "rate": None, "burst": None, "per_key": 2}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"concurrency": "0"}, "concurrency must be a whole number from 1"),
        ({"concurrency": "-3"}, "got '-3'"),
        ({"concurrency": "2.5"}, "got '2.5'"),
        ({"concurrency": "١٢"}, "concurrency must be a whole number"),  # Arabic-Indic digits: isdigit, not ASCII
        ({"per_key": str(MAX_FORM_LIMIT + 1)}, "per-key concurrency must be a whole number from 1 to 1,000,000,000"),
        ({"rate": "fast"}, "rate must look like '50/s'"),
        ({"rate": "0/s"}, "at least 1 permit"),
        ({"rate": f"{MAX_FORM_LIMIT + 1}/s"}, "at most 1,000,000,000 permits per period"),
        ({"concurrency": "2", "burst": "5"}, "burst sizes a rate's bucket: set a rate too"),
        ({}, "needs a concurrency, a rate or a per-key limit"),
    ],
)
def test_bad_limits_are_refused_with_what_is_wrong(fields: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_limit_form(form(**fields))


def test_ordinal_places_in_line() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 17, 21, 22, 101, 111, 112)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "17th", "21st", "22nd", "101st", "111th", "112th",
    ]  # fmt: skip
