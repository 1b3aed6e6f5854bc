"""The command line: ``refmount`` (mount) and its commands (check, inspect, stats, umount, demo)."""

from refmount.cli.commands import main

__all__ = ["main"]
