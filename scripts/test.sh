#!/usr/bin/env bash
# Set-up, then the whole test suite: C++ unit tests (ctest, run by the plugin build), the
# Python tests (with line coverage), and the custom-op tests again under AddressSanitizer + UBSan
# (with the C++ line coverage of plugins/core and plugins/cpu).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./scripts/setup.sh
. .venv/bin/activate

echo "== pytest (then the bad-input catalogue's count, the fuzz budget and the line coverage of dcn_deploy/)"
python -m pytest -q --durations=15 --cov=dcn_deploy --cov-report=term:skip-covered "$@"

echo "== sanitizers (ASan + UBSan) on the custom-op library"
./scripts/build_plugins.sh --sanitize
./scripts/sanitize_tests.sh
