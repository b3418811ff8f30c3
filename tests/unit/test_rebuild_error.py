"""A recorded task error is rebuilt from its class only if its module is already loaded (data never imports)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from grctl.errors import JournalMismatchError
from grctl.workflow.task import _rebuild_error


def test_an_error_of_a_loaded_module_is_rebuilt_with_its_class_and_message() -> None:
    err = _rebuild_error({"type": "JournalMismatchError", "qualified_type": "grctl.errors.JournalMismatchError",
                          "message": "kept"})  # fmt: skip
    assert type(err) is JournalMismatchError and str(err) == "kept"
    builtin = _rebuild_error({"type": "KeyError", "qualified_type": "builtins.KeyError", "message": "k"})
    assert type(builtin) is KeyError


def test_a_class_that_is_no_exception_or_wants_other_arguments_falls_back() -> None:
    not_exc = _rebuild_error({"type": "Path", "qualified_type": "pathlib.Path", "message": "m"})
    assert type(not_exc) is RuntimeError and str(not_exc) == "Path: m"
    odd = _rebuild_error({"type": "UnicodeDecodeError", "qualified_type": "builtins.UnicodeDecodeError",
                          "message": "m"})  # fmt: skip
    assert type(odd) is RuntimeError and str(odd) == "UnicodeDecodeError: m"


def test_a_journal_naming_a_module_never_imports_it(tmp_path: Path) -> None:
    # A module with a side effect on import, on the path of a fresh interpreter: a recorded error
    # naming its class must not run it.
    (tmp_path / "booby_trap.py").write_text("open(__file__ + '.ran', 'w').close()\nclass Boom(Exception): pass\n")
    code = textwrap.dedent(
        """
        from grctl.workflow.task import _rebuild_error
        err = _rebuild_error({"type": "Boom", "qualified_type": "booby_trap.Boom", "message": "m"})
        print(type(err).__name__, err)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RuntimeError Boom: m"
    assert not (tmp_path / "booby_trap.py.ran").exists()
