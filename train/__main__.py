"""``python -m edgecls.train ...`` = ``edgecls train ...``; handy under ``torchrun -m edgecls.train``."""
from __future__ import annotations

import logging
import sys

import typer

from edgecls.errors import EXIT_INTERRUPTED, EdgeclsError
from edgecls.train.cli import train_command


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(train_command)
    try:
        app(standalone_mode=False)
    except EdgeclsError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:  # usage errors (typer vendors click: no `import click`) and typer.Exit
        code = getattr(e, "exit_code", None)
        if code is None:
            raise
        if hasattr(e, "show"):
            e.show()
        sys.exit(code)


if __name__ == "__main__":
    main()
