"""The floor every room stands on: errors and exit codes, atomic files, image listing, progress, device names.

Standard library + numpy only (anything heavier is imported lazily inside the one function that needs it).
"""
