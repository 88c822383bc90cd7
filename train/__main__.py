"""``python -m edgecls.train ...`` = ``edgecls train ...``; handy under ``torchrun -m edgecls.train``."""
import sys

from edgecls.cli import main as cli_main


def main() -> None:
    cli_main(["train", *sys.argv[1:]])


if __name__ == "__main__":
    main()
