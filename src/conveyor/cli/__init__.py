"""The `conveyor` command line (typer + rich)."""

from conveyor.cli.app import app, main

__all__ = ["app", "main"]
