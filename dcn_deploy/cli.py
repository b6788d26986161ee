"""The ``dcn-deploy`` command: a thin layer over the library."""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import click
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dcn_deploy.serving.limits import DEFAULT_LIMITS, ServeLimits  # standard library only: the flags' defaults
from dcn_deploy.serving.ray_config import DEFAULT_RAY_IMAGE, PROXY_LOCATIONS  # standard library only, too
from dcn_deploy.serving.ray_config import DEFAULTS as RAY

# Each command imports what it runs, inside the command: onnx and onnxruntime are optional on a GPU-only
# machine (bench --device cuda runs without them; tests/test_bench.py checks), and --help stays fast.
# rich_markup_mode=None: a usage error is click's plain "Error: ..." line, not a panel that wraps it.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Export, run and validate DCNv2 models.")
# Redirected output (logs, CI) has no terminal width: rich would cut wide tables at 80 columns.
console = Console() if sys.stdout.isatty() or os.environ.get("COLUMNS") else Console(width=160)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"shape '{text}' is not of the form NxCxHxW") from None
    if len(dims) != 4 or min(dims) <= 0:
        raise typer.BadParameter(f"shape '{text}' must be four positive sizes NxCxHxW")
    return dims


_state = {"debug": False}  # --debug: tracebacks instead of one-line errors
# how a command ends on purpose (typer's Exit is not click's in every typer version)
_EXITS = (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException,
          KeyboardInterrupt)


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show the traceback of an error instead of "
                                        "its one line")) -> None:
    _state["debug"] = debug


def _fail(message: str) -> None:
    """One error line ``error: MESSAGE`` (never read as rich markup, never wrapped), exit code 2; with --debug,
    the exception being handled, if any, with its traceback."""
    active = sys.exc_info()[1]
    if _state["debug"] and active is not None and not isinstance(active, _EXITS):
        raise active
    line = " ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())
    console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _one_line(error: BaseException, limit: int = 400) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    return f"{type(error).__name__}: {text[:limit]}{'...' if len(text) > limit else ''} (--debug: the traceback)"


def _command(*args, **kwargs) -> Callable:
    """``app.command`` whose unexpected exceptions (those a command does not turn into its own error
    line) print one line too, the traceback only with --debug."""

    def register(function: Callable) -> Callable:
        @functools.wraps(function)
        def run(*a, **kw):
            try:
                return function(*a, **kw)
            except _EXITS:
                raise
            except Exception as error:
                _fail(_one_line(error))

        return app.command(*args, **kwargs)(run)

    return register


def _root_cause(error: BaseException) -> str:
    """The message of the innermost exception that ``error`` was raised from (torch.export's wrappers
    carry pages of advice; the cause is one line)."""
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    return " ".join(str(error).split()) or type(error).__name__


def _ort_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's own exception types (a model it cannot load or run): not Python's RuntimeError."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    return tuple(getattr(ort_state, name) for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf",
                                                        "NoSuchFile", "NoModel", "RuntimeException", "NotImplemented")
                 if hasattr(ort_state, name))


@_command()
def recipes() -> None:
    """List the model recipes in export/ and the options each takes (export --recipe NAME --option ...)."""
    from dcn_deploy.onnx.recipes import available_recipes, load_recipe, option_flags

    table = Table("recipe", "description", "options")
    for name, description in available_recipes().items():
        flags = "; ".join(f"{flag}: {help_text}" for flag, help_text in option_flags(load_recipe(name)))
        table.add_row(name, description, flags or "-")
    console.print(table)


# export passes the words it does not know to the recipe: its OPTIONS (dcn_deploy/onnx/recipes.py)
@_command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def export(
    context: typer.Context,
    output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write"),
    recipe: str = typer.Option("demo", help="recipe name in export/ or path to a recipe .py file"),
    seed: int = typer.Option(0, help="seed of the recipe's weights"),
    standard: bool = typer.Option(False, "--standard", help="emit standard ONNX DeformConv (opset 19)"),
    static: bool = typer.Option(False, "--static", help="fixed batch/height/width instead of dynamic"),
    shape: Optional[str] = typer.Option(None, help="example input shape NxCxHxW (default: the recipe's)"),
    weights: Optional[Path] = typer.Option(None, help="weights for the recipe (e.g. from dcn-deploy convert)"),
    precision: str = typer.Option("fp32", help="fp32 | fp16: a float16 graph (offset/mask path kept float32)"),
    keep_io_types: bool = typer.Option(False, "--keep-io-types",
                                       help="fp16 only: float32 graph inputs and outputs, cast inside"),
    keep_debug_info: bool = typer.Option(False, "--keep-debug-info", help="keep the exporter's debugging "
                                         "metadata (stack traces with this machine's file paths)"),
) -> None:
    """Export a recipe to ONNX, one DeformConv node per DCN layer.

    Options the recipe defines follow as --name VALUE or --name (dcn-deploy recipes lists them), e.g.
    --recipe centernet_dla34_dcn --decode."""
    from torch.onnx import OnnxExporterError

    from dcn_deploy.onnx.model_info import PRECISIONS
    from dcn_deploy.onnx.recipes import export_recipe, load_recipe, parse_option_args

    if precision not in PRECISIONS:
        _fail(f"--precision must be one of {list(PRECISIONS)}, got '{precision}'")
    if keep_io_types and precision != "fp16":
        _fail("--keep-io-types applies to --precision fp16 only")
    try:
        options = parse_option_args(load_recipe(recipe), context.args)  # before the slow part: a typo fails now
        with console.status(f"exporting {recipe}"):
            proto = export_recipe(
                recipe, output, seed=seed, standard_op=standard, dynamic=not static,
                input_shape=_parse_shape(shape) if shape else None, weights=str(weights) if weights else None,
                precision=precision, keep_io_types=keep_io_types, keep_debug_info=keep_debug_info, options=options,
            )
    except (FileNotFoundError, ValueError, AttributeError) as error:
        _fail(str(error))
    except OnnxExporterError as error:  # torch.export failed, e.g. an input too small for a layer
        _fail(f"the model does not export at this input shape: {_root_cause(error)}")

    from dcn_deploy.onnx.model_info import get_metadata

    meta = get_metadata(proto)
    nodes = json.loads(meta["dcn_nodes"])
    kind = "standard DeformConv" if standard else "custom DcnDeformConv"
    detail = ""
    if precision == "fp16":
        io = "float32" if keep_io_types else "float16"
        detail = f"; float16, {len(json.loads(meta['fp32_nodes']))} offset/mask nodes float32, {io} inputs/outputs"
    console.print(f"wrote {output}: {len(nodes)} {kind} nodes, {len(proto.graph.node)} nodes in all{detail}")


