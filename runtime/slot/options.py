"""The command-line options ``run`` and ``serve`` share for new models (one definition, one help text)."""
from __future__ import annotations

import typer

ALLOW_NEW_CLASSES = typer.Option(False, "--allow-new-classes", help="Accept a new model whose classes differ from "
                                 "the current one's (it learned new products).")
GOLDEN = typer.Option(None, "--golden", help="Labelled folder (DIR/<class>/<image>): a new model must classify it "
                      "at least as well as the current one, else it is refused.")
GOLDEN_TOLERANCE = typer.Option(2.0, "--golden-tolerance", help="Accuracy points a new model may lose on --golden.")
