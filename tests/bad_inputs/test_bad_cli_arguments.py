"""Bad command-line arguments of every ``dcn-deploy`` command: exit code 2 and one error line naming the
argument, no traceback (typer's CliRunner, in-process)."""
from __future__ import annotations

import re

import pytest
from bad_inputs.cli_result import cli_error

pytestmark = pytest.mark.bad_input

# (id, arguments (MODEL: the demo ONNX, TMP: a temporary folder), message)
CASES = [
    ("export_missing_output", ["export"], "Missing option '-o' / '--output'"),
    ("export_shape_zero", ["export", "-o", "TMP/x.onnx", "--shape", "1x3x0x4"], "shape '1x3x0x4' must be four positive sizes NxCxHxW"),
    ("export_shape_text", ["export", "-o", "TMP/x.onnx", "--shape", "abc"], "shape 'abc' is not of the form NxCxHxW"),
    ("export_seed_not_int", ["export", "-o", "TMP/x.onnx", "--seed", "abc"], "Invalid value for '--seed'"),
    ("export_precision", ["export", "-o", "TMP/x.onnx", "--precision", "fp8"], "--precision must be one of \\['fp32', 'fp16'\\], got 'fp8'"),
    ("export_keep_io_types_fp32", ["export", "-o", "TMP/x.onnx", "--keep-io-types"], "--keep-io-types applies to --precision fp16 only"),
    ("export_unknown_recipe", ["export", "-o", "TMP/x.onnx", "--recipe", "nope"], "no recipe 'nope': expected one of"),
    ("export_weights_missing", ["export", "-o", "TMP/x.onnx", "--weights", "TMP/none.safetensors"], "no weight file at"),
    ("export_image_too_small", ["export", "-o", "TMP/x.onnx", "--static", "--shape", "1x3x1x1"],
     "the model does not export at this input shape: .*Kernel size can't be greater than actual input size"),
    ("unknown_option", ["validate", "MODEL", "--frobnicate"], "No such option: --frobnicate"),
    ("unknown_command", ["frobnicate"], "No such command 'frobnicate'"),
    ("rewrite_to", ["rewrite", "MODEL", "-o", "TMP/y.onnx", "--to", "weird"], "'to' must be 'custom' or 'standard', got 'weird'"),
    ("quantize_no_calibration", ["quantize", "MODEL", "-o", "TMP/q.onnx"], "give exactly one of --calib FOLDER and --synthetic N"),
    ("quantize_synthetic_zero", ["quantize", "MODEL", "-o", "TMP/q.onnx", "--synthetic", "0"], "needs at least 1 sample, got 0"),
    ("quantize_method", ["quantize", "MODEL", "-o", "TMP/q.onnx", "--synthetic", "1", "--method", "magic"], "unknown calibration method 'magic'"),
    ("quantize_percentile", ["quantize", "MODEL", "-o", "TMP/q.onnx", "--synthetic", "1", "--method", "percentile", "--percentile", "150"],
     "percentile must be in \\(0, 100\\], got 150"),
    ("quantize_keep_float_unknown", ["quantize", "MODEL", "-o", "TMP/q.onnx", "--synthetic", "1", "--keep-float", "nonode"],
     "--keep-float nonode: no such node or layer in the model.*dcn-deploy inspect MODEL"),
    ("validate_no_inputs", ["validate", "MODEL", "-n", "0"], "num_inputs must be at least 1, got 0"),
    ("validate_shape_channels", ["validate", "MODEL", "--shape", "1x4x32x40"], "ONNX Runtime cannot run .*invalid dimensions for input: x"),
    ("validate_shape_too_small", ["validate", "MODEL", "--shape", "1x3x1x1"], "ONNX Runtime cannot run .*Invalid input shape"),
    ("validate_unknown_recipe", ["validate", "MODEL", "--recipe", "nope"], "no recipe 'nope'"),
    ("serve_missing_model", ["serve", "TMP/none.onnx"], "no model file at"),
    ("serve_backend", ["serve", "MODEL", "--backend", "tvm"], "backend must be one of \\['onnxruntime', 'tensorrt'\\], got 'tvm'"),
    ("serve_device", ["serve", "MODEL", "--device", "tpu"], "device must be cpu, cuda or auto, got 'tpu'"),
    ("serve_threads_zero", ["serve", "MODEL", "--threads", "0"], "threads must be at least 1, got 0"),
    ("serve_port_out_of_range", ["serve", "MODEL", "--port", "99999"], "cannot listen on 127.0.0.1:99999: the port must be 0-65535"),
    ("serve_host", ["serve", "MODEL", "--host", "256.1.1.1", "--port", "0"], "cannot listen on 256.1.1.1:0"),
    ("serve_max_batch_zero", ["serve", "MODEL", "--port", "0", "--max-batch-size", "0"], "max_batch_size must be at least 1, got 0"),
    ("serve_workers_zero", ["serve", "MODEL", "--port", "0", "--workers", "0"], "workers must be at least 1, got 0"),
    ("serve_negative_delay", ["serve", "MODEL", "--port", "0", "--max-delay-ms", "-1"], "max_delay_ms must be >= 0, got -1.0"),
    ("serve_log_level", ["serve", "MODEL", "--log-level", "loud"], "--log-level must be one of \\[.*\\], got 'loud'"),
    ("serve_engine", ["serve", "MODEL", "--engine", "spark"], "--engine must be dcn-deploy or ray, got 'spark'"),
    ("serve_ray_replicas_zero", ["serve", "MODEL", "--engine", "ray", "--replicas", "0"], "--replicas must be at least 1, got 0"),
    ("serve_ray_max_below_min", ["serve", "MODEL", "--engine", "ray", "--min-replicas", "3", "--max-replicas", "2"],
     "--max-replicas \\(2\\) must be at least --min-replicas \\(3\\)"),
    ("serve_ray_min_without_max", ["serve", "MODEL", "--engine", "ray", "--min-replicas", "2"], "--min-replicas needs --max-replicas"),
    ("serve_ray_target", ["serve", "MODEL", "--engine", "ray", "--max-replicas", "2", "--target-ongoing-requests", "0"],
     "--target-ongoing-requests must be > 0, got 0.0"),
    ("serve_ray_proxy_location", ["serve", "MODEL", "--engine", "ray", "--proxy-location", "Anywhere"],
     "--proxy-location must be one of \\['HeadOnly', 'EveryNode'\\], got 'Anywhere'"),
    ("serve_ray_flags_without_ray", ["serve", "MODEL", "--replicas", "3", "--ray-address", "auto", "--num-gpus", "1"],
     "error: --ray-address, --replicas, --num-gpus only apply to --engine ray \\(this is --engine dcn-deploy\\)"),
    ("serve_ray_route_prefix_without_ray", ["serve", "MODEL", "--route-prefix", "/b", "--app-name", "b"],
     "error: --app-name, --route-prefix only apply to --engine ray"),
    ("serve_ray_limits", ["serve", "MODEL", "--engine", "ray", "--max-queue", "0"], "--max-queue must be a positive integer, got 0"),
    ("k8s_storage_uri", ["k8s", "MODEL", "-o", "TMP/k8s", "--storage-uri", "bucket/models"], "--storage-uri must be a URI KServe can download"),
    ("k8s_cpus", ["k8s", "MODEL", "-o", "TMP/k8s", "--storage-uri", "s3://b/m", "--cpus", "0"], "--cpus must be > 0, got 0.0"),
    ("k8s_memory", ["k8s", "MODEL", "-o", "TMP/k8s", "--storage-uri", "s3://b/m", "--memory", "lots"], "--memory must be a Kubernetes quantity"),
    ("k8s_name", ["k8s", "MODEL", "-o", "TMP/k8s", "--storage-uri", "s3://b/m", "--name", "9lives"], "'9lives' does not make a Kubernetes name"),
    ("k8s_missing_model", ["k8s", "TMP/none.onnx", "-o", "TMP/k8s", "--storage-uri", "s3://b/m"], "no model file at"),
    ("triton_repo_kind", ["triton-repo", "MODEL", "-o", "TMP/repo", "--kind", "tpu"], "instance kind must be cpu or gpu, got 'tpu'"),
    ("triton_repo_instances", ["triton-repo", "MODEL", "-o", "TMP/repo", "--instances", "0"], "instances must be at least 1, got 0"),
    ("triton_repo_backend", ["triton-repo", "MODEL", "-o", "TMP/repo", "--backend", "tflite"], "backend must be one of \\['onnxruntime', 'tensorrt', 'python'\\], got 'tflite'"),
    ("triton_repo_python_gpu", ["triton-repo", "MODEL", "-o", "TMP/repo", "--backend", "python", "--kind", "gpu"], "the python backend's model runs ONNX Runtime on the CPU: instance kind must be cpu"),
    ("triton_repo_threads_zero", ["triton-repo", "MODEL", "-o", "TMP/repo", "--backend", "python", "--threads", "0"], "threads must be at least 1, got 0"),
    ("triton_repo_threads_onnxruntime", ["triton-repo", "MODEL", "-o", "TMP/repo", "--threads", "2"],
     "--threads sets the python backend's ONNX Runtime threads; Triton's onnxruntime backend has its own settings"),
    ("build_precision", ["build", "MODEL", "-o", "TMP/e.engine", "--precision", "int4"], "--precision must be one of \\['fp32', 'fp16'\\], got 'int4'"),
    ("build_shapes_rank", ["build", "MODEL", "-o", "TMP/e.engine", "--shapes", "x:1x2"], "input 'x' has rank 4 .*its shape spec 1x2 has rank 2"),
    ("bench_shape", ["bench", "--shape", "64xx"], "bad shape spec '64xx'"),
    ("bench_threads_zero", ["bench", "--threads", "0", "--shape", "4x8x8"], "--threads must be >= 1, got 0"),
    ("bench_device", ["bench", "--device", "tpu"], "--device must be auto, cpu or cuda, got 'tpu'"),
    ("bench_batch_zero", ["bench", "--batch", "0", "--shape", "4x8x8"], "batch sizes must be positive, got \\[0\\]"),
    ("bench_repeat_zero", ["bench", "--repeat", "0", "--shape", "4x8x8"], "--repeat must be >= 1"),
    ("bench_serve_url", ["bench", "--serve", "notaurl", "--requests", "1"], "no KServe v2 server at notaurl"),
]


@pytest.mark.custom_op
@pytest.mark.parametrize("bad", CASES, ids=lambda b: b[0])
def test_cli_rejects_bad_arguments(bad, serving_onnx, tmp_path):
    _, args, message = bad
    args = [a.replace("MODEL", str(serving_onnx)).replace("TMP", str(tmp_path)) for a in args]
    line = cli_error(args)
    assert re.search(message, line), line