@_command()
def rewrite(
    model: Path = typer.Argument(..., help="ONNX file"),
    output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write"),
    to: str = typer.Option("custom", help="custom | standard"),
) -> None:
    """Rewrite every DCN node, of any flavour (mmdeploy/mmcv, TensorRT plugin, CenterNet DCNv2, ...), to the
    custom node or to standard DeformConv."""
    from collections import Counter

    from dcn_deploy.onnx.flavours import find_dcn_nodes
    from dcn_deploy.onnx.model_info import read_onnx
    from dcn_deploy.onnx.rewrite import rewrite_onnx

    try:
        found = Counter(flavour.name for _, _, flavour in find_dcn_nodes(read_onnx(model)) if flavour)
        _, count = rewrite_onnx(model, to=to, output=output)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    read = ", ".join(f"{n} {name}" for name, n in sorted(found.items()))
    console.print(f"wrote {output}: {count} nodes rewritten to {to} (DCN nodes read: {read or 'none'})",
                  highlight=False)


@_command()
def inspect(
    model: Path = typer.Argument(..., help="ONNX file"),
    json_output: bool = typer.Option(False, "--json", help="print the report as JSON instead of tables"),
) -> None:
    """Show an ONNX file's DCN nodes (flavour, geometry, shapes, precision), other custom ops, opsets,
    inputs/outputs, and which runtimes can run it."""
    from dcn_deploy.onnx.inspect import inspect_onnx

    try:
        report = inspect_onnx(model)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    if json_output:

        print(json.dumps(report, indent=2))
        return
    _print_inspection(report)


def _dims(shape) -> str:
    if shape is None:
        return "?"
    return "x".join("?" if d is None else str(d) if isinstance(d, int) or len(str(d)) <= 6 else "?" for d in shape)


def _print_inspection(report: dict) -> None:

    opsets = ", ".join(f"{domain} {version}" for domain, version in report["opsets"].items())
    console.print(f"[bold]{report['path']}[/bold]: {report['nodes']} nodes, precision {report['precision']}, "
                  f"opsets {opsets}, IR {report['ir_version']}, producer {report['producer'] or '?'}", highlight=False)
    io = Table("", "name", "dtype", "shape", title="inputs and outputs", box=box.SIMPLE_HEAD)
    for kind in ("inputs", "outputs"):
        for value in report[kind]:
            io.add_row(kind[:-1], value["name"], value["dtype"] or "?", _dims(value["shape"]))
    console.print(io)
    nodes = Table(title=f"DCN nodes: {len(report['dcn_nodes'])}", box=box.SIMPLE_HEAD)
    for column in ("node", "flavour", "op_type", "X -> Y", "W", "kernel stride pads dilation", "g/og",
                   "mask, bias", "dtype (offset)"):
        nodes.add_column(column)
    for node in report["dcn_nodes"]:
        op = node["op_type"]
        if node["error"]:
            nodes.add_row(node["name"] or "?", f"[red]{node['flavour'] or 'unknown'}[/red]", op, node["error"],
                          "", "", "", "", "")
            continue
        a = node["attributes"]
        geometry = (f"{'x'.join(map(str, a['kernel_shape']))} s{','.join(map(str, a['strides']))} "
                    f"p{','.join(map(str, a['pads']))} d{','.join(map(str, a['dilations']))}")
        flags = ", ".join(f for f, on in (("mask", node["modulated"]), ("bias", node["bias"])) if on) or "-"
        dtype = node["dtype"] or "?"
        if node["offset_dtype"] and node["offset_dtype"] != node["dtype"]:
            dtype += f" ({node['offset_dtype']})"
        nodes.add_row(node["name"] or "?", node["flavour"], op,
                      f"{_dims(node['input_shape'])} -> {_dims(node['output_shape'])}", _dims(node["weight_shape"]),
                      geometry, f"{a['group']} / {a['offset_group']}", flags, dtype)
    console.print(nodes)
    if report["int8_dcn_nodes"] or report["other_custom_ops"]:
        other = Table("op", "count", title="other custom ops", box=box.SIMPLE_HEAD)
        if report["int8_dcn_nodes"]:
            other.add_row("dcn_deploy INT8 DCN nodes", str(report["int8_dcn_nodes"]))
        for op, count in report["other_custom_ops"].items():
            other.add_row(op, str(count))
        console.print(other)
    if report["quantizable_layers"]:
        layers = Table("node", "op", "layer (PyTorch)", title="quantizable nodes (quantize --keep-float NODE or LAYER)",
                       box=box.SIMPLE_HEAD)
        for entry in report["quantizable_layers"]:
            layers.add_row(entry["node"], entry["op_type"], entry["layer"] or "-")
        console.print(layers)
    runtimes = Table("runtime", "runs it", "why", title="runtimes", box=box.SIMPLE_HEAD)
    colours = {"yes": "green", "after rewrite": "yellow", "no": "red"}
    for verdict in report["runtimes"]:
        runtimes.add_row(verdict["runtime"], f"[{colours[verdict['status']]}]{verdict['status']}[/]", verdict["why"])
    console.print(runtimes)


