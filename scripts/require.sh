#!/usr/bin/env bash
# Checks that the tools a make target needs are on this machine, and says in
# one line per missing tool what it is for and how to get it, instead of
# failing later with "make: terraform: No such file or directory".
#
#   scripts/require.sh run     Python 3.11+ (make itself is implied)
#   scripts/require.sh test    also terraform, Java 17+ and the gcloud SDK's
#                              Pub/Sub and Firestore emulator jars
#
# Exit 2 when something is missing (the same code as a usage error).
set -uo pipefail

target="${1:-test}"
sdk="${SLUICE_GCLOUD_SDK:-/usr/lib/google-cloud-sdk}"
python="${PYTHON:-python3}"
missing=()

need() {  # need TOOL WHY HOW
    command -v "$1" >/dev/null 2>&1 || missing+=("$1: $2 (install: $3)")
}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    missing+=("$python 3.11+: Sluice's runtime (install Python 3.11, or run with PYTHON=/path/to/python3.11)")
fi

if [ "$target" = test ]; then
    need terraform "terraform fmt -check of terraform/" "https://developer.hashicorp.com/terraform/install, any 1.x"
    need java "runs Google's Pub/Sub and Firestore emulators for the cloud adapters' tests" "apt-get install openjdk-17-jre-headless"
    if command -v java >/dev/null 2>&1; then
        major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
        [ "${major:-0}" -ge 17 ] 2>/dev/null || missing+=("java 17+: the emulators need it (found ${major:-unknown})")
    fi
    ls "$sdk"/platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar >/dev/null 2>&1 \
        || missing+=("Pub/Sub emulator jar under $sdk: the Pub/Sub adapter's contract tests (install: apt-get install google-cloud-cli-pubsub-emulator, or set SLUICE_GCLOUD_SDK)")
    [ -f "$sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar" ] \
        || missing+=("Firestore emulator jar under $sdk: the Firestore adapter's contract tests (install: apt-get install google-cloud-cli-firestore-emulator, or set SLUICE_GCLOUD_SDK)")
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "make $target cannot start; this machine lacks:" >&2
    for m in "${missing[@]}"; do echo "  - $m" >&2; done
    exit 2
fi
