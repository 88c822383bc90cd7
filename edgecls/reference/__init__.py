"""The PyTorch reference every stage shares: model registry, checkpoints, and a TorchBackend that is a runtime Backend.

train/, export/ and eval/bench import it; the runtime never does (it stays torch-free).
"""