@_command()
def quantize(
    model: Path = typer.Argument(..., help="float32 ONNX file exported by dcn-deploy export"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="INT8 ONNX file to write (optional "
                                          "with --sensitivity)"),
    calib: Optional[Path] = typer.Option(
        None, "--calib", help="folder of calibration inputs: .npy, .npz (one array per input) or images"),
    synthetic: Optional[int] = typer.Option(
        None, "--synthetic", help="calibrate on N seeded standard-normal inputs (what validate draws) instead"),
    shape: Optional[list[str]] = typer.Option(
        None, "--shape", help="--synthetic: input shape NxCxHxW, one per input (default: the export's)"),
    method: str = typer.Option("max", help="calibration: max | percentile | entropy"),
    percentile: float = typer.Option(99.999, help="percentile method: the percentile of |x| kept"),
    keep_float: list[str] = typer.Option(
        [], "--keep-float", help="leave in float: a Conv/MatMul/Gemm or DCN node, or a layer as named in PyTorch "
        "(e.g. backbone.layer2.0.conv2: all its nodes); repeatable"),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="quantize one layer at a time, print each one's "
                                     "output error and which to keep float"),
    target: Optional[float] = typer.Option(None, "--target", help="--sensitivity: the rel L2 every output should "
                                           "stay under (default: validate's int8 bound)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="--sensitivity: write the report as JSON"),
) -> None:
    """Calibrate and write the INT8 model: DCN layers as DcnDeformConvInt8, other convs in Q/DQ form."""
    import onnx
    from rich.progress import Progress

    from dcn_deploy.onnx.layers import resolve_keep_float
    from dcn_deploy.onnx.model_info import check_onnx, read_onnx, recorded_layers
    from dcn_deploy.onnx.quantize import (
        CalibrationError,
        calibrate,
        load_calibration_folder,
        quantize_calibrated,
        synthetic_calibration,
    )

    if (calib is None) == (synthetic is None):
        _fail("give exactly one of --calib FOLDER and --synthetic N")
    if shape and synthetic is None:
        _fail("--shape goes with --synthetic (--calib files carry their shapes)")
    if output is None and not sensitivity:
        _fail("give -o/--output FILE (or --sensitivity for the per-layer report alone)")
    if (json_path is not None or target is not None) and not sensitivity:
        _fail("--json and --target go with --sensitivity")
    try:
        proto = read_onnx(model, load_external_data=True)
        check_onnx(proto, str(model))
        shapes = [_parse_shape(s) for s in shape] if shape else None
        samples = (load_calibration_folder(calib, proto) if calib is not None
                   else synthetic_calibration(proto, synthetic, shapes=shapes))
        resolve_keep_float(proto, keep_float)  # a wrong name fails before the calibration run
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"calibrating ({method})", total=len(samples))
            calibration = calibrate(proto, samples, method=method, percentile=percentile,
                                    progress=lambda done: bar.update(task, completed=done))
        if sensitivity:
            from dcn_deploy.parity.sensitivity import layer_sensitivity

            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("one layer at a time", total=None)
                report = layer_sensitivity(calibration, samples, target, progress=lambda text, done, total: bar.update(
                    task, description=text, completed=done, total=total))
        result = quantize_calibrated(calibration, keep_float) if output is not None else None
    except (FileNotFoundError, ValueError, CalibrationError) as error:
        _fail(str(error))
    except _ort_errors() as error:
        _fail(f"ONNX Runtime cannot run {model}: {error}")
    if sensitivity:
        _print_sensitivity(report)
        if json_path:

            json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
            console.print(f"wrote {json_path}")
    if result is None:
        return
    onnx.save(result.model, str(output))
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    if result.dcn_nodes:
        table = Table(title=f"INT8 DCN nodes ({result.method} calibration, {result.samples} samples)")
        for column in ("node", "input amax", "x_scale", "w_scale min..max"):
            table.add_column(column)
        for node in result.dcn_nodes:
            table.add_row(node["name"], f"{node['input_amax']:.4g}", f"{node['x_scale']:.4g}",
                          f"{node['w_scale_min']:.3g}..{node['w_scale_max']:.3g}")
        console.print(table)
    layers = recorded_layers(proto)
    kept = ", ".join(n if layers.get(n, n) == n else f"{n} ({layers[n]})" for n in result.kept_float)
    kept = f"; kept float: {kept}" if kept else ""
    console.print(f"wrote {output}: {len(result.dcn_nodes)} DcnDeformConvInt8 nodes, "
                  f"{result.qdq_nodes} QuantizeLinear nodes from ONNX Runtime's quantizer{kept}", highlight=False,
                  soft_wrap=True)


def _print_sensitivity(report) -> None:

    from dcn_deploy.parity.sensitivity import suggested_names

    outputs = list(report.all_quantized)
    table = Table(title=f"INT8 sensitivity: rel L2 vs the float model with only this layer quantized "
                  f"({report.method} calibration, {report.samples} inputs)", box=box.SIMPLE_HEAD)
    for column in ("#", "node", "layer", "op", *outputs):
        table.add_column(column, justify="right" if column in ("#", *outputs) else "left")
    for rank, entry in enumerate(report.layers, 1):
        table.add_row(str(rank), entry.node, entry.layer or "-", entry.op_type,
                      *(f"{entry.rel_l2[o]:.2e}" for o in outputs))
    table.add_row("", "every layer quantized", "", "", *(f"{report.all_quantized[o]:.2e}" for o in outputs))
    console.print(table)
    worst = max(report.all_quantized.values())
    if not report.suggested:
        console.print(f"every output is within rel L2 {report.target:.1e} with every layer quantized "
                      f"(worst {worst:.2e}): nothing to keep float", highlight=False)
        return
    after = max(report.suggested_rel_l2.values())
    flags = " ".join(f"--keep-float {name}" for name in suggested_names(report))
    console.print(f"suggestion: keep {len(report.suggested)} layer(s) float for rel L2 <= {report.target:.1e} "
                  f"(worst output {worst:.2e} -> {after:.2e}): {flags}", highlight=False, soft_wrap=True)


