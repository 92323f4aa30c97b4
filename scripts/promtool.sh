#!/usr/bin/env bash
# Prints the path of a promtool binary, installing it on first use.
#
# promtool ships in Debian's `prometheus` package. Installing that package would
# also start a Prometheus server (its maintainer scripts) and pull in its web
# assets, so only the package's file is unpacked here, into .tools/ (ignored by
# git): `apt-get download` + `dpkg-deb -x`. CI runs as root on a fresh machine;
# the package lists are refreshed once when the download needs them.
#
#   scripts/promtool.sh                       -> /path/to/promtool
#   "$(scripts/promtool.sh)" check rules ops/prometheus/alerts.yml
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"

if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
if [ -x "$TOOLS/promtool" ]; then
    echo "$TOOLS/promtool"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(
    cd "$work"
    if ! apt-get download prometheus >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get download prometheus >/dev/null
    fi
    dpkg-deb -x prometheus_*.deb root
) >&2
mkdir -p "$TOOLS"
install -m 0755 "$work/root/usr/bin/promtool" "$TOOLS/promtool"
echo "$TOOLS/promtool"
