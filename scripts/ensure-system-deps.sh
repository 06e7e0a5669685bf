#!/usr/bin/env bash
# Installs the Debian packages the interop tests and benchmarks drive (DCMTK), when they are
# missing and we may install them. Tests that need a missing tool skip with a reason.
set -uo pipefail

packages=()
command -v storescu >/dev/null 2>&1 || packages+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || packages+=(dicom3tools)  # IOD checks of our output
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
