"""`python -m tests.web_support.serve_folder DIR [KEY=VALUE...]`: the web layer over a folder
of test files in a process of its own (so a test can read its memory), until stdin closes.
Prints the URL once listening."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.web_support.server import web_server


def main() -> None:
    overrides = dict(arg.split("=", 1) for arg in sys.argv[2:])
    with web_server(Path(sys.argv[1]), **overrides) as server:
        print(server.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
