#!/usr/bin/env bash
# All the set-up, idempotent: .venv at the repository root with the pinned packages,
# this project installed (editable), the optional TensorRT-RTX and Ray Serve extras where pip can get them,
# the optional Triton extra (.venv-triton: tritonserver from nvidia-pytriton) likewise,
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
  # The optional extra "triton" (the "#triton " lines of requirements.txt): the tritonserver binary with its
  # Python backend that the nvidia-pytriton wheel bundles, for tests/test_tritonserver.py. Its own
  # environment .venv-triton (nvidia-pytriton pins numpy < 2), which is also the Python of the backend's
  # model: onnxruntime (the version pinned above) and this project (editable, --no-deps: no torch) go there too.
  mapfile -t triton_packages < <(sed -n 's/^#triton //p' requirements.txt)
  if [ "${#triton_packages[@]}" -gt 0 ]; then
    triton_log=.venv/.triton-install.log
    if { [ -x .venv-triton/bin/python ] || "$python" -m venv .venv-triton; } > "$triton_log" 2>&1 \
        && .venv-triton/bin/python -m pip install --quiet --disable-pip-version-check "${triton_packages[@]}" \
           "$(grep -E '^onnxruntime==' requirements.txt)" "$(grep -E '^setuptools==' requirements.txt)" >> "$triton_log" 2>&1 \
        && .venv-triton/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
           -e . >> "$triton_log" 2>&1; then
      echo "setup: installed the optional Triton extra into .venv-triton (${triton_packages[*]})"
      # The backend's stub links the system's shared libpython of this Python version (Debian libpython3.X).
      pyver="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
      if ! ldconfig -p | grep -q "libpython${pyver}.so.1.0 " && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
        if { apt-get install -y -q "libpython${pyver}" || { apt-get update -q && apt-get install -y -q "libpython${pyver}"; }; } >> "$triton_log" 2>&1; then
          echo "setup: installed Debian's libpython${pyver} (the tritonserver Python backend stub links it)"
        else
          echo "setup: could not install Debian's libpython${pyver} (see $triton_log): the tritonserver test will skip"
        fi
      fi
    else
      echo "setup: optional Triton extra not installed (see $triton_log): tests/test_tritonserver.py skips its tritonserver test"
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
