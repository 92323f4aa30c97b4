#!/usr/bin/env bash
# Static security checks of terraform/ with checkov, in its own virtualenv
# (.venv-checkov/): checkov pins many libraries the project's .venv must not share.
#
#   scripts/checkov.sh            install on first use, then scan (exit 1 on a failed check)
#   CHECKOV_VERSION=3.3.30 scripts/checkov.sh
#
# Every skip is an inline `#checkov:skip=CKV_...:reason` beside its resource.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=".venv-checkov"
VERSION="${CHECKOV_VERSION:-3.3.30}"

if ! "$VENV/bin/checkov" --version 2>/dev/null | grep -qx "$VERSION"; then
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "checkov==$VERSION"
fi

# --skip-download: no calls to the vendor's platform (guidelines, extra policies).
exec "$VENV/bin/checkov" -d terraform --framework terraform --skip-download --compact --quiet "$@"
