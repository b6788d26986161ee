#!/usr/bin/env bash
# Builds the native plugins (libdcn_deploy_ort.so, libdcn_deploy_cuda.so, the
# TensorRT plugin libdcn_deploy_trt<major>.so per TensorRT interface layout,
# the libtensorrt_rtx.so alias TensorRT-RTX needs) and runs the C++ unit tests.
#
#   scripts/build_plugins.sh              Release build in build/
#   scripts/build_plugins.sh --sanitize   ASan+UBSan build in build-sanitize/
#
# ONNX Runtime headers come from scripts/fetch_ort_headers.sh unless
# ORT_INCLUDE_DIR names a directory holding onnxruntime_cxx_api.h.
# TensorRT headers (release build only) come from scripts/fetch_trt_headers.sh
# (.deps/tensorrt/v11.1/include) unless TENSORRT_INCLUDE_DIR is set:
# build/lib/libdcn_deploy_trt11.so (TensorRT 11.x and TensorRT-RTX); with the
# 10.x headers also build/lib/libdcn_deploy_trt10.so (built in build-trt10/).
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
        sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
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

# TensorRT headers for the TensorRT plugin (compile only, never libnvinfer).
# fetch_trt_headers.sh never downloads and exits 0 when it finds no source.
trt_deps_dir="${repo_root}/.deps/tensorrt"
trt10_include_dir="${trt_deps_dir}/v10.16/include"
if [[ "${sanitize}" == OFF ]]; then
    "${repo_root}/scripts/fetch_trt_headers.sh" >> "${log}" 2>&1 || fail "extracting TensorRT headers"
    if [[ -n "${TENSORRT_INCLUDE_DIR:-}" ]]; then
        configure_args+=(-DTENSORRT_INCLUDE_DIR="${TENSORRT_INCLUDE_DIR}")
    elif [[ -f "${trt_deps_dir}/v11.1/include/NvInfer.h" ]]; then
        configure_args+=(-DTENSORRT_INCLUDE_DIR="${trt_deps_dir}/v11.1/include")
    fi
fi

# "11.1" from <include dir>/NvInferVersion.h.
trt_header_version() {
    awk '/#define TRT_(MAJOR|MINOR)_ENTERPRISE/ { v = v (v == "" ? "" : ".") $3 } END { print v }' \
        "$1/NvInferVersion.h" 2>/dev/null
}

cmake "${configure_args[@]}" >> "${log}" 2>&1 || fail "cmake configure"
cmake --build "${build_dir}" -j2 >> "${log}" 2>&1 || fail "build"
# The sanitizer build counts line coverage (--coverage): start from zero counts every run.
[[ "${sanitize}" == ON ]] && find "${build_dir}" -name '*.gcda' -delete
(cd "${build_dir}" && ctest --output-on-failure) >> "${log}" 2>&1 || fail "C++ unit tests (ctest)"

trt_summary="TensorRT plugin skipped (no TensorRT headers or no nvcc)"
if [[ "${sanitize}" == ON ]]; then
    trt_summary="TensorRT plugin not part of the sanitizer build"
elif grep -q ' dcn_deploy_trt$' <<< "$(cmake --build "${build_dir}" --target help 2>/dev/null)"; then
    trt_include_dir="$(sed -n 's/^TENSORRT_INCLUDE_DIR:PATH=//p' "${build_dir}/CMakeCache.txt")"
    trt_version="$(trt_header_version "${trt_include_dir}")"
    trt_summary="TensorRT plugin lib/libdcn_deploy_trt${trt_version%%.*}.so (TensorRT ${trt_version:-?} headers)"
    # The plugin once more against the 10.x headers (-Werror as always), into
    # build/lib/libdcn_deploy_trt10.so next to the 11.x one. CUDA: sm_75 code
    # and compute_75 PTX only (the driver compiles the PTX for newer GPUs), to
    # keep this second build short; DCN_DEPLOY_TRT10_CUDA_ARCHITECTURES overrides.
    if [[ -f "${trt10_include_dir}/NvInfer.h" && "${trt_include_dir}" != "${trt10_include_dir}" ]]; then
        trt10_build_dir="${repo_root}/build-trt10"
        echo "== TensorRT 10.x plugin in ${trt10_build_dir}" >> "${log}"
        cmake -S "${repo_root}" -B "${trt10_build_dir}" -DCMAKE_BUILD_TYPE=Release \
            -DTENSORRT_INCLUDE_DIR="${trt10_include_dir}" -DDCN_DEPLOY_BUILD_ORT=OFF \
            -DDCN_DEPLOY_TRT_OUTPUT_DIR="${build_dir}/lib" \
            -DDCN_DEPLOY_BUILD_TESTS=OFF -DCMAKE_CUDA_ARCHITECTURES="${DCN_DEPLOY_TRT10_CUDA_ARCHITECTURES:-75}" \
            >> "${log}" 2>&1 || fail "cmake configure of build-trt10 (TensorRT 10.x headers)"
        cmake --build "${trt10_build_dir}" -j2 --target dcn_deploy_trt >> "${log}" 2>&1 \
            || fail "TensorRT plugin against TensorRT 10.x headers (build-trt10)"
        trt10_version="$(trt_header_version "${trt10_include_dir}")"
        trt_summary+=" and lib/libdcn_deploy_trt${trt10_version%%.*}.so (TensorRT ${trt10_version} headers, build-trt10/)"
    fi
fi
rtx_summary="no libtensorrt_rtx.so alias"
[ -f "${build_dir}/lib/rtx/libtensorrt_rtx.so" ] && rtx_summary="TensorRT-RTX alias lib/rtx/libtensorrt_rtx.so"

ctest_summary="$(grep -E 'tests passed' "${log}" | tail -n 1)"
cuda_summary="no CUDA kernels in this build"
[ -f "${build_dir}/lib/libdcn_deploy_cuda.so" ] && cuda_summary="CUDA kernels lib/libdcn_deploy_cuda.so"
# The Jetson compile check (plugins/cuda/CMakeLists.txt): compiled, never run.
arch_check="$(sed -n 's/.*dcn_deploy: CUDA compile check (not run) for //p' "${log}" | tail -n 1)"
[ -n "${arch_check}" ] && cuda_summary+=" (+ compile check of ${arch_check//-real/}, not run)"
echo "build_plugins: ${build_dir#"${repo_root}/"}/lib/libdcn_deploy_ort.so (${build_type}, sanitize=${sanitize}); ${cuda_summary}; ${trt_summary}; ${rtx_summary}; ctest: ${ctest_summary}"
