"""What takes the room in the single-file executable: its entries grouped by what they belong
to, largest first, packed (in the file) and unpacked (what each start writes to its temporary
folder). Needs PyInstaller, which only the build's venv holds:

    target/dist-venv/bin/python packaging/contents.py dist/duckpacs [--json]
        [--forbid pyarrow pytest ...]

``--forbid`` fails (exit 1) when a module or file of one of these top-level packages is inside:
`make dist` keeps the developers' tools out of what a clinic runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from PyInstaller.archive.readers import CArchiveReader

# Entry name prefix -> what it belongs to; the first match wins.
GROUPS = (
    ("_duckdb", "duckdb"),
    ("duckdb", "duckdb"),
    ("numpy", "numpy (with OpenBLAS)"),
    ("PIL", "pillow"),
    ("pillow", "pillow"),
    ("_libjpeg", "pylibjpeg-libjpeg"),
    ("_openjpeg", "pylibjpeg-openjpeg"),
    ("duckpacs/_core", "duckpacs._core (Rust)"),
    ("PYZ.pyz", "Python modules of every package (bytecode)"),
    ("libpython", "Python interpreter"),
    ("python3", "Python interpreter"),
    ("base_library.zip", "Python interpreter"),
    ("libcrypto", "OpenSSL (Python's ssl, hashlib)"),
    ("libssl", "OpenSSL (Python's ssl, hashlib)"),
)


def group_of(name: str) -> str:
    for prefix, group in GROUPS:
        if name.startswith(prefix):
            return group
    if name.endswith(".so") or ".so." in name:
        return "other shared libraries"
    return "other files (package data, metadata)"


def contents(path: str) -> dict[str, dict[str, int]]:
    """{group: {"packed": bytes, "unpacked": bytes}}, largest packed first."""
    sizes: dict[str, dict[str, int]] = defaultdict(lambda: {"packed": 0, "unpacked": 0})
    for name, entry in CArchiveReader(path).toc.items():
        _, packed, unpacked, _, _ = entry
        sizes[group_of(name)]["packed"] += packed
        sizes[group_of(name)]["unpacked"] += unpacked
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]["packed"]))


def top_level_names(path: str) -> set[str]:
    """Top-level package names of every Python module and file in the executable."""
    reader = CArchiveReader(path)
    modules = reader.open_embedded_archive("PYZ.pyz").toc
    names = {name.split(".")[0] for name in modules}
    names |= {name.split("/")[0].split(".")[0] for name in reader.toc}
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("executable")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--forbid", nargs="*", default=[], metavar="PACKAGE")
    args = parser.parse_args()
    present = sorted(set(args.forbid) & top_level_names(args.executable))
    if present:
        print(f"error: {args.executable} holds {', '.join(present)}", file=sys.stderr)
        return 1
    sizes = contents(args.executable)
    if args.json:
        json.dump(sizes, sys.stdout, indent=2)
        print()
        return 0
    print(f"{'what':<45} {'packed MB':>10} {'unpacked MB':>12}")
    for group, size in sizes.items():
        print(f"{group:<45} {size['packed'] / 1e6:>10.1f} {size['unpacked'] / 1e6:>12.1f}")
    packed = sum(s["packed"] for s in sizes.values())
    unpacked = sum(s["unpacked"] for s in sizes.values())
    print(f"{'total':<45} {packed / 1e6:>10.1f} {unpacked / 1e6:>12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
