#!/usr/bin/env bash
# Install Debian 12's PyPy (pypy3 7.3.11, Python 3.9) and its venv module
# for CI's PyPy run (.ci/run, docs/testing.md), as root.
#
# Idempotent: does nothing when both are there.  Quiet: apt's output goes to
# a log that is printed only when the installation fails.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-pypy.sh: must run as root" >&2
    exit 1
fi

if ! command -v pypy3 >/dev/null 2>&1 || ! pypy3 -c 'import ensurepip' >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends pypy3 pypy3-venv; } \
            >"$log" 2>&1; then
        cat "$log" >&2
        echo "install-pypy.sh: installing pypy3 failed" >&2
        exit 1
    fi
    rm -f "$log"
fi

echo "PyPy is ready: $(pypy3 -c 'import sys; print("PyPy %d.%d.%d, Python %d.%d.%d" % (sys.pypy_version_info[:3] + sys.version_info[:3]))')"
