"""Model recipes: Python files (the repository's ``export/`` folder, or any path) that
build a model for export, tests and benchmarks.

A recipe file defines ``build(seed=0, random_offsets=True) -> nn.Module``,
``example_inputs(batch, height, width, seed) -> tuple[Tensor, ...]``, ``INPUT_SHAPE``,
``DESCRIPTION`` and optionally:

- ``OUTPUT_NAMES`` (a tuple), or ``output_names(**options)`` when the outputs depend on the options;
- ``prepare_weights(state) -> state``: turns a weight file's tensors, e.g. a released checkpoint as
  it is, into the model's names before the strict load;
- ``SIZE_MULTIPLE``: height and width must be multiples of it (a dynamic export declares them so:
  torch.export cannot prove a stride-32 network's concatenations fit for every size);
- ``OPTIONS``: keyword options of ``build``, ``{name: (default, help)}``; the option's type is its
  default's (bool, int, float or str). ``dcn-deploy export --recipe R --name VALUE`` (a bool:
  ``--name`` / ``--no-name``; ``_`` in a name is ``-`` on the command line) passes them to
  ``build(..., name=value)``; the export records them (``dcn_deploy.recipe_options``) so that
  ``validate`` rebuilds the same model.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from dcn_deploy.convert.checkpoints import load_weights
from dcn_deploy.onnx.export import export_onnx
from dcn_deploy.onnx.model_info import get_metadata
from dcn_deploy.op.layer import DeformConv2d
from dcn_deploy.words import cli_flag, parse_bool

RECIPE_DIR = Path(__file__).resolve().parents[2] / "export"
_REQUIRED = ("build", "example_inputs", "INPUT_SHAPE", "DESCRIPTION")
_PREFIX = "dcn_deploy_recipe_"  # module name of a loaded recipe file
_OPTION_TYPES = (bool, int, float, str)


def available_recipes() -> dict[str, str]:
    """Recipe name -> description, for the files in ``export/``."""
    found = {}
    for path in sorted(RECIPE_DIR.glob("*.py")):
        if not path.name.startswith("_"):
            found[path.stem] = load_recipe(path.stem).DESCRIPTION
    return found


def load_python_file(path: str | Path, module_name: str) -> ModuleType:
    """Run a Python file as module ``module_name`` (recipes, ``validate --reference file.py:factory``), with
    its folder importable while it runs: a recipe imports the user's model file beside it, as Python does
    for a script."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no Python file at {path}")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def recipe_id(name_or_path: str) -> str:
    """What an export records for a recipe: the name of a built-in one (also when given as a path
    into ``export/``), else the file's absolute path, so ``validate`` finds it from any directory."""
    path = Path(name_or_path)
    if path.suffix != ".py":
        return name_or_path
    resolved = path.resolve()
    return resolved.stem if resolved.parent == RECIPE_DIR else str(resolved)


def load_recipe(name_or_path: str) -> ModuleType:
    """Load a recipe by name (a file in ``export/``) or by path to a ``.py`` file."""
    path = Path(name_or_path)
    if path.suffix != ".py":
        path = RECIPE_DIR / f"{name_or_path}.py"
    if not path.is_file():
        names = sorted(p.stem for p in RECIPE_DIR.glob("*.py") if not p.name.startswith("_"))
        raise FileNotFoundError(f"no recipe '{name_or_path}': expected one of {names} or a path to a .py file")
    module = load_python_file(path, f"{_PREFIX}{path.stem}")
    missing = [name for name in _REQUIRED if not hasattr(module, name)]
    if missing:
        raise AttributeError(f"recipe {path} does not define {missing}")
    return module


def recipe_options(module: ModuleType) -> dict[str, tuple]:
    """A recipe's ``OPTIONS`` (``{name: (default, help)}``), checked: a recipe file with a malformed
    entry is an error naming it."""
    options = getattr(module, "OPTIONS", {}) or {}
    for name, entry in options.items():
        if not (name.isidentifier() and isinstance(entry, tuple) and len(entry) == 2
                and type(entry[0]) in _OPTION_TYPES and isinstance(entry[1], str)):
            raise AttributeError(f"recipe {module.__name__.removeprefix(_PREFIX)}: OPTIONS['{name}'] must be "
                                 "(default, help) with a bool, int, float or str default")
    return dict(options)


def option_flags(module: ModuleType) -> list[tuple[str, str]]:
    """(how the command line takes it, help) per option, e.g. ``("--top-k INT", "...")``."""
    return [(cli_flag(name) + ("" if isinstance(default, bool) else f" {type(default).__name__.upper()}"), help_text)
            for name, (default, help_text) in recipe_options(module).items()]


