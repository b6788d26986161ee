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
  echo "$want" > "$stamp"
fi

# The optional extras (the "#NAME " lines of requirements.txt), each with its own stamp, written only when it
# installed: one that failed (no network, say) is tried again on the next run, not forgotten.
extra_wanted() {  # $1: name; true when the extra is listed and not yet installed for these requirements
  [ -n "$(sed -n "s/^#$1 //p" requirements.txt)" ] && [ "$(cat ".venv/.extra-$1" 2>/dev/null)" != "$want" ]
}
extra_done() { echo "$want" > ".venv/.extra-$1"; }

# "rtx": TensorRT-RTX, 95 MB, no GPU needed.
if extra_wanted rtx; then
  mapfile -t rtx_packages < <(sed -n 's/^#rtx //p' requirements.txt)
  if python -m pip install --quiet --disable-pip-version-check "${rtx_packages[@]}" > .venv/.rtx-install.log 2>&1; then
    extra_done rtx
    echo "setup: installed the optional TensorRT-RTX extra (${rtx_packages[*]})"
  else
    echo "setup: optional TensorRT-RTX extra not installed (pip could not install ${rtx_packages[*]}; see .venv/.rtx-install.log): dcn-deploy build --target rtx and tests/test_rtx_build.py are unavailable"
  fi
fi

# "triton": the tritonserver binary with its Python backend that the nvidia-pytriton wheel bundles, for
# tests/test_tritonserver.py. Its own environment .venv-triton (nvidia-pytriton pins numpy < 2), which is also
# the Python of the backend's model: onnxruntime (the version pinned above) and this project (editable,
# --no-deps: no torch) go there too. A deleted .venv-triton is made again.
[ -x .venv-triton/bin/python ] || rm -f .venv/.extra-triton
if extra_wanted triton; then
  mapfile -t triton_packages < <(sed -n 's/^#triton //p' requirements.txt)
  triton_log=.venv/.triton-install.log
  if { [ -x .venv-triton/bin/python ] || "$python" -m venv .venv-triton; } > "$triton_log" 2>&1 \
      && .venv-triton/bin/python -m pip install --quiet --disable-pip-version-check "${triton_packages[@]}" \
         "$(grep -E '^onnxruntime==' requirements.txt)" "$(grep -E '^setuptools==' requirements.txt)" >> "$triton_log" 2>&1 \
      && .venv-triton/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
         -e . >> "$triton_log" 2>&1; then
    extra_done triton
    echo "setup: installed the optional Triton extra into .venv-triton (${triton_packages[*]})"
  else
    echo "setup: optional Triton extra not installed (see $triton_log): tests/test_tritonserver.py skips its tritonserver test"
  fi
fi
# The backend's stub links the system's shared libpython of .venv-triton's Python version (Debian libpython3.X).
if [ -x .venv-triton/bin/python ]; then
  pyver="$(.venv-triton/bin/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  if ! ldconfig -p | grep -F "libpython${pyver}.so.1.0 " > /dev/null && command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
    if { apt-get install -y -q "libpython${pyver}" || { apt-get update -q && apt-get install -y -q "libpython${pyver}"; }; } >> .venv/.triton-install.log 2>&1; then
      echo "setup: installed Debian's libpython${pyver} (the tritonserver Python backend stub links it)"
    else
      echo "setup: could not install Debian's libpython${pyver} (see .venv/.triton-install.log): the tritonserver test will skip"
    fi
  fi
fi

# "ray": Ray Serve, installed with the pinned packages so that pip keeps them.
if extra_wanted ray; then
  mapfile -t ray_packages < <(sed -n 's/^#ray //p' requirements.txt)
  if python -m pip install --quiet --disable-pip-version-check -r requirements.txt "${ray_packages[@]}" > .venv/.ray-install.log 2>&1; then
    extra_done ray
    echo "setup: installed the optional Ray Serve extra (${ray_packages[*]})"
  else
    echo "setup: optional Ray Serve extra not installed (pip could not install ${ray_packages[*]}; see .venv/.ray-install.log): dcn-deploy serve --engine ray and tests/test_ray_serve.py are unavailable"
  fi
fi

./scripts/build_plugins.sh
