#!/usr/bin/env bash
# All the set-up, idempotent: .venv at the repository root with the pinned packages,
# this project installed (editable), the optional TensorRT-RTX and Ray Serve extras where pip can get them,
# and the plugins built (with the libtensorrt_rtx.so alias TensorRT-RTX's wheel lacks,
# plugins/tensorrt/rtx_soname/). Sourced by demo.sh and test.sh.
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
  # The optional extra "rtx" (the "#rtx " lines of requirements.txt): TensorRT-RTX, 95 MB, no GPU needed.
  mapfile -t rtx_packages < <(sed -n 's/^#rtx //p' requirements.txt)
  if [ "${#rtx_packages[@]}" -gt 0 ]; then
    if python -m pip install --quiet --disable-pip-version-check "${rtx_packages[@]}" > .venv/.rtx-install.log 2>&1; then
      echo "setup: installed the optional TensorRT-RTX extra (${rtx_packages[*]})"
    else
      echo "setup: optional TensorRT-RTX extra not installed (pip could not install ${rtx_packages[*]}; see .venv/.rtx-install.log): dcn-deploy build --target rtx and tests/test_rtx_build.py are unavailable"
    fi
  fi
  # The optional extra "ray" (the "#ray " lines): Ray Serve, installed with the pinned packages so that pip keeps them.
  mapfile -t ray_packages < <(sed -n 's/^#ray //p' requirements.txt)
  if [ "${#ray_packages[@]}" -gt 0 ]; then
    if python -m pip install --quiet --disable-pip-version-check -r requirements.txt "${ray_packages[@]}" > .venv/.ray-install.log 2>&1; then
      echo "setup: installed the optional Ray Serve extra (${ray_packages[*]})"
    else
      echo "setup: optional Ray Serve extra not installed (pip could not install ${ray_packages[*]}; see .venv/.ray-install.log): dcn-deploy serve --engine ray and tests/test_ray_serve.py are unavailable"
    fi
  fi
  echo "$want" > "$stamp"
fi

./scripts/build_plugins.sh
