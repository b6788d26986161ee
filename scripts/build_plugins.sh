#!/usr/bin/env bash
# Builds the native plugins (libdcn_deploy_ort.so) and runs the C++ unit tests.
#
#   scripts/build_plugins.sh              Release build in build/
#   scripts/build_plugins.sh --sanitize   ASan+UBSan build in build-sanitize/
#
# ONNX Runtime headers come from scripts/fetch_ort_headers.sh unless
# ORT_INCLUDE_DIR names a directory holding onnxruntime_cxx_api.h.
# Prints one summary line on success; on failure prints the full log.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

sanitize=OFF
build_dir="${repo_root}/build"
build_type=Release
case "${1:-}" in
    "") ;;
    --sanitize)
        sanitize=ON
        build_dir="${repo_root}/build-sanitize"
        build_type=Debug  # The sanitizer flags bring their own -O1 -g.
        ;;
    -h|--help)
        sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "build_plugins: unknown argument '$1' (usage: scripts/build_plugins.sh [--sanitize])" >&2
        exit 2
        ;;
esac

mkdir -p "${build_dir}"
log="${build_dir}/build_plugins.log"
: > "${log}"

fail() {
    echo "build_plugins: FAILED: $1 (log: ${log})" >&2
    cat "${log}" >&2
    echo "build_plugins: FAILED: $1" >&2
    exit 1
}

if [[ -n "${ORT_INCLUDE_DIR:-}" ]]; then
    ort_include_dir="${ORT_INCLUDE_DIR}"
else
    "${repo_root}/scripts/fetch_ort_headers.sh" >> "${log}" 2>&1 || fail "fetching ONNX Runtime headers"
    ort_include_dir="${repo_root}/.deps/onnxruntime/include"
fi

configure_args=(
    -S "${repo_root}" -B "${build_dir}"
    -DCMAKE_BUILD_TYPE="${build_type}"
    -DORT_INCLUDE_DIR="${ort_include_dir}"
    -DDCN_DEPLOY_SANITIZE="${sanitize}"
)
if [[ "${sanitize}" == ON ]]; then
    # The CUDA compile check is independent of the sanitizers; the normal build covers it.
    configure_args+=(-DDCN_DEPLOY_BUILD_CUDA=OFF)
fi

cmake "${configure_args[@]}" >> "${log}" 2>&1 || fail "cmake configure"
cmake --build "${build_dir}" -j2 >> "${log}" 2>&1 || fail "build"
(cd "${build_dir}" && ctest --output-on-failure) >> "${log}" 2>&1 || fail "C++ unit tests (ctest)"

ctest_summary="$(grep -E 'tests passed' "${log}" | tail -n 1)"
echo "build_plugins: ${build_dir#"${repo_root}/"}/lib/libdcn_deploy_ort.so (${build_type}, sanitize=${sanitize}); ctest: ${ctest_summary}"
