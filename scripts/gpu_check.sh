#!/usr/bin/env bash
# One-call GPU check, for a machine with an NVIDIA GPU, PyTorch with CUDA and nvcc:
#   1. builds the CUDA kernels for this GPU (CMake; ONNX Runtime headers not needed)
#   2. runs the C++ unit tests of the shared core (ctest; the TensorRT plugin's enqueue on the GPU
#      when TensorRT headers are found)
#   3. runs tests/test_cuda_kernels.py, tests/test_cuda_int8.py and tests/test_cuda_layouts.py on the
#      GPU: FP32 and FP16 (planar and channels-last: NHWC padded to 8/16, NC/32HW32, torch.channels_last)
#      parity against the float64 reference and bitwise against the planar path, INT8 (both
#      algorithms, every layout) bitwise against dcn_deploy.op.int8.deform_conv2d_int8, large
#      coordinates (200x272, offsets up to +-8 px), GPU vs the CPU emulation of the same kernel, bad input
#   4. compute-sanitizer memcheck and racecheck on small cases (every kernel and layout), if installed
#   5. prints a parity and timing table (scripts/gpu_parity.py)
#   5b. times the layer benchmark on the GPU (dcn-deploy bench --device cuda): ours FP16 (planar,
#      channels-last X in place) and INT8 (planar, channels-last) against torchvision and cuDNN
#   6. if TensorRT's Python package imports: builds the plugin, builds an engine of the demo
#      recipe in FP32 and FP16, and validates it against the reference
#   7. if TensorRT-RTX imports and this GPU is one it builds for: builds the demo for this
#      compute capability with --target rtx, runs it (scripts/rtx_run.py) against the float64 reference
#   Steps 6 and 7 otherwise say in one line why they were skipped.
# Uses the system python3 (the one with CUDA PyTorch), not .venv.
# Time: every step runs under its own timeout, and all of them within one budget
# (GPU_CHECK_BUDGET_S, default 450 s: the script ends before 8 minutes however steps hang);
# a step that fails or times out is recorded and the next one runs. Estimated on an H100 with
# 16 cores: build ~1.5 min, CUDA tests ~1.5 min, sanitizers ~1.5 min, parity + bench ~1.5 min.
# Writes two files: $OUT/gpu_check.log (everything) and $OUT/gpu_check.json (every step's status
# and seconds, the parity table and the benchmark rows; scripts/gpu_check_summary.py), OUT
# defaulting to build-gpu/. Exit status: 0 when every step that ran passed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
build_dir="${root}/build-gpu"
mkdir -p "$build_dir"
log_dir="${OUT:-$build_dir}"
mkdir -p "$log_dir"
log="${log_dir}/gpu_check.log"
: > "$log"
export PYTHONPATH="${root}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export DCN_DEPLOY_CUDA_LIB="${build_dir}/lib/libdcn_deploy_cuda.so"

failures=0
budget="${GPU_CHECK_BUDGET_S:-450}"
steps_tsv="${build_dir}/gpu_check_steps.tsv"  # name, status, seconds, exit code, limit, note
: > "$steps_tsv"
parity_json="${build_dir}/gpu_parity.json"
bench_json="${build_dir}/bench_gpu.json"
rm -f "$parity_json" "$bench_json"

record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$steps_tsv"; }

# step NAME TIMEOUT_S COMMAND...: runs under min(TIMEOUT_S, what is left of the budget), logs,
# records PASS/FAIL/TIMEOUT with seconds; never stops the script.
step() {
    local name="$1" limit="$2"
    shift 2
    local left=$((budget - SECONDS - 15))  # 15 s kept for the summary
    if [ "$left" -lt 20 ]; then
        skip "$name" "time budget of ${budget}s spent"
        return
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    echo "== ${name} (limit ${limit}s)" | tee -a "$log"
    local start=$SECONDS rc=0
    timeout -k 10 "$limit" "$@" >> "$log" 2>&1 || rc=$?
    local took=$((SECONDS - start)) status=PASS
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=TIMEOUT; elif [ "$rc" -ne 0 ]; then status=FAIL; fi
    record "$name" "$status" "$took" "$rc" "$limit" ""
    if [ "$status" != PASS ]; then
        failures=$((failures + 1))
        echo "-- ${name}: ${status} after ${took}s (exit ${rc}); last lines:" | tee -a "$log"
        tail -n 30 "$log"
    fi
}
skip() { record "$1" SKIP 0 "" "" "$2"; echo "== $1: skipped ($2)" | tee -a "$log"; }

