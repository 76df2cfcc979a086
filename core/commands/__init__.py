"""Subcommands of `orthofed`, one module per family; each exposes `register(app)`."""

from __future__ import annotations

import importlib

import typer

# Modules are listed here as they land; each has `register(app: typer.Typer) -> None`.
COMMAND_MODULES = (
    "core.commands.phantom",
    "core.commands.data",
    "core.commands.model",
    "core.commands.report",
    "core.commands.predict",
)


def register_all(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(app)
