#!/usr/bin/env bash
# Install the browser the console's tests drive: Debian's Chromium and its ChromeDriver
# (/usr/bin/chromium, /usr/bin/chromedriver). Idempotent: does nothing when chromium is on
# PATH. Without root or apt-get it says what to run and carries on (the browser tests then
# skip), except under CI, where a missing browser must fail the run instead of skipping tests.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
PKGS="chromium chromium-driver"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "installing Chromium ($PKGS)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
    exit 0
fi
echo "Chromium not installed: run 'sudo apt-get install $PKGS' (the console's browser tests need it)" >&2
if [ "${CI:-}" = "true" ]; then
    exit 1
fi