@_command()
def validate(
    model: Path = typer.Argument(..., help="ONNX file: exported by dcn-deploy export, or any, with --reference"),
    recipe: Optional[str] = typer.Option(None, help="reference recipe (default: recorded in the ONNX)"),
    seed: Optional[int] = typer.Option(None, help="seed of the reference weights (default: recorded)"),
    reference_spec: Optional[str] = typer.Option(
        None, "--reference", help="your own model instead of a recipe: file.py:factory, any callable returning an "
        "nn.Module"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="--reference: weights to load into it (strict)"),
    inputs: int = typer.Option(3, "-n", "--inputs", help="number of random inputs per input shape"),
    input_seed: int = typer.Option(0, help="seed of the random inputs"),
    shape: Optional[str] = typer.Option(None, help="input shape NxCxHxW, the only one checked (default: the "
                                        "export's, and batch+1, H+32, W+32 too for a dynamic model)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the report as JSON"),
    junit_path: Optional[Path] = typer.Option(None, "--junit", help="write the report as JUnit XML"),
    trt_engine: Optional[Path] = typer.Option(
        None, "--trt", help="run this TensorRT engine (built from MODEL) instead of ONNX Runtime"),
    rtol: Optional[float] = typer.Option(None, "--rtol", help="bound on max rel and rel L2 of every output "
                                         "(default: the precision's, or what PyTorch float32's own error predicts)"),
    atol: Optional[float] = typer.Option(None, "--atol", help="an output whose max abs error is at most this passes"),
) -> None:
    """Compare the model in ONNX Runtime (custom op), or a TensorRT engine, with the PyTorch model in float64:
    the recipe the export recorded, or your own model (--reference file.py:factory)."""
    from rich.progress import Progress

    from dcn_deploy.backends.tensorrt.common import TensorRTError
    from dcn_deploy.onnx.model_info import check_onnx, onnx_inputs, read_onnx, recorded_input_shapes
    from dcn_deploy.onnx.recipes import reference_for
    from dcn_deploy.parity.reference import load_reference
    from dcn_deploy.parity.validate import model_precision, more_input_shapes, validate_onnx

    if reference_spec is not None and (recipe is not None or seed is not None):
        _fail("--reference replaces --recipe and --seed: give one or the other")
    if weights is not None and reference_spec is None:
        _fail("--weights goes with --reference (a recipe's weights are recorded by export --weights)")
    try:
        proto = read_onnx(model)
        check_onnx(proto, str(model))
        if reference_spec is not None:
            reference = load_reference(reference_spec, weights)
            shapes = recorded_input_shapes(proto)
            if shapes is None:
                dims = [i.dims for i in onnx_inputs(proto)]
                if shape is None and any(d is None or not all(isinstance(v, int) for v in d) for d in dims):
                    raise ValueError(f"{model} has dynamic inputs and records no example shape: give --shape")
                shapes = [tuple(d) for d in dims]
        else:
            reference, shapes = reference_for(proto, recipe, seed, onnx_path=model)
        more_shapes = []
        if shape:
            shapes = [_parse_shape(shape)]
        elif trt_engine is None:  # an engine's profile covers the export shape only
            more_shapes = more_input_shapes(proto, shapes)
        if trt_engine is not None:
            backend = _tensorrt_backend(trt_engine, proto)
        else:
            # The precision `export` recorded picks the tolerance.
            backend = {"precision": model_precision(proto)}
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("parity", total=inputs * (1 + len(more_shapes)))
            report = validate_onnx(
                model, reference, shapes, num_inputs=inputs, seed=input_seed, more_shapes=more_shapes,
                progress=lambda done: bar.update(task, completed=done), rtol=rtol, atol=atol, **backend,
            )
    except (FileNotFoundError, ValueError, AttributeError, TensorRTError) as error:
        _fail(str(error))
    except _ort_errors() as error:
        _fail(f"ONNX Runtime cannot run {model}: {error}")
    table = Table(title=f"parity of {model.name} ({report.backend}, {report.precision}) vs PyTorch float64")
    for column in ("output", "shape", "max abs", "max rel", "rel L2", "PyTorch fp32 max rel / rel L2", "result"):
        table.add_column(column)
    for out in report.outputs:
        verdict = (f"[green]pass[/green] ({out.judged_by})" if out.passed else "[red]FAIL[/red]")
        table.add_row(out.name, "x".join(map(str, out.shape)), f"{out.max_abs:.2e}", f"{out.max_rel:.2e}",
                      f"{out.rel_l2:.2e}", f"{out.torch_fp32_max_rel:.1e} / {out.torch_fp32_rel_l2:.1e}", verdict)
    console.print(table)
    if report.int8_nodes:
        nodes = Table(title="INT8 nodes vs the exact integer reference (dcn_deploy.int8) on their own inputs")
        for column in ("node", "elements", "differing", "max steps", "result"):
            nodes.add_column(column)
        for node in report.int8_nodes:
            verdict = "[green]pass[/green]" if node.passed else "[red]FAIL[/red]"
            nodes.add_row(node.name, str(node.elements), str(node.differing),
                          f"{node.max_steps:.3g} (<= {node.allowed_steps:g})", verdict)
        console.print(nodes)
    console.print(
        f"tolerance {report.precision}: max rel <= {report.tolerance.max_rel:.1e}, rel L2 <= "
        f"{report.tolerance.rel_l2:.1e}, or within what PyTorch float32's error predicts (baseline)"
        f"{f'; --rtol {report.rtol:g}' if report.rtol is not None else ''}"
        f"{f'; --atol {report.atol:g}' if report.atol is not None else ''}; "
        f"{report.num_inputs} inputs {report.input_shapes}"
        f"{''.join(f' and {shapes}' for shapes in report.more_shapes)}; "
        f"{'TensorRT' if trt_engine is not None else 'ONNX Runtime'} {report.backend_ms:.1f} ms per run (median)"
    )
    if json_path:
        report.write_json(json_path)
    if junit_path:
        report.write_junit(junit_path)
    if not report.passed:
        raise typer.Exit(1)


@_command()
def convert(
    checkpoint: Path = typer.Argument(..., help="weights: .pth/.pt, .safetensors, MXNet .params, Paddle .npz"),
    output: Path = typer.Option(..., "-o", "--output", help="converted weights: .safetensors or .pt"),
    source: str = typer.Option("auto", help="auto (detected from the keys) | mmcv | charlesshang | chengdazhi | "
                               "detectron2 | paddle | 4uiiurz1 | chunhuanlin | mxnet (aliases: mmdet, centernet, "
                               "gluon); several comma separated, applied in order"),
    recipe: Optional[str] = typer.Option(None, help="check the result loads exactly into this recipe's model"),
    strip_prefix: str = typer.Option("", help="leading key prefix to remove, e.g. 'backbone.'"),
    padding: int = typer.Option(1, help="4uiiurz1 only: the layers' padding argument"),
    floor_band: bool = typer.Option(False, help="4uiiurz1 only: a version before 2019-01-05"),
) -> None:
    """Remap a raw checkpoint's DCN weights to the canonical layer's names; a source that recognises no
    layer is an error that names the sources that would."""
    from dcn_deploy.convert import convert_checkpoint
    from dcn_deploy.convert.checkpoints import load_weights, save_weights

    try:
        with console.status(f"converting {checkpoint.name}"):
            converted = convert_checkpoint(load_weights(checkpoint), source, strip_prefix,
                                           {"padding": padding, "floor_band": floor_band})
        state = converted.state
        if recipe:
            from dcn_deploy.onnx.recipes import load_recipe

            model = load_recipe(recipe).build(seed=0, random_offsets=False)
            expected = set(model.state_dict())
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            if missing or unexpected:
                raise ValueError(f"the converted weights do not fit recipe '{recipe}': missing {missing[:8]}"
                                 f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                                 f"{' ...' if len(unexpected) > 8 else ''}")
            model.load_state_dict(state, strict=True)
        save_weights(state, output)
    except typer.Exit:  # _fail's own exit (click's Exit is a RuntimeError): not a second error line
        raise
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        _fail(str(error))
    console.print(f"wrote {output}: {len(state)} tensors; recognised {converted.summary()}", highlight=False,
                  soft_wrap=True)


def _tensorrt_backend(engine: Path, proto) -> dict:
    """validate_onnx's backend arguments for a TensorRT engine built from ``proto``."""
    from dcn_deploy.backends.tensorrt.engine import engine_precision
    from dcn_deploy.backends.tensorrt.runtime import TensorRTRunner
    from dcn_deploy.onnx.model_info import onnx_inputs

    runner = TensorRTRunner(engine, input_names=[i.name for i in onnx_inputs(proto)],
                            output_names=[o.name for o in proto.graph.output], console=console)
    return {"run_backend": runner, "output_names": runner.output_names, "backend": runner.backend_name,
            "precision": engine_precision(engine, proto)}


