#!/usr/bin/env bash
# One-call GPU check, for a machine with an NVIDIA GPU, PyTorch with CUDA and nvcc. In order:
#   1. builds the CUDA kernels for this GPU (CMake, -DDCN_DEPLOY_WERROR=OFF: that machine's gcc/nvcc
#      may be newer than CI's and warn about new things; ONNX Runtime headers not needed)
#   2. runs the C++ unit tests of the shared core (ctest; the TensorRT plugin's tests, enqueue on the
#      GPU included, when TensorRT headers are found: see "TensorRT" below)
#   3. runs tests/test_cuda_kernels.py, tests/test_cuda_int8.py and tests/test_cuda_layouts.py on the
#      GPU (-k "not emulated": the emulated cases are CI's; -n 8 when pytest-xdist imports): FP32 and
#      FP16 (planar and channels-last: NHWC padded to 8/16, NC/32HW32, torch.channels_last) parity
#      against the float64 reference and bitwise against the planar path, INT8 (both algorithms, every
#      layout) bitwise against dcn_deploy.op.int8.deform_conv2d_int8, large coordinates, bad input
#   4. prints a parity and timing table (scripts/gpu_parity.py)
#   5. times the layer benchmark on the GPU (dcn-deploy bench --device cuda): ours FP16 (planar,
#      channels-last X in place) and INT8 (planar, channels-last) against torchvision and cuDNN
#   6. if TensorRT's Python package imports: an engine of the demo recipe in FP32 and FP16, validated
#   7. if TensorRT-RTX imports and builds for this GPU: the demo built for it with --target rtx and run
#   8. last, compute-sanitizer memcheck and racecheck on small cases (every kernel and layout), with
#      PYTORCH_NO_CUDA_MEMORY_CACHING=1 (out-of-bounds reads inside PyTorch's cached blocks would
#      otherwise pass); first a probe (a one-element allocation under memcheck): where the sanitizer
#      refuses the device (gVisor machines answer "Device not supported", then error 999), both are
#      SKIP with that reason.
#   A step that cannot run says in one line why (SKIP).
# On this workplace's lent machines (nvidia-h100-x1 / nvidia-h200; /work/.library/device): call `run`
# with command "bash scripts/gpu_check.sh" and timeout_s about 400 (the budget below plus start-up
# and the summary); carry [".deps/tensorrt/v11.1/include"] (0.9 MB of headers; .deps is a link the
# call would not follow otherwise) so that step 1 builds libdcn_deploy_trt11.so and step 2 runs the
# plugin's C++ tests on the GPU. Steps 6 and 7 cannot run there: the image has no tensorrt package,
# and TensorRT-RTX's wheels (hundreds of MB) exceed what a call carries (64 MiB): both SKIP.
# Uses the system python3 (the one with CUDA PyTorch), not .venv.
# Time: one budget for all steps (GPU_CHECK_BUDGET_S, default 330 s); each step runs under
# min(its limit, what is left), and a step is skipped (SKIP, not TIMEOUT) when less than half its
# limit is left. A step that fails or times out is recorded and the next one runs. Estimated on an
# H100 with 16 cores: build ~1.5 min, ctest ~15 s, CUDA tests ~1 min, parity + bench ~1.5 min.
# Writes into $OUT (default build-gpu/): gpu_check.log (everything), gpu_check.json (every step's
# status and seconds, the parity table and the benchmark rows; scripts/gpu_check_summary.py),
# gpu_parity.json and bench_gpu.json; builds in GPU_CHECK_BUILD_DIR (default build-gpu/).
# Exit status: 0 when every step that ran passed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
build_dir="${GPU_CHECK_BUILD_DIR:-${root}/build-gpu}"
mkdir -p "$build_dir"
log_dir="${OUT:-$build_dir}"
mkdir -p "$log_dir"
log="${log_dir}/gpu_check.log"
: > "$log"
export PYTHONPATH="${root}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export DCN_DEPLOY_CUDA_LIB="${build_dir}/lib/libdcn_deploy_cuda.so"
command -v nvcc > /dev/null || export PATH="${PATH}:/usr/local/cuda/bin"

