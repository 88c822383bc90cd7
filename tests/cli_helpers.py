"""The real ``edgecls`` entry point run in-process by tests — the one copy of that harness.

The CLI points the root logger at the current sys.stderr, which pytest swaps (and closes) per test: the root
logger's handlers and level are restored afterwards, so a later test does not log into a closed stream.
"""
from __future__ import annotations

import logging
from typing import Sequence, Tuple


def run_cli(argv: Sequence) -> int:
    """``edgecls ARGV`` in-process; its exit code."""
    import pytest

    from edgecls.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return e.value.code


def run_cli_captured(argv: Sequence, capsys) -> Tuple[int, str, str]:
    """``edgecls ARGV`` in-process: ``(exit code, stdout, stderr)`` read from pytest's ``capsys``."""
    code = run_cli(argv)
    out = capsys.readouterr()
    return code, out.out, out.err
