#!/usr/bin/env bash
# Install the OCR engine the offline extractor uses for scans: Tesseract 5 from
# Debian, with English, German and French (orientation detection comes with it).
# Idempotent: does nothing when `tesseract` is already on PATH. Without root or
# apt-get it says what to run and carries on (the OCR tests then skip), except
# under CI, where a missing engine must fail the run instead of skipping tests.
set -euo pipefail
if command -v tesseract >/dev/null 2>&1; then
    exit 0
fi
PKGS="tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu tesseract-ocr-fra"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    echo "installing Tesseract OCR ($PKGS)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS >/dev/null
    exit 0
fi
echo "OCR engine not installed: run 'sudo apt-get install $PKGS' (scanned documents need it)" >&2
if [ "${CI:-}" = "true" ]; then
    exit 1
fi
