"""``edgecls doctor``: is this machine (a Jetson above all) ready to run a model, and if not, what to do about it.

- ``platform.py``: the JetPack table (L4T → JetPack → Ubuntu, Python, CUDA, TensorRT, install profile) as data,
  ``/etc/nv_tegra_release`` parsing, venv facts.
- ``probes.py``: what really imports (in a child interpreter: NumPy-ABI crashes stay there), which onnxruntime
  providers really attach (a session on a one-node model), the GPU and CUDA runtime, cameras, GStreamer elements,
  power mode and clocks.
- ``checks.py``: facts → findings, each problem with its fix; ``model.py``: readiness for a given model (engine
  preflight from its build record, then an actual load); ``report.py``: text and JSON; ``cli.py``: the command.

Torch-free, like the rest of :mod:`edgecls.runtime`: it runs on a Jetson that has only JetPack and the runtime.
"""
