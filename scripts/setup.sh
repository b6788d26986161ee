#!/usr/bin/env bash
# All the set-up, idempotent: .venv at the repository root with the pinned packages,
# this project installed (editable), and the plugins built. Sourced by demo.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=.venv/.dcn-deploy-requirements
want="$(sha256sum requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned packages (requirements.txt)"
  # torch first and alone: exactly 2.13.0 resolves to the local CPU wheel.
  python -m pip install --quiet --disable-pip-version-check "$(grep -E '^torch==' requirements.txt)"
  python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

./scripts/build_plugins.sh