failures=0
budget="${GPU_CHECK_BUDGET_S:-330}"
steps_tsv="${build_dir}/gpu_check_steps.tsv"  # name, status, seconds, exit code, limit, note
: > "$steps_tsv"
parity_json="${log_dir}/gpu_parity.json"
bench_json="${log_dir}/bench_gpu.json"
rm -f "$parity_json" "$bench_json"

record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$steps_tsv"; }

# Seconds of the budget left for steps (15 s kept for the summary).
left() { echo $((budget - SECONDS - 15)); }

# step NAME TIMEOUT_S COMMAND...: runs under min(TIMEOUT_S, what is left of the budget), logs,
# records PASS/FAIL/TIMEOUT with seconds; SKIP when less than half of TIMEOUT_S is left (a step
# cut short by the budget would only read as a TIMEOUT). Never stops the script.
step() {
    local name="$1" limit="$2"
    shift 2
    local left
    left="$(left)"
    if [ "$left" -lt $((limit / 2)) ]; then
        skip "$name" "${left}s of the ${budget}s budget left, under half its ${limit}s limit"
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
# gpu_step: a step that needs the kernels' library (its tests would otherwise only skip, and pass).
gpu_step() {
    if [ -f "$DCN_DEPLOY_CUDA_LIB" ]; then step "$@"; else skip "$1" "no ${DCN_DEPLOY_CUDA_LIB#"${root}/"}: not built"; fi
}

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
    -DDCN_DEPLOY_CUDA_CHECK_ARCHITECTURES= -DDCN_DEPLOY_WERROR=OFF ${trt_include[*]} && cmake --build '$build_dir' -j$jobs"
gpu_step "C++ unit tests (ctest)" 60 ctest --test-dir "$build_dir" --output-on-failure --no-tests=error
# The emulated cases are CI's (slow here, and no GPU in them); 8 workers where pytest-xdist imports.
xdist=()
"$python" -c 'import xdist' 2>/dev/null && xdist=(-n 8)
gpu_step "CUDA kernel tests (pytest)" 200 "$python" -m pytest -q -p no:cacheprovider "${xdist[@]}" -k "not emulated" \
    tests/test_cuda_kernels.py tests/test_cuda_int8.py tests/test_cuda_layouts.py -rs

gpu_step "parity and timing table" 100 "$python" scripts/gpu_parity.py --json "$parity_json"

# Timings of the layer shapes of issue 7 at batch 1 and 8 (ours FP16 planar and channels-last,
# FP32, INT8 planar and channels-last; torchvision; cuDNN dense; workspace bytes), about a minute
# on an H100; the rows go into gpu_check.json.
gpu_step "bench --device cuda" 120 "$python" -m dcn_deploy.cli bench --device cuda --json "$bench_json"

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

# compute-sanitizer last (slowest per launch, and refused on some machines): a probe first, since
# on gVisor it answers "Device not supported" and then error 999 at the first allocation. Without
# PyTorch's caching allocator each tensor is its own allocation, so reads past it are caught.
sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
probe_log="${build_dir}/sanitizer_probe.log"
if [ -z "$sanitizer" ]; then
    skip "compute-sanitizer" "not installed"
elif [ "$(left)" -lt 75 ]; then
    skip "compute-sanitizer" "$(left)s of the ${budget}s budget left, too little for memcheck and racecheck"
elif ! PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 5 60 "$sanitizer" --tool memcheck --error-exitcode 1 \
        "$python" -c "import torch; torch.zeros(1, device='cuda'); torch.cuda.synchronize()" > "$probe_log" 2>&1; then
    reason="$(grep -m 1 -iE 'not supported|error|fail' "$probe_log" | tr '\t' ' ' | cut -c 1-160)"
    cat "$probe_log" >> "$log"
    skip "compute-sanitizer" "the probe failed (${reason:-exit status only, see the log}): sanitizer unusable on this machine"
else
    gpu_step "compute-sanitizer memcheck" 120 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool memcheck \
        --error-exitcode 1 "$python" scripts/gpu_sanitize_cases.py
    gpu_step "compute-sanitizer racecheck" 150 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool racecheck \
        --error-exitcode 1 "$python" scripts/gpu_sanitize_cases.py
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
