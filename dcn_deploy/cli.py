"""The ``dcn-deploy`` command: a thin layer over the library."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Export, run and validate DCNv2 models.")
console = Console()


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"shape '{text}' is not of the form NxCxHxW") from None
    if len(dims) != 4 or min(dims) <= 0:
        raise typer.BadParameter(f"shape '{text}' must be four positive sizes NxCxHxW")
    return dims


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@app.command()
def recipes() -> None:
    """List the model recipes in export/."""
    from .recipes import available_recipes

    table = Table("recipe", "description")
    for name, description in available_recipes().items():
        table.add_row(name, description)
    console.print(table)


@app.command()
def export(
    output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write"),
    recipe: str = typer.Option("demo", help="recipe name in export/ or path to a recipe .py file"),
    seed: int = typer.Option(0, help="seed of the recipe's weights"),
    standard: bool = typer.Option(False, "--standard", help="emit standard ONNX DeformConv (opset 19)"),
    static: bool = typer.Option(False, "--static", help="fixed batch/height/width instead of dynamic"),
    shape: Optional[str] = typer.Option(None, help="example input shape NxCxHxW (default: the recipe's)"),
    weights: Optional[Path] = typer.Option(None, help="weights for the recipe (e.g. from dcn-deploy convert)"),
) -> None:
    """Export a recipe to ONNX, one DeformConv node per DCN layer."""
    from .recipes import export_recipe

    try:
        proto = export_recipe(
            recipe, output, seed=seed, standard_op=standard, dynamic=not static,
            input_shape=_parse_shape(shape) if shape else None, weights=str(weights) if weights else None,
        )
    except (FileNotFoundError, ValueError, AttributeError) as error:
        _fail(str(error))
    from .export import get_metadata
    import json

    nodes = json.loads(get_metadata(proto)["dcn_nodes"])
    kind = "standard DeformConv" if standard else "custom DcnDeformConv"
    console.print(f"wrote {output}: {len(nodes)} {kind} nodes, {len(proto.graph.node)} nodes in all")


@app.command()
def rewrite(
    model: Path = typer.Argument(..., help="ONNX file"),
    output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write"),
    to: str = typer.Option("custom", help="custom | standard"),
) -> None:
    """Rewrite every DeformConv node to the custom node or to standard DeformConv."""
    from .rewrite import rewrite_onnx

    try:
        _, count = rewrite_onnx(model, to=to, output=output)
    except (FileNotFoundError, ValueError) as error:
        _fail(str(error))
    console.print(f"wrote {output}: {count} nodes rewritten to {to}")


@app.command()
def validate(
    model: Path = typer.Argument(..., help="ONNX file exported by dcn-deploy export"),
    recipe: Optional[str] = typer.Option(None, help="reference recipe (default: recorded in the ONNX)"),
    seed: Optional[int] = typer.Option(None, help="seed of the reference weights (default: recorded)"),
    inputs: int = typer.Option(3, "-n", "--inputs", help="number of random inputs"),
    input_seed: int = typer.Option(0, help="seed of the random inputs"),
    shape: Optional[str] = typer.Option(None, help="input shape NxCxHxW (default: the export's)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the report as JSON"),
    junit_path: Optional[Path] = typer.Option(None, "--junit", help="write the report as JUnit XML"),
) -> None:
    """Compare the model in ONNX Runtime (custom op) with the PyTorch model in float64."""
    import onnx
    from rich.progress import Progress

    from .recipes import reference_for
    from .validate import validate_onnx

    if not model.is_file():
        _fail(f"no ONNX file at {model}")
    try:
        proto = onnx.load(str(model), load_external_data=False)
        reference, shapes = reference_for(proto, recipe, seed)
        if shape:
            shapes = [_parse_shape(shape)]
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("parity", total=inputs)
            report = validate_onnx(
                model, reference, shapes, num_inputs=inputs, seed=input_seed,
                progress=lambda done: bar.update(task, completed=done),
            )
    except (FileNotFoundError, ValueError, AttributeError) as error:
        _fail(str(error))
    table = Table(title=f"parity of {model.name} ({report.backend}, {report.precision}) vs PyTorch float64")
    for column in ("output", "shape", "max abs", "max rel", "rel L2", "result"):
        table.add_column(column)
    for out in report.outputs:
        verdict = "[green]pass[/green]" if out.passed else "[red]FAIL[/red]"
        table.add_row(out.name, "x".join(map(str, out.shape)), f"{out.max_abs:.2e}", f"{out.max_rel:.2e}",
                      f"{out.rel_l2:.2e}", verdict)
    console.print(table)
    console.print(
        f"tolerance {report.precision}: max rel <= {report.tolerance.max_rel:.0e}, rel L2 <= "
        f"{report.tolerance.rel_l2:.0e}; {report.num_inputs} inputs {report.input_shapes}; "
        f"ONNX Runtime {report.backend_ms:.1f} ms per run (median)"
    )
    if json_path:
        report.write_json(json_path)
    if junit_path:
        report.write_junit(junit_path)
    if not report.passed:
        raise typer.Exit(1)


@app.command()
def convert(
    checkpoint: Path = typer.Argument(..., help="weights: .pth/.pt, .safetensors, MXNet .params, Paddle .npz"),
    output: Path = typer.Option(..., "-o", "--output", help="converted weights: .safetensors or .pt"),
    source: str = typer.Option(..., help="mmcv | charlesshang | chengdazhi | detectron2 | paddle | 4uiiurz1 | "
                               "chunhuanlin | mxnet | torchvision (aliases: mmdet, centernet, gluon)"),
    recipe: Optional[str] = typer.Option(None, help="check the result loads exactly into this recipe's model"),
    strip_prefix: str = typer.Option("", help="leading key prefix to remove, e.g. 'backbone.'"),
    padding: int = typer.Option(1, help="4uiiurz1 only: the layers' padding argument"),
    floor_band: bool = typer.Option(False, help="4uiiurz1 only: a version before 2019-01-05"),
) -> None:
    """Remap a raw checkpoint's DCN weights to the canonical layer's names."""
    from .checkpoints import load_weights, save_weights
    from .convert import convert_state_dict

    try:
        state = convert_state_dict(load_weights(checkpoint), source, strip_prefix,
                                   {"padding": padding, "floor_band": floor_band})
        if recipe:
            from .recipes import load_recipe

            model = load_recipe(recipe).build(seed=0, random_offsets=False)
            expected = set(model.state_dict())
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            if missing or unexpected:
                _fail(f"the converted weights do not fit recipe '{recipe}': missing {missing[:8]}"
                      f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                      f"{' ...' if len(unexpected) > 8 else ''}")
            model.load_state_dict(state, strict=True)
        save_weights(state, output)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        _fail(str(error))
    console.print(f"wrote {output}: {len(state)} tensors ({source})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
