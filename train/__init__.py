"""edgecls.train — fine-tune a torchvision classifier and write a checkpoint that carries its ModelSpec.

Imports torch lazily: importing this package is cheap; the submodules need the ``train`` extra.
"""