@_command()
def build(
    model: Path = typer.Argument(..., help="ONNX file exported by dcn-deploy export"),
    output: Path = typer.Option(..., "-o", "--output", help="TensorRT engine (plan) to write"),
    precision: Optional[str] = typer.Option(None, help="fp32 | fp16 (default: the ONNX's precision)"),
    target: str = typer.Option("tensorrt", "--target", help="tensorrt (the GPU here) | rtx (TensorRT-RTX, "
                               "ahead of time for --compute-capability, no GPU needed)"),
    compute_capability: Optional[list[str]] = typer.Option(
        None, "--compute-capability", help="rtx: build for this GPU architecture, e.g. SM86 or 8.6 (repeatable; "
        "default: TensorRT-RTX's own AOT set)"),
    plugin_lib: Optional[Path] = typer.Option(
        None, "--plugin-lib",
        help="plugin library (default: $DCN_DEPLOY_TRT_LIB, else build/lib/libdcn_deploy_trt<major>.so for the "
             "TensorRT found; rtx: ...trt11.so)"),
    shapes: Optional[list[str]] = typer.Option(
        None, "--shapes", help="NAME:MIN/OPT/MAX per dynamic input, e.g. x:1x3x224x224/4x3x224x224/8x3x224x224, "
        "or one shape (repeatable; default: the export's example shape)"),
    profile: Optional[list[str]] = typer.Option(
        None, "--profile", help="one more optimization profile: its shape specs as for --shapes, comma separated "
        "for several inputs (repeatable: one profile each)"),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="timing cache: read if present, updated"),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="workspace memory limit in MiB"),
    tf32: bool = typer.Option(False, "--tf32", help="allow TF32 in float32 layers (cleared by default)"),
    serialize_plugin: bool = typer.Option(True, "--serialize-plugin/--no-serialize-plugin",
                                          help="store the plugin library in the plan"),
    verbose: bool = typer.Option(False, "--verbose", help="print TensorRT's info messages"),
) -> None:
    """Build a TensorRT or TensorRT-RTX engine from an exported ONNX, with this project's plugin."""
    from dcn_deploy.backends.tensorrt.build import TARGET_NAMES, TARGETS, build_engine
    from dcn_deploy.backends.tensorrt.common import TensorRTError
    from dcn_deploy.onnx.model_info import PRECISIONS

    if not model.is_file():
        _fail(f"no ONNX file at {model}")
    if precision is not None and precision not in PRECISIONS:
        _fail(f"--precision must be one of {list(PRECISIONS)}, got '{precision}'")
    if target not in TARGETS:
        _fail(f"--target must be one of {list(TARGETS)}, got '{target}'")
    try:
        result = build_engine(
            model, output, precision=precision, shapes=shapes or (), plugin_lib=plugin_lib,
            timing_cache=timing_cache, workspace=workspace, tf32=tf32, serialize_plugin=serialize_plugin,
            console=console, verbose=verbose, target=target, compute_capabilities=compute_capability or (),
            more_profiles=[[p] for p in profile or ()],
        )
    except (FileNotFoundError, ValueError, TensorRTError) as error:
        _fail(str(error))
    for index, ranges in enumerate([result.profiles, *result.more_profiles]):
        table = Table("input", "min", "opt", "max", "from", title=f"optimization profile {index} of {output.name}")
        for entry in ranges:
            table.add_row(entry["name"], *("x".join(map(str, entry[k])) for k in ("min", "opt", "max")),
                          entry["source"])
        console.print(table)
    typing = "strongly typed" if result.strongly_typed else "weakly typed"
    plugin = (f"plugin {result.plugin_library}" + (" (serialized in the plan)" if result.plugin_serialized else "")
              if result.plugin_library else "no plugin")
    built_for = ""
    if result.target == "rtx":
        built_for = " for " + (", ".join(result.compute_capabilities) if result.compute_capabilities
                               else "TensorRT-RTX's default compute capabilities")
    console.print(f"wrote {output}: {result.size_bytes / 2**20:.1f} MiB, {result.precision} ({typing}), "
                  f"{TARGET_NAMES[result.target]} {result.tensorrt_version}{built_for}, {plugin}; "
                  f"{result.seconds:.1f} s")


@_command()
def bench(
    shape: Optional[list[str]] = typer.Option(
        None, "--shape", help="layer shape CxHxW (C input = output channels, e.g. 64x64x64) or C:MxHxW; "
        "repeatable (default: 64x64x64, 256x50x68, 512x25x34, 128x100x136; 3x3, pad 1, stride 1, mask, bias)"),
    batch: Optional[list[int]] = typer.Option(None, "--batch", help="batch size, repeatable (default: 1 and 8)"),
    threads: Optional[int] = typer.Option(None, help="intra-op threads of ONNX Runtime and torch (default: all cores)"),
    repeat: Optional[int] = typer.Option(None, help="timed rounds per row (default: 10 on the CPU, 50 on the GPU)"),
    warmup: int = typer.Option(2, help="untimed runs of each implementation first (GPU: at least 3)"),
    recipe: Optional[list[str]] = typer.Option(
        None, "--recipe", help="also time this recipe end to end: custom op vs standard DeformConv in ONNX "
        "Runtime, and the PyTorch model (repeatable)"),
    input_shape: Optional[str] = typer.Option(None, "--input-shape",
                                              help="NxCxHxW for --recipe (default: the recipe's)"),
    layers: bool = typer.Option(True, "--layers/--no-layers", help="time the layer shapes"),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="time the PyTorch reference too"),
    int8: bool = typer.Option(False, "--int8/--no-int8",
                              help="CPU layers: also time the INT8 custom op (DcnDeformConvInt8)"),
    device: str = typer.Option("auto", help="auto: CPU, plus GPU when torch sees CUDA | cpu | cuda: GPU part only"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write machine info and every row as JSON"),
    plot_path: Optional[Path] = typer.Option(None, "--plot",
                                             help="write a PNG: time per shape for each implementation"),
    seed: int = typer.Option(0, help="seed of the random inputs and weights"),
    offset_scale: float = typer.Option(2.0, help="offsets ~ normal(0, this many pixels)"),
    serve_url: Optional[str] = typer.Option(
        None, "--serve", help="instead: latency and throughput of a running KServe v2 server (dcn-deploy serve, "
        "Triton) at this URL, e.g. http://127.0.0.1:8000"),
    model: Optional[str] = typer.Option(None, "--model", help="--serve: the model's name (default: the server's only one)"),
    concurrency: Optional[list[int]] = typer.Option(None, "--concurrency",
                                                    help="--serve: concurrent clients, repeatable (default: 1, 4, 16)"),
    requests: int = typer.Option(500, "--requests", help="--serve: timed requests per concurrency level"),
) -> None:
    """Time this project's DCN implementations against ONNX Runtime's, PyTorch's, torchvision's and a dense conv.

    With --serve URL: p50/p90/p99 latency and throughput of a running server at several concurrencies."""
    if serve_url is not None:
        _bench_serve(serve_url, model, input_shape, concurrency, requests, warmup, seed, json_path)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dcn_deploy.bench.config import DEFAULT_BATCHES, BenchConfig, command_line
    from dcn_deploy.bench.errors import BenchError
    from dcn_deploy.bench.layers import DEFAULT_SHAPES
    from dcn_deploy.bench.report import print_tables
    from dcn_deploy.bench.run import run_benchmark

    try:
        config = BenchConfig(
            shapes=[_bench_shape(text) for text in shape] if shape else DEFAULT_SHAPES,
            batches=list(batch) if batch else DEFAULT_BATCHES,
            threads=threads, warmup=warmup, repeat=repeat, device=device, layers=layers,
            recipes=list(recipe or ()), recipe_shape=_parse_shape(input_shape) if input_shape else None,
            reference=reference, int8=int8, seed=seed, offset_scale=offset_scale, command=command_line(),
        )
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("bench", total=None)
            result = run_benchmark(
                config, progress=lambda text, done, total: bar.update(task, description=text, completed=done,
                                                                      total=total))
    except (BenchError, FileNotFoundError) as error:
        _fail(str(error))
    except typer.BadParameter as error:
        _fail(str(error))
    print_tables(result, console)
    if json_path:
        from dcn_deploy.bench.report import write_json

        write_json(result, json_path)
        console.print(f"wrote {json_path}")
    if plot_path:
        from dcn_deploy.bench.report import write_plot

        write_plot(result, plot_path)
        console.print(f"wrote {plot_path}")