def describe_options(module: ModuleType) -> str:
    """The options as the command line takes them, e.g. ``--decode, --top-k INT``."""
    return ", ".join(flag for flag, _ in option_flags(module))


def resolve_options(module: ModuleType, given: dict | None) -> dict:
    """Every option of the recipe with its value: ``given`` (names as in ``OPTIONS``, values of the
    default's type or text to convert) over the defaults. A ValueError names an unknown option or a value
    that does not convert."""
    options = recipe_options(module)
    recipe = module.__name__.removeprefix(_PREFIX)
    resolved = {name: default for name, (default, _) in options.items()}
    for name, value in (given or {}).items():
        if name not in options:
            known = describe_options(module)
            raise ValueError(f"recipe {recipe} has no option {cli_flag(name)}; "
                             + (f"its options: {known}" if known else "it takes no options"))
        resolved[name] = _convert(recipe, name, options[name][0], value)
    return resolved


def _convert(recipe: str, name: str, default, value):
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            flag = parse_bool(text)
            if flag is None:
                raise ValueError(text)
            return flag
        return kind(text)
    except ValueError:
        raise ValueError(f"recipe {recipe}: option {cli_flag(name)} takes a value of type {kind.__name__}, "
                         f"got '{value}'") from None


def parse_option_args(module: ModuleType, args: list[str]) -> dict:
    """The recipe options in command-line words (what ``dcn-deploy export`` does not know itself):
    ``--name VALUE``, ``--name=VALUE``, and for a bool ``--name`` / ``--no-name``."""
    options = recipe_options(module)
    recipe = module.__name__.removeprefix(_PREFIX)
    given: dict = {}
    words = list(args)
    while words:
        word = words.pop(0)
        if not word.startswith("--") or len(word) == 2:
            raise ValueError(f"unexpected argument '{word}' (recipe options are --name VALUE or --name)")
        flag, has_value, value = word[2:].partition("=")
        name = flag.replace("-", "_")
        if name not in options and name.startswith("no_") and isinstance(options.get(name[3:], (None,))[0], bool):
            if has_value:
                raise ValueError(f"recipe {recipe}: {word} takes no value")
            given[name[3:]] = False
            continue
        if name not in options:
            resolve_options(module, {name: None})  # the error naming the options
        if isinstance(options[name][0], bool) and not has_value:
            given[name] = True
            continue
        if not has_value:
            if not words or words[0].startswith("--"):
                raise ValueError(f"recipe {recipe}: option {cli_flag(name)} needs a value")
            value = words.pop(0)
        given[name] = value
    return resolve_options(module, given)


def output_names(module: ModuleType, options: dict) -> tuple[str, ...] | None:
    if hasattr(module, "output_names"):
        return tuple(module.output_names(**options))
    return getattr(module, "OUTPUT_NAMES", None)


def check_input_shape(module: ModuleType, shape: tuple[int, ...]) -> None:
    """Height and width must be multiples of the recipe's ``SIZE_MULTIPLE``."""
    multiple = getattr(module, "SIZE_MULTIPLE", 1)
    if len(shape) == 4 and (shape[2] % multiple or shape[3] % multiple):
        raise ValueError(f"recipe {module.__name__.removeprefix(_PREFIX)} takes heights and widths that are "
                         f"multiples of {multiple}, got input shape {'x'.join(map(str, shape))}")


@torch.no_grad()
def randomize_for_parity(model: nn.Module, seed: int, random_offsets: bool = True) -> None:
    """Make an untrained model exercise every path of the op, as a trained one does.

    BatchNorm gets random statistics and affine parameters (the last BN of a residual
    branch stays small so activations do not grow with depth), and every DCN offset conv
    gets weights that give offsets of about a pixel and masks spread over (0, 1); a
    zero-initialised offset conv would make every DCN a plain convolution.
    """
    generator = torch.Generator().manual_seed(seed + 1)

    def uniform(shape, low, high):
        return torch.rand(shape, generator=generator) * (high - low) + low

    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(uniform(channels, -0.1, 0.1))
            module.running_var.copy_(uniform(channels, 0.5, 1.5))
            small = name.endswith("bn3") or name.endswith("downsample.1")
            module.weight.copy_(uniform(channels, 0.1, 0.3) if small else uniform(channels, 0.8, 1.2))
            module.bias.copy_(uniform(channels, -0.1, 0.1))
        elif isinstance(module, DeformConv2d) and random_offsets:
            conv = module.conv_offset
            fan_in = conv.weight[0].numel()
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (1.5 / math.sqrt(fan_in)))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.5)


