"""The executable's entry point (PyInstaller runs this file as ``__main__``).

It is the console script ``duckpacs`` of the wheel, nothing more: everything the command does
lives in :mod:`duckpacs.cli.main`.
"""

import sys

from duckpacs.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
