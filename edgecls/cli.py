"""The ``edgecls`` command: a thin shell. Each room owns its command functions; heavy imports happen inside them.

Errors derived from :class:`edgecls.core.errors.EdgeclsError` become one clear message and a documented exit code.
"""
from __future__ import annotations

import logging
import sys
from typing import List, Optional

import typer

from edgecls import __version__
from edgecls.core.errors import EXIT_FAILURE, EXIT_INPUT, EXIT_INTERRUPTED, EdgeclsError, as_write_error
from edgecls.evaluation.cli import bench_command, eval_command
from edgecls.export.calibrate_cli import calibrate_cli
from edgecls.export.cli import build_engine_command, calib_sample_command, export_command
from edgecls.export.drift_cli import drift_reference_cli
from edgecls.runtime.cli import run_command
from edgecls.runtime.doctor.cli import doctor_command
from edgecls.runtime.label.cli import label_command
from edgecls.runtime.scale.cli import ray_command
from edgecls.runtime.serve.cli import serve_command
from edgecls.train.cli import train_command

app = typer.Typer(
    name="edgecls",
    help="Edge image classification: train → export (parity-checked ONNX/FP16/INT8/TensorRT) → run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts are Rich markup: a bracketed note "[...]" would be read as a style tag and vanish, so notes are
    # written "(default: ...)" / "(recipe: ...)" (tests/test_cli_help.py renders every --help to check)
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgecls {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    _root.verbose = verbose


app.command("train")(train_command)
app.command("export")(export_command)
app.command("build-engine")(build_engine_command)
app.command("calib-sample")(calib_sample_command)
app.command("calibrate")(calibrate_cli)
app.command("drift-reference")(drift_reference_cli)
app.command("run")(run_command)
app.command("label")(label_command)
app.command("serve")(serve_command)
app.command("ray")(ray_command)
app.command("eval")(eval_command)
app.command("bench")(bench_command)
app.command("doctor")(doctor_command)


@app.command("demo")
def demo_command(
    out: str = typer.Option("runs/demo", help="Folder for the generated data, checkpoint and exports."),
    epochs: int = typer.Option(8, help="Training epochs on the generated data."),
) -> None:
    """The whole pipeline on a small dataset generated on the spot: train → export (parity) → run."""
    from edgecls.demo import run_demo

    run_demo(out=out, epochs=epochs)


def main(argv: Optional[List[str]] = None) -> None:
    try:
        rv = app(args=argv, standalone_mode=False)
    except EdgeclsError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM where a command turns it into Terminated (exit 143)
        code = getattr(e, "exit_code", EXIT_INTERRUPTED)
        typer.echo("terminated (SIGTERM)" if code != EXIT_INTERRUPTED else "interrupted", err=True)
        sys.exit(code)
    except SystemExit:
        raise
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # usage errors (click's, or the copy newer typer vendors): they carry exit_code/show()
        code = getattr(e, "exit_code", None)
        if code is None or not hasattr(e, "show"):
            from edgecls.runtime.preprocess import ImageReadError

            if isinstance(e, ImageReadError):  # an image a command needed is unreadable: bad input, its message
                typer.echo(f"error: {e}", err=True)
                sys.exit(EXIT_INPUT)
            disk = as_write_error(e)  # disk full / quota / read-only: a message and exit 8, not a bug report
            if disk is not None:
                typer.echo(f"error: {disk}", err=True)
                logging.getLogger("edgecls").debug("write failed", exc_info=True)
                sys.exit(disk.exit_code)
            if getattr(_root, "verbose", 0):
                logging.getLogger("edgecls").exception("unexpected error")
            else:  # the README's promise: tracebacks only with -v
                typer.echo(f"error: unexpected {type(e).__name__}: {e}\n(a bug: run again with -v for the traceback, "
                           "and please report it)", err=True)
            sys.exit(EXIT_FAILURE)
        e.show()
        sys.exit(code)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
