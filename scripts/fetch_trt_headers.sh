#!/usr/bin/env bash
# Extracts TensorRT's public headers (include/ of a release tag) from a local
# TensorRT git source into .deps/tensorrt/<tag>/include. The TensorRT plugin
# only compiles against these headers; it never links libnvinfer.
#
#   scripts/fetch_trt_headers.sh              tags v11.1 and v10.16
#   scripts/fetch_trt_headers.sh v10.16 ...   the given tags
#
# Source: $TENSORRT_SOURCE_DIR (a bare git directory or a checkout of
# https://github.com/NVIDIA/TensorRT), else the first local snapshot found in
# the list below. Never downloads. When no source exists, prints one line
# saying the TensorRT plugin compile is skipped and exits 0.
# Idempotent: tags already extracted are left alone.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps_dir="${repo_root}/.deps/tensorrt"

if [[ $# -gt 0 ]]; then
    tags=("$@")
else
    tags=(v11.1 v10.16)
fi

# Prints the git directory of a bare repository or a checkout; fails otherwise.
git_dir_of() {
    git -C "$1" rev-parse --absolute-git-dir 2>/dev/null
}

git_dir=""
if [[ -n "${TENSORRT_SOURCE_DIR:-}" ]]; then
    if ! git_dir="$(git_dir_of "${TENSORRT_SOURCE_DIR}")"; then
        echo "fetch_trt_headers: TENSORRT_SOURCE_DIR=${TENSORRT_SOURCE_DIR} is not a git directory or checkout of TensorRT" >&2
        exit 1
    fi
else
    candidates=(
        "${repo_root}/.deps/tensorrt/src"
        "/work/.mirror/NVIDIA+TensorRT/repo"
        "/opt/TensorRT"
    )
    for candidate in "${candidates[@]}"; do
        if [[ -d "${candidate}" ]] && git_dir="$(git_dir_of "${candidate}")"; then
            break
        fi
        git_dir=""
    done
fi

missing=()
for tag in "${tags[@]}"; do
    [[ -f "${deps_dir}/${tag}/include/NvInfer.h" ]] || missing+=("${tag}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "fetch_trt_headers: headers already present for ${tags[*]} in ${deps_dir}"
    exit 0
fi

if [[ -z "${git_dir}" ]]; then
    echo "fetch_trt_headers: no TensorRT source found; the TensorRT plugin compile is skipped (set TENSORRT_SOURCE_DIR to a TensorRT git checkout, or configure with -DTENSORRT_INCLUDE_DIR=<dir with NvInfer.h> or -DTensorRT_ROOT=<TensorRT install>)"
    exit 0
fi

extracted=()
for tag in "${missing[@]}"; do
    if ! git --git-dir="${git_dir}" rev-parse --verify -q "${tag}^{tree}" > /dev/null; then
        echo "fetch_trt_headers: tag '${tag}' not found in ${git_dir}" >&2
        exit 1
    fi
    target="${deps_dir}/${tag}"
    staging="${deps_dir}/.staging-${tag}"
    rm -rf "${staging}"
    mkdir -p "${staging}"
    git --git-dir="${git_dir}" archive "${tag}" include | tar -x -C "${staging}"
    if [[ ! -f "${staging}/include/NvInfer.h" ]]; then
        rm -rf "${staging}"
        echo "fetch_trt_headers: ${tag} in ${git_dir} has no include/NvInfer.h" >&2
        exit 1
    fi
    # Move into place only once complete, so an interrupted run is redone next time.
    rm -rf "${target}"
    mv "${staging}" "${target}"
    extracted+=("${tag}")
done
echo "fetch_trt_headers: extracted include/ of ${extracted[*]} from ${git_dir} into ${deps_dir}"
