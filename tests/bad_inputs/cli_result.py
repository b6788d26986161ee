"""Runs ``dcn-deploy`` in-process (typer's CliRunner) and checks the shape of a rejection."""
from __future__ import annotations

from typer.testing import CliRunner

from dcn_deploy.cli import app


def cli_error(args: list[str]) -> str:
    """The one error line of ``dcn-deploy ARGS``, after checking exit code 2 and that no exception
    escaped (no traceback). Our own errors read ``error: ...``; typer's usage errors end with
    click's ``Error: ...`` line after the usage lines."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, f"exit {result.exit_code}:\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.lower().startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0]
