"""Eval and bench: any artifact (checkpoint, ONNX, TensorRT engine) measured through the runtime path.

- :mod:`.models`   open any artifact kind as one ``infer``-able model with its spec
- :mod:`.data`     labeled ImageFolder listing and preprocessed batches
- :mod:`.evaluate` ``edgecls eval``: metrics, calibration, PR curve, files
- :mod:`.bench`    ``edgecls bench``: latency/throughput per artifact × batch × threads beside the reference,
  built on :mod:`.timing`, :mod:`.macs`, :mod:`.peak`, :mod:`.inputs`, :mod:`.stages`; :mod:`.results` and
  :mod:`.tables` hold and print the numbers
- :mod:`.machine`  what machine a number was measured on
- :mod:`.cli`      the typer commands ``eval`` and ``bench``
"""