{
    echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>&1
    nvcc --version | tail -n 2
    "$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.is_available() and torch.cuda.get_device_name())'
} 2>&1 | tee -a "$log"

if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: ${python} has no CUDA PyTorch or no GPU is visible; nothing to check" | tee -a "$log"
    exit 2
fi

arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')"
trt_include=()
for candidate in "${TENSORRT_INCLUDE_DIR:-}" /usr/include/x86_64-linux-gnu /usr/local/tensorrt/include \
        "${root}/.deps/tensorrt/v11.1/include"; do
    if [ -n "$candidate" ] && [ -f "$candidate/NvInfer.h" ]; then trt_include=(-DTENSORRT_INCLUDE_DIR="$candidate"); break; fi
done
jobs="$(nproc 2>/dev/null || echo 8)"
step "build (sm_${arch:-75..90})" 200 bash -c "cmake -S . -B '$build_dir' -DCMAKE_BUILD_TYPE=Release \
    -DDCN_DEPLOY_BUILD_ORT=OFF -DDCN_DEPLOY_BUILD_CUDA=ON ${arch:+-DDCN_DEPLOY_CUDA_ARCHITECTURES=$arch} \
    -DDCN_DEPLOY_CUDA_CHECK_ARCHITECTURES= ${trt_include[*]} && cmake --build '$build_dir' -j$jobs"
step "C++ unit tests (ctest)" 60 ctest --test-dir "$build_dir" --output-on-failure
step "CUDA kernel tests (pytest)" 240 "$python" -m pytest -q -p no:cacheprovider tests/test_cuda_kernels.py \
    tests/test_cuda_int8.py tests/test_cuda_layouts.py -rs

sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if [ -n "$sanitizer" ]; then
    step "compute-sanitizer memcheck" 120 "$sanitizer" --tool memcheck --error-exitcode 1 "$python" scripts/gpu_sanitize_cases.py
    step "compute-sanitizer racecheck" 150 "$sanitizer" --tool racecheck --error-exitcode 1 "$python" scripts/gpu_sanitize_cases.py
else
    skip "compute-sanitizer" "not installed"
fi

step "parity and timing table" 120 "$python" scripts/gpu_parity.py --json "$parity_json"

# Timings of the layer shapes of issue 7 at batch 1 and 8 (ours FP16 planar and channels-last,
# FP32, INT8 planar and channels-last; torchvision; cuDNN dense; workspace bytes), about a minute
# on an H100; the rows go into gpu_check.json.
step "bench --device cuda" 150 "$python" -m dcn_deploy.cli bench --device cuda --json "$bench_json"

# TensorRT: the plugin library of the installed TensorRT's interface layout (libdcn_deploy_trt<major>.so,
# from the headers found above); otherwise one line says why not.
trt_major="$("$python" -c 'import tensorrt; print(tensorrt.__version__.split(".")[0])' 2>/dev/null)"
trt_lib="${build_dir}/lib/libdcn_deploy_trt${trt_major}.so"
if [ -z "$trt_major" ]; then
    skip "TensorRT engine" "the tensorrt Python package does not import in ${python}"
elif [ ! -f "$trt_lib" ]; then
    skip "TensorRT engine" "no $(basename "$trt_lib") in ${build_dir}/lib (TensorRT ${trt_major}.x headers not found; set TENSORRT_INCLUDE_DIR)"
