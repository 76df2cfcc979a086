"""Helpers shared by subcommands: one-line user errors, JSON output."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from core.paths import clash_message


def fail(message: str, *, code: int = 2) -> None:
    """Print one clear line on stderr and exit (2 = usage/config error by convention)."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ValueError/FileNotFoundError from `core` into one line and exit code 2; a file
    where a folder is needed (or the reverse) that a command did not check up front is named
    in one line too (core.paths.clash_message)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as err:
            fail(clash_message(err))
        except (ValueError, FileNotFoundError) as err:
            fail(str(err))
        except KeyboardInterrupt:
            typer.secho("interrupted", fg="yellow", err=True)
            sys.exit(130)

    return wrapper
