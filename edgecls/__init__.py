"""edgecls: edge image classification — train, export with parity checks, run on Jetson or servers.

The package is three rooms with one direction of imports::

    edgecls.train  ──►  edgecls.export  ──►  edgecls.runtime
        └──────────────────────────────────────────▲

``edgecls.runtime`` never imports torch; ``train`` and ``export`` import it lazily.
"""

__version__ = "0.1.0"
