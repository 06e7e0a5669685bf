#!/usr/bin/env bash
# `make dist`: the abi3 wheel and the single-file executable, both into dist/.
#
# The executable is built in a virtual environment of its own (target/dist-venv) that holds
# only the wheel, its run-time dependencies and PyInstaller: the developers' .venv carries
# pyarrow, pytest and the other dev tools, which must never end up in the file a clinic runs.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
venv=target/dist-venv

rm -f dist/duckpacs-*.whl
maturin build --release --strip --quiet --out dist
wheel=$(ls dist/duckpacs-*.whl)
echo "wheel: $wheel"

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q -U pip
"$venv/bin/python" -m pip install -q "$wheel" 'pyinstaller>=6.10,<7'

"$venv/bin/pyinstaller" --noconfirm --log-level WARN \
    --distpath dist --workpath target/pyinstaller packaging/duckpacs.spec
name=$("$venv/bin/python" -c 'import platform; from importlib.metadata import version
print("duckpacs-" + version("duckpacs") + "-linux-" + platform.machine())')
ln -sfn "$name" dist/duckpacs
echo "executable: dist/$name ($(du -m "dist/$name" | cut -f1) MB), linked as dist/duckpacs"
# What takes the room (packed in the file, unpacked at each start); and a failure if any of
# the dev extra's packages got in.
"$venv/bin/python" packaging/contents.py "dist/$name" --forbid \
    pyarrow pytest _pytest hypothesis mypy ruff playwright imagecodecs zstandard \
    dicomweb_client requests