def _bench_serve(url: str, model: Optional[str], input_shape: Optional[str], concurrency: Optional[list[int]],
                 requests: int, warmup: int, seed: int, json_path: Optional[Path]) -> None:
    """``bench --serve``: the levels with a progress bar, then the table (and the JSON)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dcn_deploy.bench.config import command_line
    from dcn_deploy.bench.report import write_json
    from dcn_deploy.serving.load_test import (
        DEFAULT_CONCURRENCY,
        ServeBenchConfig,
        ServeBenchError,
        parse_dims,
        run_serve_benchmark,
    )

    try:
        config = ServeBenchConfig(url, model, parse_dims(input_shape) if input_shape else None,
                                  list(concurrency or DEFAULT_CONCURRENCY), requests, warmup, seed,
                                  command=command_line())
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("requests", total=None)
            result = run_serve_benchmark(config, progress=lambda text, done, total: bar.update(
                task, description=text, completed=done, total=total))
    except ServeBenchError as error:
        _fail(str(error))
    shapes = ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in result["input_shapes"].items())
    table = Table(title=f"{result['model']} at {url} ({result['server'].get('name')}; {shapes}; binary tensors)",
                  box=box.SIMPLE_HEAD)
    for column in ("concurrency", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "mean ms", "req/s"):
        table.add_column(column, justify="right")

    def ms(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    for level in result["levels"]:
        table.add_row(str(level["concurrency"]), str(level["requests"]), str(level["errors"]), ms(level["p50_ms"]),
                      ms(level["p90_ms"]), ms(level["p99_ms"]), ms(level["mean_ms"]),
                      "-" if level["throughput_rps"] is None else f"{level['throughput_rps']:.0f}")
    console.print(table)
    for level in result["levels"]:
        for message in level["first_errors"]:
            console.print(f"[red]error[/red] at concurrency {level['concurrency']}: {message}", highlight=False)
    if json_path:
        write_json(result, json_path)
        console.print(f"wrote {json_path}")
    for level in result["levels"]:
        if level["warmup_errors"]:
            console.print(f"[red]{level['warmup_errors']} warm-up request(s) failed[/red] at concurrency "
                          f"{level['concurrency']} (untimed, not in the table)", highlight=False)
    if any(level["errors"] or level["warmup_errors"] for level in result["levels"]):
        raise typer.Exit(1)


def _bench_shape(text: str):
    from dcn_deploy.bench.layers import parse_shape_spec

    return parse_shape_spec(text)


LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's


@_command()
def serve(
    model: Path = typer.Argument(..., help="model.onnx (ONNX Runtime) or model.engine / .plan (TensorRT)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(8000, help="port (0: a free one, printed)"),
    backend: Optional[str] = typer.Option(None, help="onnxruntime | tensorrt (default: by the file's suffix)"),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="name in the URLs (default: file stem)"),
    max_batch_size: int = typer.Option(8, "--max-batch-size", help="rows per stacked run (1: no stacking)"),
    max_delay_ms: float = typer.Option(1.0, "--max-delay-ms", help="longest wait for more requests to stack"),
    workers: int = typer.Option(2, help="runs at once (threads; TensorRT: execution contexts)"),
    threads: Optional[int] = typer.Option(None, help="ONNX Runtime intra-op threads per run (default: all cores)"),
    device: str = typer.Option("cpu", help="ONNX Runtime: cpu | cuda | auto (CUDA when available)"),
    plugin_lib: Optional[Path] = typer.Option(None, "--plugin-lib", help="TensorRT plugin library"),
    cuda_graphs: bool = typer.Option(True, "--cuda-graphs/--no-cuda-graphs", help="TensorRT: replay CUDA graphs"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level"),
    max_request_bytes: int = typer.Option(DEFAULT_LIMITS.max_request_bytes, "--max-request-bytes",
                                          help="largest request body, also once decompressed (beyond: 413)"),
    max_input_elements: int = typer.Option(DEFAULT_LIMITS.max_input_elements, "--max-input-elements",
                                           help="most elements of one input, from its declared shape (beyond: 413)"),
    max_queue: int = typer.Option(DEFAULT_LIMITS.max_queue, "--max-queue",
                                  help="inference requests in the server at once (beyond: 503 + Retry-After)"),
    request_timeout_s: float = typer.Option(DEFAULT_LIMITS.request_timeout_s, "--request-timeout-s",
                                            help="longest a request may take (beyond: 504; 408 for its body)"),
    engine: str = typer.Option("dcn-deploy", help="dcn-deploy (this process) | ray (a Ray Serve application: "
                               "replicas on a Ray cluster, same HTTP API)"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="ray: an existing cluster's address "
                                              "(default: a local Ray for this process)"),
    replicas: int = typer.Option(RAY.replicas, help="ray: fixed number of replicas (one runtime each)"),
    min_replicas: int = typer.Option(RAY.min_replicas, "--min-replicas", help="ray: autoscaling's lower bound"),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", help="ray: autoscale up to this many "
                                               "replicas (default: no autoscaling)"),
    target_ongoing_requests: float = typer.Option(RAY.target_ongoing_requests, "--target-ongoing-requests",
                                                  help="ray: requests in progress per replica autoscaling aims at"),
    max_ongoing_requests: int = typer.Option(RAY.max_ongoing_requests, "--max-ongoing-requests",
                                             help="ray: requests sent to one replica at once"),
    num_cpus: float = typer.Option(RAY.num_cpus, "--num-cpus", help="ray: CPUs reserved per replica"),
    num_gpus: Optional[float] = typer.Option(None, "--num-gpus", help="ray: GPUs per replica (default: 1 for "
                                             "--device cuda or a TensorRT engine, else 0)"),
    proxy_location: str = typer.Option(PROXY_LOCATIONS[0], "--proxy-location", help="ray: HeadOnly | EveryNode "
                                       "(where Ray's HTTP proxy runs)"),
    app_name: Optional[str] = typer.Option(None, "--app-name", help="ray: the Serve application's name (default: "
                                           "the model's name; one that runs on the cluster already is refused)"),
    route_prefix: str = typer.Option("/", "--route-prefix", help="ray: the application's route prefix (a second "
                                     "application on one cluster needs its own, e.g. /second)"),
) -> None:
    """Serve a model over HTTP with the KServe v2 / Open Inference Protocol (Triton's HTTP API).

    SIGTERM or Ctrl+C: stop accepting, answer the requests in progress, exit."""
    if engine not in ("dcn-deploy", "ray"):
        _fail(f"--engine must be dcn-deploy or ray, got '{engine}'")
    if log_level not in LOG_LEVELS:
        _fail(f"--log-level must be one of {list(LOG_LEVELS)}, got '{log_level}'")
    ray_flags = {"--ray-address": (ray_address, None), "--replicas": (replicas, RAY.replicas),
                 "--min-replicas": (min_replicas, RAY.min_replicas), "--max-replicas": (max_replicas, None),
                 "--target-ongoing-requests": (target_ongoing_requests, RAY.target_ongoing_requests),
                 "--max-ongoing-requests": (max_ongoing_requests, RAY.max_ongoing_requests),
                 "--num-cpus": (num_cpus, RAY.num_cpus), "--num-gpus": (num_gpus, None),
                 "--proxy-location": (proxy_location, PROXY_LOCATIONS[0]), "--app-name": (app_name, None),
                 "--route-prefix": (route_prefix, "/")}
    ray_only = [flag for flag, (value, default) in ray_flags.items() if value != default]
    if engine != "ray" and ray_only:
        _fail(f"{', '.join(ray_only)} only apply to --engine ray (this is --engine {engine})")
    if engine == "ray":
        _serve_ray(model, host, port, backend, model_name, max_batch_size, max_delay_ms, workers, threads, device,
                   plugin_lib, cuda_graphs, ServeLimits(max_request_bytes, max_input_elements, max_queue,
                                                        request_timeout_s),
                   dict(replicas=replicas, min_replicas=min_replicas, max_replicas=max_replicas,
                        target_ongoing_requests=target_ongoing_requests, max_ongoing_requests=max_ongoing_requests,
                        num_cpus=num_cpus, num_gpus=num_gpus), ray_address, proxy_location, log_level, app_name,
                   route_prefix)
        return
    from dcn_deploy.backends.load import load_runtime, serving_options
    from dcn_deploy.backends.runtime import backend_for
    from dcn_deploy.backends.tensorrt.common import TensorRTError
    from dcn_deploy.serving.server import serve as serve_model

    try:
        limits = ServeLimits(max_request_bytes, max_input_elements, max_queue, request_timeout_s).check()
    except ValueError as error:
        _fail(str(error))
    try:
        kind = backend_for(model, backend)
        runtime = load_runtime(model, kind, **serving_options(kind, device, threads, workers, plugin_lib, cuda_graphs,
                                                              console))
    except (FileNotFoundError, ValueError, TensorRTError) as error:
        _fail(str(error))
    name = model_name or model.stem

    def ready(url: str, batcher) -> None:
        # one line: whoever waits for the URL reads the batching plan with it
        console.print(f"serving '{name}' ({runtime.backend}) at {url}/v2/models/{name} (max batch "
                      f"{max_batch_size}, max delay {max_delay_ms} ms, {workers} workers; batching: "
                      f"{batcher.describe()}; limits: {max_request_bytes} request bytes, {max_input_elements} "
                      f"elements per input, {max_queue} requests at once, {request_timeout_s:g} s per request); "
                      f"Ctrl+C stops", highlight=False, soft_wrap=True)

    try:
        serve_model(runtime, name, host=host, port=port, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms,
                    workers=workers, on_ready=ready, log_level=log_level, limits=limits)
    except (OSError, ValueError) as error:
        _fail(str(error))
    finally:
        runtime.close()


def _serve_ray(model: Path, host: str, port: int, backend: Optional[str], model_name: Optional[str],
               max_batch_size: int, max_delay_ms: float, workers: int, threads: Optional[int], device: str,
               plugin_lib: Optional[Path], cuda_graphs: bool, limits: ServeLimits, scaling: dict,
               ray_address: Optional[str], proxy_location: str, log_level: str, app_name: Optional[str],
               route_prefix: str) -> None:
    """``serve --engine ray``: the settings checked before Ray starts, then the application until a signal."""
    from dcn_deploy.serving.ray_config import RayServeSettings, RaySettingsError

    if proxy_location not in PROXY_LOCATIONS:
        _fail(f"--proxy-location must be one of {list(PROXY_LOCATIONS)}, got '{proxy_location}'")
    try:
        settings = RayServeSettings(
            str(model), model_name, backend, device, threads, str(plugin_lib) if plugin_lib else None, cuda_graphs,
            max_batch_size, max_delay_ms, workers, max_request_bytes=limits.max_request_bytes,
            max_input_elements=limits.max_input_elements, max_queue=limits.max_queue,
            request_timeout_s=limits.request_timeout_s, **scaling).check()
    except (RaySettingsError, ValueError) as error:
        _fail(str(error))
    try:  # optional: Ray Serve (the "#ray " extra of requirements.txt)
        from dcn_deploy.serving import ray_app
    except ImportError as error:
        _fail(f"--engine ray needs Ray Serve ({error}): pip install 'ray[serve]==2.60.0' (the optional extra "
              f"'ray' of requirements.txt, which scripts/setup.sh installs)")

    def ready(url: str) -> None:
        how = (f"{settings.min_replicas}-{settings.max_replicas} replicas (autoscaling, target "
               f"{settings.target_ongoing_requests:g} requests in progress each)" if settings.autoscaling
               else f"{settings.replicas} replica(s)")
        console.print(f"serving '{settings.name}' (Ray Serve, {how}, {settings.num_cpus:g} CPU / {settings.gpus:g} "
                      f"GPU each; max batch {max_batch_size}, max delay {max_delay_ms} ms per replica) at "
                      f"{url}/v2/models/{settings.name}; Ctrl+C stops", highlight=False, soft_wrap=True)

    try:
        ray_app.run(settings, host, port, ray_address, proxy_location, on_ready=ready, log_level=log_level,
                    app_name=app_name, route_prefix=route_prefix)
    except (OSError, ValueError) as error:
        _fail(str(error))


@_command("triton-repo")
def triton_repo(
    model: Path = typer.Argument(..., help="model.onnx or a TensorRT engine (model.engine / .plan)"),
    output: Path = typer.Option(..., "-o", "--output", help="the repository directory (created or added to)"),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="the model's name (default: file stem)"),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime | tensorrt (default: by suffix) | "
                                          "python (Triton's Python backend running this project's runtime)"),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="engine only: the ONNX it was built from (its I/O)"),
    max_batch_size: int = typer.Option(8, "--max-batch-size", help="Triton's dynamic batching limit (0: none)"),
    max_delay_ms: float = typer.Option(1.0, "--max-delay-ms", help="Triton's max queue delay"),
    instances: int = typer.Option(1, help="model instances (instance_group count)"),
    threads: Optional[int] = typer.Option(None, help="python backend: ONNX Runtime intra-op threads per instance "
                                          "(default 1: --instances N uses N cores)"),
    kind: Optional[str] = typer.Option(None, help="cpu | gpu (default: cpu for ONNX, gpu for TensorRT)"),
    library: Optional[Path] = typer.Option(None, "--library", help="custom-op / plugin library to copy "
                                           "(default: this checkout's build)"),
    mount: Optional[str] = typer.Option(None, "--mount", help="the repository's path as tritonserver sees it, "
                                        "e.g. /models in a container (default: its absolute path)"),
    force: bool = typer.Option(False, "--force", help="replace an existing model directory"),
) -> None:
    """Write a Triton Inference Server model repository (config.pbtxt, model, library, README)."""
    from dcn_deploy.serving.triton_repo import TritonRepoError, write_triton_repo

    try:
        repo = write_triton_repo(model, output, model_name=model_name, backend=backend, onnx_model=onnx,
                                 max_batch_size=max_batch_size,
                                 max_delay_ms=max_delay_ms, instances=instances, kind=kind, library=library,
                                 mount=mount, force=force, threads=threads)
    except (FileNotFoundError, ValueError, TritonRepoError) as error:
        _fail(str(error))
    for note in repo.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    library_text = f", library {repo.library.name}" if repo.library else ""
    console.print(f"wrote {repo.root / repo.model_name}: config.pbtxt, {repo.model_file.relative_to(repo.root)}"
                  f"{library_text} (max_batch_size {repo.max_batch_size}); how to start tritonserver: {repo.readme}",
                  highlight=False, soft_wrap=True)


@_command("k8s")
def k8s(
    model: Path = typer.Argument(..., help="model.onnx or a TensorRT engine (model.engine / .plan)"),
    output: Path = typer.Option(..., "-o", "--output", help="folder for triton-repo/, inferenceservice.yaml, "
                                "rayservice.yaml"),
    storage_uri: str = typer.Option(..., "--storage-uri", help="where you copy triton-repo/ (s3://, gs://, "
                                    "pvc://...): the InferenceService's storageUri"),
    name: Optional[str] = typer.Option(None, help="the resources' name (default: the model's name)"),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="name in the URLs (default: file stem)"),
    namespace: Optional[str] = typer.Option(None, help="Kubernetes namespace (default: none written)"),
    ray_image: str = typer.Option(DEFAULT_RAY_IMAGE, "--ray-image", help="RayService image: Ray 2.60.0 "
                                  "with this project installed and built (README: Kubernetes)"),
    model_pvc: Optional[str] = typer.Option(None, "--model-pvc", help="RayService: a PersistentVolumeClaim with "
                                            "the model, mounted at /mnt/models (default: the image has it there)"),
    replicas: int = typer.Option(RAY.replicas, help="fixed number of replicas (pods)"),
    min_replicas: int = typer.Option(RAY.min_replicas, "--min-replicas", help="autoscaling's lower bound"),
    max_replicas: Optional[int] = typer.Option(None, "--max-replicas", help="autoscale up to this many"),
    target_ongoing_requests: float = typer.Option(RAY.target_ongoing_requests, "--target-ongoing-requests",
                                                  help="Ray Serve: requests in progress per replica to aim at"),
    max_batch_size: int = typer.Option(RAY.max_batch_size, "--max-batch-size",
                                       help="rows per stacked run (Triton and Ray)"),
    max_delay_ms: float = typer.Option(RAY.max_delay_ms, "--max-delay-ms", help="longest wait for more requests to stack"),
    threads: Optional[int] = typer.Option(None, help="Ray: ONNX Runtime intra-op threads per replica"),
    cpus: Optional[float] = typer.Option(None, help="CPUs per pod, one replica each (default: 2)"),
    memory: Optional[str] = typer.Option(None, help="memory per pod, a Kubernetes quantity (default: 4Gi)"),
    gpus: Optional[int] = typer.Option(None, help="GPUs per pod (default 0; TensorRT engines need 1; ONNX models "
                                       "then run on CUDA)"),
    force: bool = typer.Option(False, "--force", help="replace existing manifests and repository model"),
) -> None:
    """Write Kubernetes manifests: a KServe InferenceService (Triton) and a KubeRay RayService (Ray Serve)."""
    from dcn_deploy.serving.k8s import K8sError, PodResources, write_manifests
    from dcn_deploy.serving.ray_config import RayServeSettings, RaySettingsError
    from dcn_deploy.serving.triton_repo import TritonRepoError

    try:
        settings = RayServeSettings(str(model), model_name, device="cuda" if gpus else "cpu", threads=threads,
                                    max_batch_size=max_batch_size, max_delay_ms=max_delay_ms, replicas=replicas,
                                    min_replicas=min_replicas, max_replicas=max_replicas,
                                    target_ongoing_requests=target_ongoing_requests).check()
        given = {"cpus": cpus, "memory": memory, "gpus": gpus}
        resources = PodResources(**{key: value for key, value in given.items() if value is not None})
        written = write_manifests(model, output, settings, storage_uri, name, namespace, ray_image, model_pvc,
                                  resources, force)
    except (FileNotFoundError, ValueError, RaySettingsError, K8sError, TritonRepoError) as error:
        _fail(str(error))
    for note in written.repository.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"wrote {written.repository.root} (copy it to {storage_uri}), {written.inference_service} "
                  f"(kubectl apply -f; KServe, Triton runtime) and {written.ray_service} (kubectl apply -f; "
                  f"KubeRay, image {ray_image})", highlight=False, soft_wrap=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
