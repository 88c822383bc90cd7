"""``python -m edgecls.train ...`` = ``edgecls train ...``; handy under ``torchrun -m edgecls.train``."""
import sys

from edgecls.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