def export_recipe(
    recipe: str,
    path,
    seed: int = 0,
    standard_op: bool = False,
    dynamic: bool = True,
    input_shape: tuple[int, ...] | None = None,
    random_offsets: bool = True,
    weights: str | None = None,
    precision: str = "fp32",
    keep_io_types: bool = False,
    keep_debug_info: bool = False,
    options: dict | None = None,
):
    """Build a recipe's model (with ``weights`` from a file, e.g. converted by
    ``dcn-deploy convert``) and export it; the ONNX records how to rebuild the reference
    (recipe, seed, weights, input shape) and its precision in its ``dcn_deploy.*`` metadata.
    ``precision="fp16"`` writes a float16 graph (``keep_io_types``: float32 inputs and outputs),
    see :func:`dcn_deploy.onnx.fp16.convert_to_fp16`; ``keep_debug_info``: keep the exporter's debugging
    metadata (:func:`dcn_deploy.onnx.export.strip_debug_info`); ``options``: the recipe's keyword
    options (``OPTIONS``), recorded."""
    module = load_recipe(recipe)
    options = resolve_options(module, options)
    shape = tuple(input_shape or module.INPUT_SHAPE)
    check_input_shape(module, shape)
    model = _build(module, seed, random_offsets, weights, options)
    inputs = module.example_inputs(shape[0], shape[2], shape[3], seed=seed)
    metadata = {
        "recipe": recipe_id(recipe),
        "seed": str(seed),
        "random_offsets": str(bool(random_offsets)).lower(),
    }
    if weights:
        metadata["weights"] = str(Path(weights).resolve())
    if options:
        metadata["recipe_options"] = json.dumps(options, sort_keys=True)
    return export_onnx(
        model,
        inputs,
        path,
        dynamic=dynamic,
        standard_op=standard_op,
        output_names=output_names(module, options),
        metadata=metadata,
        precision=precision,
        keep_io_types=keep_io_types,
        keep_debug_info=keep_debug_info,
        size_multiple=getattr(module, "SIZE_MULTIPLE", 1),
    )


def _resolve_recorded(recipe: str, onnx_path) -> str:
    path = Path(recipe)
    if path.suffix != ".py" or path.is_file():
        return recipe
    if onnx_path is not None and not path.is_absolute() and (Path(onnx_path).parent / path).is_file():
        return str(Path(onnx_path).parent / path)
    raise FileNotFoundError(f"the ONNX file records recipe {recipe}, which is not there (relative to "
                            f"{Path.cwd()}{' or to the ONNX file' if onnx_path is not None else ''}); "
                            "name it with --recipe PATH")


def _build(module: ModuleType, seed: int, random_offsets: bool, weights: str | None,
           options: dict | None = None) -> nn.Module:
    model = module.build(seed=seed, random_offsets=random_offsets, **(options or {}))
    if weights:
        state = load_weights(weights)
        if hasattr(module, "prepare_weights"):
            state = module.prepare_weights(state)
        check_state_dict(model, state, f"{weights} does not fit recipe {module.__name__.removeprefix(_PREFIX)}")
        model.load_state_dict(state, strict=True)
    return model.eval()


def check_state_dict(model: nn.Module, state: dict, what: str) -> None:
    """Strict key and shape matching; a ValueError listing every difference (the first 8 of each kind)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(f"{key} {tuple(state[key].shape)} (model: {tuple(expected[key].shape)})"
                        for key in set(state) & set(expected) if tuple(state[key].shape) != tuple(expected[key].shape))
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            problems.append(f"{len(keys)} {label}: {keys[:8]}{' ...' if len(keys) > 8 else ''}")
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))


def reference_for(onnx_model, recipe: str | None = None, seed: int | None = None, onnx_path=None):
    """``(reference model, input shapes)`` for an ONNX exported by :func:`export_recipe`;
    ``recipe`` and ``seed`` override what the file records. A recorded recipe path that is relative
    (files exported before paths were recorded absolute) is tried from the working directory, then
    from ``onnx_path``'s folder."""

    meta = get_metadata(onnx_model)
    if not recipe:
        recipe = meta.get("recipe")
        if not recipe:
            raise ValueError("the ONNX file records no recipe (it was not exported by dcn-deploy export); name one "
                             "with --recipe, or give your own model with --reference file.py:factory")
        recipe = _resolve_recorded(recipe, onnx_path)
    seed = int(meta.get("seed", 0)) if seed is None else seed
    module = load_recipe(recipe)
    options = resolve_options(module, json.loads(meta.get("recipe_options", "{}")))
    model = _build(module, seed, meta.get("random_offsets", "true") == "true", meta.get("weights"), options)
    if "input_shapes" in meta:
        shapes = [tuple(s) for s in json.loads(meta["input_shapes"])]
    else:
        shapes = [tuple(module.INPUT_SHAPE)]
    return model, shapes