else
    engine_dir="${build_dir}/engine"
    mkdir -p "$engine_dir"
    export DCN_DEPLOY_TRT_LIB="$trt_lib"
    step "TensorRT engine fp32" 300 bash -c "'$python' -m dcn_deploy.cli export --recipe demo -o '$engine_dir/demo.onnx' \
        && '$python' -m dcn_deploy.cli build '$engine_dir/demo.onnx' -o '$engine_dir/demo.fp32.engine' --precision fp32 \
        && '$python' -m dcn_deploy.cli validate '$engine_dir/demo.onnx' --trt '$engine_dir/demo.fp32.engine'"
    step "TensorRT engine fp16" 300 bash -c "'$python' -m dcn_deploy.cli export --recipe demo --precision fp16 -o '$engine_dir/demo.fp16.onnx' \
        && '$python' -m dcn_deploy.cli build '$engine_dir/demo.fp16.onnx' -o '$engine_dir/demo.fp16.engine' --precision fp16 \
        && '$python' -m dcn_deploy.cli validate '$engine_dir/demo.fp16.onnx' --trt '$engine_dir/demo.fp16.engine'"
fi

# TensorRT-RTX: build the demo ahead of time for this GPU's compute capability, run it, compare with ONNX
# Runtime (scripts/rtx_run.py), when TensorRT-RTX imports (here or in .venv) and knows this GPU.
rtx_python=""
for candidate in "$python" "${root}/.venv/bin/python"; do
    if [ -x "$(command -v "$candidate")" ] && "$candidate" -c 'import tensorrt_rtx_bindings, torch; assert torch.cuda.is_available()' 2>/dev/null; then
        rtx_python="$candidate"; break
    fi
done
rtx_known="$([ -n "$rtx_python" ] && "$rtx_python" -c 'import tensorrt_rtx_libs, tensorrt_rtx_bindings as t; print(" ".join(n for n in dir(t.ComputeCapability) if n.startswith("SM")))' 2>/dev/null)"
rtx_lib="${build_dir}/lib/libdcn_deploy_trt11.so"
if [ -z "$rtx_python" ]; then
    skip "TensorRT-RTX engine" "tensorrt_rtx_bindings with CUDA PyTorch imports in neither ${python} nor .venv"
elif ! grep -qw "SM${arch}" <<< "$rtx_known"; then
    skip "TensorRT-RTX engine" "this GPU (sm_${arch}) is not one TensorRT-RTX builds for (${rtx_known})"
elif [ ! -f "$rtx_lib" ] || [ ! -f "${build_dir}/lib/rtx/libtensorrt_rtx.so" ]; then
    skip "TensorRT-RTX engine" "no libdcn_deploy_trt11.so or lib/rtx/libtensorrt_rtx.so in ${build_dir}/lib (TensorRT 11.x headers needed)"
else
    rtx_dir="${build_dir}/rtx"
    mkdir -p "$rtx_dir"
    step "TensorRT-RTX engine fp32 (SM${arch})" 300 env DCN_DEPLOY_TRT_LIB="$rtx_lib" \
        DCN_DEPLOY_RTX_SONAME_LIB="${build_dir}/lib/rtx/libtensorrt_rtx.so" bash -c "
        '$rtx_python' -m dcn_deploy.cli export --recipe demo -o '$rtx_dir/demo.onnx' \
        && '$rtx_python' -m dcn_deploy.cli build '$rtx_dir/demo.onnx' -o '$rtx_dir/demo.plan' --target rtx \
               --compute-capability SM${arch} --shapes x:1x3x32x32/2x3x64x80/4x3x96x128 \
        && '$rtx_python' scripts/rtx_run.py '$rtx_dir/demo.onnx' '$rtx_dir/demo.plan' --shape 2x3x64x80"
fi

# The final table and $OUT/gpu_check.json; should Python itself fail, the raw step table.
echo | tee -a "$log"
if ! timeout 30 "$python" scripts/gpu_check_summary.py --steps "$steps_tsv" --parity "$parity_json" \
        --bench "$bench_json" --log "$log" --json "${log_dir}/gpu_check.json" 2>&1 | tee -a "$log"; then
    echo "gpu_check summary (raw; scripts/gpu_check_summary.py failed)" | tee -a "$log"
    tee -a "$log" < "$steps_tsv"
fi
echo "gpu_check: ${failures} step(s) failed or timed out in $((SECONDS))s; log: ${log}" | tee -a "$log"
[ "$failures" -eq 0 ]
