"""Helpers shared by subcommands: one-line user errors, JSON output."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from core.atomic import is_no_space
from core.paths import clash_message


def fail(message: str, *, code: int = 2) -> None:
    """Print one clear line on stderr and exit (2 = usage/config error by convention)."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def no_space_message(err: OSError) -> str:
    """One line for a full disk or quota: the file that could not be written, and what to do."""
    if not err.filename:  # a plain write's error names no file
        return "no space left on device while writing: free space on that disk and run again"
    return (
        f"{err.filename}: no space left on device; it was not written (a file there before "
        "is unchanged): free space on that disk and run the command again"
    )


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ValueError/FileNotFoundError from `core` into one line and exit code 2; a file
    where a folder is needed (or the reverse) that a command did not check up front is named
    in one line too (core.paths.clash_message). A full disk (ENOSPC/EDQUOT) is one line
    naming the file and exit code 1 (`core.atomic` writes leave no partial file)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (FileExistsError, IsADirectoryError, NotADirectoryError) as err:
            fail(clash_message(err))
        except (ValueError, FileNotFoundError) as err:
            fail(str(err))
        except OSError as err:
            if not is_no_space(err):
                raise
            fail(no_space_message(err), code=1)
        except KeyboardInterrupt:
            typer.secho("interrupted", fg="yellow", err=True)
            sys.exit(130)

    return wrapper
