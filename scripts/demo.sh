#!/usr/bin/env bash
# Set-up, then export the demo model with one custom DeformConv node per DCN layer,
# run it in ONNX Runtime with this project's custom op and print the parity table and time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./scripts/setup.sh
. .venv/bin/activate
mkdir -p artifacts
dcn-deploy export --recipe demo -o artifacts/demo.onnx
dcn-deploy validate artifacts/demo.onnx --json artifacts/demo.parity.json
