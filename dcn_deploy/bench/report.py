"""The outputs of ``dcn-deploy bench``: the JSON file, the PNG plot and the tables printed on the console."""
from __future__ import annotations

import json
import os
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from dcn_deploy.bench.errors import BenchError


def write_json(result: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


_PART_TITLES = {
    "cpu_layers": "CPU, one DCNv2 layer (3x3, pad 1, mask, bias)",
    "end_to_end": "CPU, whole model",
    "gpu_layers": "GPU, one DCNv2 layer (3x3, pad 1, mask, bias)",
}


_COLORS = {
    "custom": "#d62728", "native": "#1f77b4", "dense": "#7f7f7f", "reference": "#9467bd",
    "ours_fp16": "#d62728", "ours_fp16_simt": "#ff9896", "ours_fp16_tensor_core": "#8c1c13",
    "ours_fp16_tensor_core_nhwc": "#e377c2", "ours_fp16_channels_last": "#bcbd22",
    "ours_fp32": "#ff7f0e", "torchvision_fp16": "#1f77b4", "cudnn_fp16": "#7f7f7f",
    "custom_int8": "#2ca02c", "ours_int8": "#2ca02c",
}


_LABELS = {
    "custom": "custom op (DcnDeformConv, ORT)", "native": "ORT native DeformConv", "dense": "ORT dense Conv (floor)",
    "reference": "PyTorch reference", "ours_fp16": "ours fp16 (default)", "ours_fp16_simt": "ours fp16 simt",
    "ours_fp16_tensor_core": "ours fp16 tensor core", "ours_fp16_tensor_core_nhwc": "ours fp16 tensor core NHWC",
    "ours_fp16_channels_last": "ours fp16 channels_last X",
    "ours_fp32": "ours fp32", "torchvision_fp16": "torchvision fp16",
    "cudnn_fp16": "cuDNN dense fp16 (floor)", "custom_int8": "INT8 op (DcnDeformConvInt8, ORT)",
    "ours_int8": "ours int8 (default)",
}


def _row_label(part: str, row: dict) -> str:
    if part == "end_to_end":
        return f"{row['recipe']}\n{'x'.join(map(str, row['input_shape']))}"
    channels = (str(row["in_channels"]) if row["in_channels"] == row["out_channels"]
                else f"{row['in_channels']}:{row['out_channels']}")
    return f"C={channels} {row['height']}x{row['width']}\nbatch {row['batch']}"


def write_plot(result: dict, path: str | os.PathLike) -> None:
    """Grouped bars (log y): median time per row for each implementation, one panel per part."""
    import matplotlib  # optional heavy dependency: only --plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [part for part in ("cpu_layers", "end_to_end", "gpu_layers") if result.get(part)]
    if not parts:
        raise BenchError("nothing to plot: the result has no rows")
    widths = [max(4.0, 1.3 * len(result[p]) + 1.5) for p in parts]
    figure, axes = plt.subplots(len(parts), 1, figsize=(max(widths + [8.0]), 4.6 * len(parts)), squeeze=False)
    machine = result.get("machine", {})
    for axis, part in zip(axes[:, 0], parts):
        rows = result[part]
        names = [n for n in _COLORS if any(n in row["implementations"] for row in rows)]
        names += sorted({n for row in rows for n in row["implementations"]} - set(names))
        width = 0.8 / max(len(names), 1)
        for index, name in enumerate(names):
            xs, ys = [], []
            for position, row in enumerate(rows):
                if name in row["implementations"]:
                    xs.append(position - 0.4 + width * (index + 0.5))
                    ys.append(row["implementations"][name]["median_ms"])
            bars = axis.bar(xs, ys, width, label=_LABELS.get(name, name), color=_COLORS.get(name))
            axis.bar_label(bars, labels=[short_ms(y) for y in ys], fontsize=6, rotation=90, padding=2)
        axis.set_yscale("log")
        axis.set_xticks(range(len(rows)), [_row_label(part, row) for row in rows], fontsize=8)
        axis.set_ylabel("ms per run (median, log scale)")
        where = machine.get("gpu") if part == "gpu_layers" else (
            f"{machine.get('cpu_model')}, {machine.get('threads')} threads")
        axis.set_title(f"{_PART_TITLES[part]}: {where}", fontsize=10)
        axis.legend(fontsize=7, ncol=min(len(names), 5), loc="upper left")
        axis.margins(y=0.25)
        axis.grid(axis="y", which="major", alpha=0.3)
    versions = [f"torch {machine.get('torch')}"]
    if "cpu_layers" in parts or "end_to_end" in parts:
        versions.append(f"onnxruntime {machine.get('onnxruntime')}")
    if "gpu_layers" in parts:
        versions.append(f"CUDA {machine.get('torch_cuda')}, cuDNN {machine.get('cudnn')}, "
                        f"torchvision {machine.get('torchvision')}")
    versions = ", ".join(versions + [str(machine.get("date_utc"))])
    figure.text(0.99, 0.005, versions, ha="right", va="bottom", fontsize=7, color="#555555")
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)


