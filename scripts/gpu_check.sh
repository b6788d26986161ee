#!/usr/bin/env bash
# One-call GPU check, for a machine with an NVIDIA GPU, PyTorch with CUDA and nvcc:
#   1. builds the CUDA kernels for this GPU (CMake; ONNX Runtime headers not needed)
#   2. runs the C++ unit tests of the shared core (ctest)
#   3. runs tests/test_cuda_kernels.py and tests/test_cuda_int8.py on the GPU (INT8: bitwise
#      against dcn_deploy.op.int8.deform_conv2d_int8, both algorithms); FP32 and FP16 parity against the float64
#      reference on every configuration, large coordinates (200x272, offsets up to +-8 px),
#      GPU vs the CPU emulation of the same kernel, bad input
#   4. compute-sanitizer memcheck and racecheck on small cases, if compute-sanitizer is installed
#   5. prints a parity and timing table (scripts/gpu_parity.py)
#   5b. times the layer benchmark on the GPU (dcn-deploy bench --device cuda: bench_gpu.json/.png)
#   6. if TensorRT's Python package imports: builds the plugin, builds an engine of the demo
#      recipe in FP32 and FP16, and validates it against the reference
#   7. if TensorRT-RTX imports and this GPU is one it builds for: builds the demo for this
#      compute capability with --target rtx, runs it (scripts/rtx_run.py) against the float64 reference
#   Steps 6 and 7 otherwise say in one line why they were skipped.
# Uses the system python3 (the one with CUDA PyTorch), not .venv. Finishes in a few minutes.
# The full log goes to $OUT/gpu_check.log when OUT is set, else build-gpu/gpu_check.log.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
build_dir="${root}/build-gpu"
mkdir -p "$build_dir"
log_dir="${OUT:-$build_dir}"
log="${log_dir}/gpu_check.log"
: > "$log"
export PYTHONPATH="${root}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export DCN_DEPLOY_CUDA_LIB="${build_dir}/lib/libdcn_deploy_cuda.so"

declare -a summary=()
failures=0

# step NAME TIMEOUT_S COMMAND...: runs, logs, records PASS/FAIL with seconds.
step() {
    local name="$1" limit="$2"
    shift 2
    echo "== ${name}" | tee -a "$log"
    local start=$SECONDS
    if timeout "$limit" "$@" >> "$log" 2>&1; then
        summary+=("$(printf '%-34s PASS  %4ds' "$name" $((SECONDS - start)))")
    else
        local rc=$?
        summary+=("$(printf '%-34s FAIL  %4ds  (exit %d, see log)' "$name" $((SECONDS - start)) "$rc")")
        failures=$((failures + 1))
        tail -n 30 "$log"
    fi
}
skip() { summary+=("$(printf '%-34s SKIP        %s' "$1" "$2")"); echo "== $1: skipped ($2)" | tee -a "$log"; }

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
for candidate in "${TENSORRT_INCLUDE_DIR:-}" /usr/include/x86_64-linux-gnu /usr/local/tensorrt/include; do
    if [ -n "$candidate" ] && [ -f "$candidate/NvInfer.h" ]; then trt_include=(-DTENSORRT_INCLUDE_DIR="$candidate"); break; fi
done
step "build (sm_${arch:-75..90})" 300 bash -c "cmake -S . -B '$build_dir' -DCMAKE_BUILD_TYPE=Release \
    -DDCN_DEPLOY_BUILD_ORT=OFF -DDCN_DEPLOY_BUILD_CUDA=ON ${arch:+-DDCN_DEPLOY_CUDA_ARCHITECTURES=$arch} \
    ${trt_include[*]} && cmake --build '$build_dir' -j8"
step "C++ unit tests (ctest)" 120 ctest --test-dir "$build_dir" --output-on-failure
step "CUDA kernel tests (pytest)" 300 "$python" -m pytest -q -p no:cacheprovider tests/test_cuda_kernels.py \
    tests/test_cuda_int8.py -rs

sanitizer="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
small_case='
import sys; sys.path[:0] = ["tests"]
import torch
from cases import CASES
from dcn_deploy.backends.cuda_kernels import deform_conv2d_cuda
for case in (CASES[0], CASES[-1], CASES[-3]):
    for dtype in (torch.float32, torch.float16):
        t = {k: (torch.from_numpy(v).to("cuda", dtype) if v is not None else None) for k, v in case.make().items()}
        deform_conv2d_cuda(t["X"], t["offset"], t["W"], t["B"], mask=t["mask"], stride=case.stride,
                           padding=case.pads, dilation=case.dilation, groups=case.group,
                           offset_groups=case.offset_group)
    t8 = {k: (torch.from_numpy(v).to("cuda") if v is not None else None) for k, v in case.make().items()}
    xq, wq = (t8[k].mul(20).round().clamp(-127, 127).to(torch.int8) for k in ("X", "W"))
    for algorithm in ("tensor_core", "simt"):  # INT8: float32 Y and int8 Yq
        for y_scale in (None, 0.5):
            deform_conv2d_cuda(xq, t8["offset"], wq, t8["B"], mask=t8["mask"], stride=case.stride,
                               padding=case.pads, dilation=case.dilation, groups=case.group,
                               offset_groups=case.offset_group, algorithm=algorithm, x_scale=0.05,
                               w_scale=[0.01], y_scale=y_scale)
torch.cuda.synchronize()
print("sanitized cases ran")
'
if [ -n "$sanitizer" ]; then
    step "compute-sanitizer memcheck" 300 "$sanitizer" --tool memcheck --error-exitcode 1 "$python" -c "$small_case"
    step "compute-sanitizer racecheck" 300 "$sanitizer" --tool racecheck --error-exitcode 1 "$python" -c "$small_case"
else
    skip "compute-sanitizer" "not installed"
fi

parity_json="${log_dir}/gpu_parity.json"
echo "== parity and timing table" | tee -a "$log"
start=$SECONDS
if timeout 300 "$python" scripts/gpu_parity.py --json "$parity_json" 2>&1 | tee -a "$log"; then
    summary+=("$(printf '%-34s PASS  %4ds' "parity table" $((SECONDS - start)))")
else
    summary+=("$(printf '%-34s FAIL  %4ds' "parity table" $((SECONDS - start)))")
    failures=$((failures + 1))
fi

# Timings of the layer shapes of issue 7 (ours FP16/FP32, torchvision, cuDNN dense; workspace bytes):
# two files in $OUT (at most 8 come back from a lent machine), about half a minute on an H100.
step "bench --device cuda" 180 "$python" -m dcn_deploy.cli bench --device cuda \
    --json "$log_dir/bench_gpu.json" --plot "$log_dir/bench_gpu.png"

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

{
    echo
    echo "gpu_check summary"
    printf '%s\n' "${summary[@]}"
    echo "log: ${log}"
} | tee -a "$log"
[ "$failures" -eq 0 ]
