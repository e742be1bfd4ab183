#!/bin/sh
# Install what benchmarks/bench.py needs besides the project's venv: nginx and wrk (Debian/Ubuntu).
# The nginx package's own service is not needed; bench.py runs its own nginx on a free port.
set -eu
if command -v nginx >/dev/null && command -v wrk >/dev/null; then
    echo "nginx and wrk are already installed"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends nginx wrk
