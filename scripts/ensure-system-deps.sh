#!/usr/bin/env bash
# Installs the Debian packages the interop tests and benchmarks drive (DCMTK), when they are
# missing and we may install them. Tests that need a missing tool skip with a reason.
set -uo pipefail

packages=()
# Not `command -v`: pynetdicom installs its own storescu/echoscu into .venv/bin.
[ -x /usr/bin/storescu ] || packages+=(dcmtk)
# Debian's Chromium drives the web viewer's end-to-end test (Playwright, no browser download).
[ -x /usr/bin/chromium ] || packages+=(chromium)
# Orthanc: the peer of the DIMSE interop test and of bench/bench_dimse.py.
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || packages+=(orthanc)
# IOD checks of our output (DICOMDIR, scans) by dciodvfy.
command -v dciodvfy >/dev/null 2>&1 || packages+=(dicom3tools)
# PostgreSQL: bench/bench_pg_index.py starts a temporary cluster (the shared index, issue 26).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages+=(postgresql)
# HAProxy: tests/interop/test_cluster_haproxy.py balances two serve nodes behind it.
[ -x /usr/sbin/haproxy ] || packages+=(haproxy)
# strace: `make test-dist` traces the executable's file opens.
command -v strace >/dev/null 2>&1 || packages+=(strace)
[ ${#packages[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: ${packages[*]} not installed and cannot install (need root and apt-get);" \
         "interop tests will be skipped" >&2
    exit 0
fi
echo "installing Debian packages: ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq "${packages[@]}" >/dev/null \
    || echo "warning: apt-get install ${packages[*]} failed; interop tests will be skipped" >&2