def short_ms(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def print_tables(result: dict, console: Console) -> None:
    """The rich tables of a bench result: per implementation the median ms over min-max (the spread of the
    timed rounds; the warm-up rounds are discarded), ratios of medians."""

    machine, settings = result["machine"], result["settings"]

    def ms(row: dict, name: str) -> str:
        timing = row["implementations"].get(name)
        if timing is None:
            return "-"
        spread = f"\n[dim]{short_ms(timing['min_ms'])}-{short_ms(timing['max_ms'])}[/dim]" if "max_ms" in timing else ""
        return f"{timing['median_ms']:.3f}{spread}"

    def rounds(part: str) -> str:
        warmup = settings.get("warmup_gpu" if part == "gpu" else "warmup", 0)
        return (f"median over min-max ms of {settings[f'repeat_{part}']} rounds, {warmup} warm-up round"
                f"{'' if warmup == 1 else 's'} discarded")

    def ratio(row: dict, key: str) -> str:
        value = row["ratios"].get(key)
        return "-" if value is None else f"{value:.2f}"

    int8 = settings.get("int8", False)
    if result["cpu_layers"]:
        title = f"CPU layer, {rounds('cpu')} ({machine['cpu_model']}, {settings['threads']} threads)"
        table = Table(title=title, box=box.SIMPLE_HEAD)
        for column in ("shape", "N", "custom", "native", "dense", "torch\nref", *(("int8",) if int8 else ()),
                       "custom\n/native", "custom\n/dense", "custom\n/ref", *(("int8\n/custom",) if int8 else ())):
            table.add_column(column, justify="left" if column == "shape" else "right", no_wrap=column == "shape",
                             min_width=7 if "/" in column else None)
        times = ("custom", "native", "dense", "reference", *(("custom_int8",) if int8 else ()))
        ratios = ("custom/native", "custom/dense", "custom/reference", *(("custom_int8/custom",) if int8 else ()))
        for row in result["cpu_layers"]:
            table.add_row(row["shape"], str(row["batch"]), *(ms(row, n) for n in times),
                          *(ratio(row, k) for k in ratios))
        console.print(table)
    if result["end_to_end"]:
        table = Table(title=f"end to end, {rounds('cpu')} ({settings['threads']} threads)",
                      box=box.SIMPLE_HEAD)
        for column in ("recipe", "input", "DCN\nnodes", "custom", "native", "torch\nmodel", *(("int8",) if int8 else ()),
                       "custom\n/native", "custom\n/torch", *(("int8\n/custom",) if int8 else ())):
            table.add_column(column, justify="left" if column in ("recipe", "input") else "right",
                             no_wrap=column in ("recipe", "input"))
        for row in result["end_to_end"]:
            table.add_row(row["recipe"], "x".join(map(str, row["input_shape"])), str(row["dcn_nodes"]),
                          *(ms(row, n) for n in ("custom", "native", "reference", *(("custom_int8",) if int8 else ()))),
                          *(ratio(row, k) for k in ("custom/native", "custom/reference",
                                                     *(("custom_int8/custom",) if int8 else ()))))
        console.print(table)
    if result["gpu_layers"]:  # pragma: no cover - GPU only: rows measured on a CUDA device
        rows = result["gpu_layers"]
        short = {"ours_fp16": "fp16", "ours_fp16_simt": "fp16\nsimt", "ours_fp16_tensor_core": "fp16\nTC",
                 "ours_fp16_tensor_core_nhwc": "fp16\nTC NHWC", "ours_fp16_channels_last": "fp16\nCL X",
                 "ours_int8": "int8", "ours_int8_channels_last": "int8\nCL X",
                 "ours_fp32": "fp32", "torchvision_fp16": "tv\nfp16", "cudnn_fp16": "cuDNN\nfp16"}
        names = [n for n in short if any(n in row["implementations"] for row in rows)]
        table = Table(title=f"GPU layer, {rounds('gpu')} ({machine.get('gpu')})",
                      caption="fp16/fp32: ours (deform_conv2d_cuda), TC: tensor cores; tv: torchvision; "
                      "cuDNN: dense conv, channels_last", box=box.SIMPLE_HEAD)
        for column in ("shape", "N", *(short[n] for n in names)):
            table.add_column(column, justify="left" if column == "shape" else "right", no_wrap=column == "shape")
        for row in rows:
            table.add_row(row["shape"], str(row["batch"]), *(ms(row, n) for n in names))
        console.print(table)
        ratio_columns = {"ours_fp16/cudnn_fp16": "fp16\n/cuDNN", "ours_fp16_tensor_core/cudnn_fp16": "fp16 TC\n/cuDNN",
                         "ours_fp16_tensor_core_nhwc/cudnn_fp16": "TC NHWC\n/cuDNN",
                         "ours_fp16_channels_last/cudnn_fp16": "CL X\n/cuDNN",
                         "torchvision_fp16/ours_fp16_channels_last": "tv\n/CL X",
                         "ours_int8_channels_last/ours_fp16_tensor_core": "int8 CL\n/fp16 TC",
                         "ours_fp32/cudnn_fp16": "fp32\n/cuDNN", "torchvision_fp16/ours_fp16": "tv\n/fp16"}
        keys = [k for k in ratio_columns if any(k in row["ratios"] for row in rows)]
        table = Table(title="GPU layer: ratios of medians, workspace", caption="every ratio is in the JSON",
                      box=box.SIMPLE_HEAD)
        for column in ("shape", "N", *(ratio_columns[k] for k in keys), "workspace\nours fp16",
                       "im2col fp16\nper image"):
            table.add_column(column, justify="left" if column == "shape" else "right", no_wrap=column == "shape")
        for row in rows:
            space = row["workspace"]
            table.add_row(row["shape"], str(row["batch"]), *(ratio(row, k) for k in keys),
                          format_bytes(space["ours_bytes"]["fp16"]), format_bytes(space["im2col_bytes_per_image"]["fp16"]))
        console.print(table)
        notes = {f"{row['shape']} b{row['batch']} {name}": note for row in rows
                 for name, note in row.get("not_timed", {}).items()}
        for where, note in notes.items():
            console.print(f"[yellow]not timed[/yellow] {where}: {note}")
    for part, reason in result["skipped"].items():
        console.print(f"{part}: skipped ({reason})")


def format_bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)
