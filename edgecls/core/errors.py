"""Errors the CLI turns into messages and exit codes that scripts can rely on.

| exit | meaning |
|------|---------|
| 0 | success |
| 1 | unexpected failure (a bug: please report it with the traceback from ``-v``) |
| 2 | bad input: a path, option, dataset, checkpoint or model that is missing or invalid |
| 3 | parity failed: an exported artifact does not match the PyTorch model within tolerance |
| 4 | capability missing: TensorRT / a GPU / a requested execution provider is not available |
| 5 | a camera or stream could not be opened |
| 130 | interrupted (Ctrl-C) |
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INPUT = 2
EXIT_PARITY = 3
EXIT_CAPABILITY = 4
EXIT_SOURCE = 5
EXIT_INTERRUPTED = 130


class EdgeclsError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_FAILURE


class InputError(EdgeclsError, ValueError):
    """Bad user input: the message names what was wrong and what is valid."""

    exit_code = EXIT_INPUT


class ParityError(EdgeclsError):
    """An artifact failed its parity check against the PyTorch model."""

    exit_code = EXIT_PARITY


class CapabilityError(EdgeclsError):
    """Something asked for (TensorRT, a GPU, an execution provider) is not available; nothing was substituted."""

    exit_code = EXIT_CAPABILITY


class SourceError(EdgeclsError):
    """A camera or stream could not be opened."""

    exit_code = EXIT_SOURCE
