"""``edgecls label DIR``: the labelling page for a collection folder. Only typer/stdlib at import time."""
from __future__ import annotations

import time

import typer


def label_command(
    folder: str = typer.Argument(..., help="The folder `edgecls run --collect DIR` wrote (manifest.jsonl, images/)."),
    port: int = typer.Option(8765, "--port", help="Port of the page (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface: 127.0.0.1 (this machine; ssh -L to reach it) "
                             "or e.g. 0.0.0.0, which then needs an access token in $EDGECLS_TOKEN."),
) -> None:
    """Label collected frames in a browser: grouped by what the model said, keyboard-friendly, in bulk.

    Writes DIR/labelled/<class>/*.jpg (what `edgecls train --data` and `edgecls calibrate --data` read) and
    DIR/labels.json. Runs until Ctrl-C or SIGTERM. Exit codes: 2 bad folder, labels file or address.
    """
    from edgecls.runtime.label.server import LabelApp
    from edgecls.runtime.label.store import LabelStore
    from edgecls.runtime.run.access import env_token
    from edgecls.runtime.run.signals import sigterm_as_interrupt

    if not 0 <= port <= 65535:
        from edgecls.core.errors import InputError

        raise InputError(f"--port must be in 0..65535 (0: any free port), got {port}")
    store = LabelStore(folder)
    token = env_token()
    app = LabelApp(store, host, port, token)
    counts = store.state()["counts"]
    typer.echo(f"edgecls label: {len(store.items)} collected images ({counts['pending']} to label) in {store.root}",
               err=True)
    typer.echo(f"edgecls label: page on {app.url}{'?token=$EDGECLS_TOKEN' if token else ''} (Ctrl-C to stop)",
               err=True)
    try:
        with sigterm_as_interrupt():
            while True:
                time.sleep(3600)
    finally:
        app.close()
