"""One exception family for the library; only ``cli.py`` turns them into exit codes."""

from __future__ import annotations


class RstackError(Exception):
    """Something rstack could not do. Messages say what failed, the value, and the fix."""

    exit_code = 1


class InputError(RstackError):
    """Bad input data: a file, column or value the user has to fix."""

    exit_code = 2


class ConfigError(RstackError):
    """A bad configuration value or command-line option."""

    exit_code = 2


class RuntimeStartError(RstackError):
    """Ray or Spark on Ray could not be started or reached."""


class TrainingError(RstackError):
    """A training stage failed after start-up."""
