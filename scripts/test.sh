#!/usr/bin/env bash
# Set-up, then the whole test suite: C++ unit tests (ctest, run by the plugin build), the
# Python tests, and the op and bad-input tests again under AddressSanitizer + UBSan.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./scripts/setup.sh
. .venv/bin/activate

echo "== pytest"
python -m pytest -q "$@"

echo "== sanitizers (ASan + UBSan) on the custom-op library"
./scripts/build_plugins.sh --sanitize
./scripts/sanitize_tests.sh
