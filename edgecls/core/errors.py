"""Errors the CLI turns into messages and exit codes that scripts and supervisors can rely on.

| exit | meaning |
|------|---------|
| 0 | success: every input classified (run), every artifact passed (export) |
| 1 | unexpected failure (a bug: please report it with the traceback from ``-v``) |
| 2 | bad input: a path, option, dataset, checkpoint or model that is missing or invalid |
| 3 | parity failed: an exported artifact does not match the PyTorch model within tolerance |
| 4 | capability missing: TensorRT / a GPU / a requested execution provider is not available |
| 5 | a camera or stream could not be opened |
| 6 | some inputs failed: unreadable images, a truncated video (run: error records written, the rest classified) |
| 7 | nothing classified (every input failed), or a live camera/stream was lost after its reconnect attempts |
| 8 | an output could not be written: disk full, quota, read-only (files already written are left intact) |
| 9 | training diverged: the loss or the logits became NaN/infinite (lower --lr; earlier checkpoints are intact) |
| 130 | interrupted (Ctrl-C, SIGINT) |
| 143 | terminated (SIGTERM: docker stop, systemctl stop); handled like Ctrl-C (run and serve alike) |

:data:`EXIT_MEANINGS` holds the same table; docs/exit-codes.md's table is checked against it by a test.
"""
from __future__ import annotations

import errno
from typing import Dict, Optional

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INPUT = 2
EXIT_PARITY = 3
EXIT_CAPABILITY = 4
EXIT_SOURCE = 5
EXIT_PARTIAL = 6
EXIT_NOTHING = 7
EXIT_WRITE = 8
EXIT_DIVERGED = 9
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

EXIT_MEANINGS: Dict[int, str] = {
    EXIT_OK: "success: every input classified (run), every artifact passed parity (export)",
    EXIT_FAILURE: "unexpected failure (a bug; `-v` shows the traceback)",
    EXIT_INPUT: "bad input: a path, option, dataset, checkpoint or model that is missing or invalid",
    EXIT_PARITY: "parity failed: an exported artifact does not match the PyTorch model within tolerance",
    EXIT_CAPABILITY: "capability missing: TensorRT, a GPU, or the requested execution provider",
    EXIT_SOURCE: "a camera or stream could not be opened",
    EXIT_PARTIAL: "some inputs failed (unreadable images, a truncated video): error records written, the rest classified",
    EXIT_NOTHING: "nothing classified (every input failed), or a live camera/stream was lost after its reconnect attempts",
    EXIT_WRITE: "an output could not be written (disk full, quota, read-only); files already written are intact",
    EXIT_DIVERGED: "training diverged: loss or logits became NaN/infinite (lower `--lr`); earlier checkpoints are intact",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C / SIGINT; `run` still prints its summary)",
    EXIT_TERMINATED: "terminated by SIGTERM (`docker stop`, `systemctl stop`): handled like Ctrl-C (`run` and `serve` alike)",
}

#: errno values that mean "the disk cannot take this write" rather than a bug or a bad path.
WRITE_ERRNOS = frozenset(
    e for e in (getattr(errno, n, None) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS")) if e is not None
)


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


class OutputWriteError(EdgeclsError):
    """An output could not be written (disk full, quota, read-only filesystem); nothing earlier was replaced."""

    exit_code = EXIT_WRITE


class TrainingDiverged(EdgeclsError):
    """The training loss or the model's logits became NaN or infinite."""

    exit_code = EXIT_DIVERGED


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an interrupt (see :mod:`edgecls.runtime.run.signals`): the same clean stop as Ctrl-C."""

    exit_code = EXIT_TERMINATED


def _is_write_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return True
    # torch.save to a path reports a short write from its C++ writer, without the errno
    text = str(exc) if isinstance(exc, RuntimeError) else ""
    return "file write failed" in text or ("inline_container" in text and "unexpected pos" in text)


def as_write_error(exc: BaseException) -> Optional[OutputWriteError]:
    """An :class:`OutputWriteError` with a clear message when ``exc`` (or what caused it) is a failed write because
    the disk is full, over quota or read-only; else None. The CLI calls it on unexpected exceptions."""
    seen = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if _is_write_failure(e):
            where = getattr(e, "filename", None)
            if isinstance(e, OSError):
                reason = e.strerror or str(e)
            else:
                reason = f"the write was cut short, the disk is probably full ({e})"
            target = f"cannot write {where}" if where else "cannot write an output"
            return OutputWriteError(
                f"{target}: {reason} (free some space or choose another output folder; files written before are "
                "intact)"
            )
        e = e.__cause__ or e.__context__
    return None
