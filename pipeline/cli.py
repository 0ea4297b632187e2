"""The ``edgeq`` command: parsing and printing only; the work is in edgeq.build and the stages.

Exit codes: 0 every gate passed; 1 a gate failed (the bundle and its report are written);
2 bad input or usage (one line on stderr, nothing written); 3 an internal error (a bug in edgeq).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgeq import __version__
from edgeq.cli_common import err, fail
from edgeq.cli_stores import cache_app, emulator_app
from edgeq.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_OK, ConfigError, EdgeqError
from edgeq.inputs.shown import printable, shown

__all__ = ["app", "main"]

app = typer.Typer(
    name="edgeq",
    help="Trained model -> validated, app-ready INT8 edge bundle, in one command.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
EXIT_INTERNAL = 3


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeq {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    """edgeq: export, quantize, convert, validate and package a model for an edge target."""


def _internal(e: Exception, debug: bool) -> None:
    """A bug in edgeq, not in the user's input: one line, exit 3."""
    fail(RuntimeError(f"internal error: {type(e).__name__}: {e} (rerun with --debug and report it)"), debug, EXIT_INTERNAL)


@app.command()
def build(
    model_dir: Annotated[Path, typer.Argument(help="Folder holding edgeq.toml, the model and its data.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Edge target (see `edgeq targets`).")] = "android",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Bundle folder; {precision} in its name becomes the rung shipped "
                                  "\\[default: dist/<model>-<target>-{precision}].")
    ] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", "-p", help="What to ship: a rung of `edgeq precisions` (fp32, fp16, "
                                 "dynamic-int8, int8, int16x8, int4), auto (the smallest that passes every gate) or all "
                                 "(validate every rung, ship the target's default) \\[default: the target's, int8].")
    ] = None,
    gate: Annotated[
        list[str] | None, typer.Option("--gate", help="Override a gate limit, NAME=VALUE (repeatable).")
    ] = None,
    io_dtype: Annotated[
        str | None, typer.Option("--io-dtype", help="Model input/output tensor type: float32 or int8.")
    ] = None,
    keep_build: Annotated[
        Path | None, typer.Option("--keep-build", help="Also copy the intermediate files (ONNX, SavedModel, .tflite) here.")
    ] = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option("--runtime", "-r", help="Validate on these runtimes instead of the target's (repeatable; "
                     "the first is the parity reference), e.g. -r litert -r litert-arm64:cortex-a53."),
    ] = None,
    setup_emulator: Annotated[
        bool, typer.Option("--setup-emulator", help="Set up a missing emulator now (network) instead of failing.")
    ] = False,
    input_shape: Annotated[
        list[str] | None,
        typer.Option("--input-shape", help="Fix an input's shape, NAME=D1,D2,... (repeatable); fills dynamic ONNX dims."),
    ] = None,
    input_value: Annotated[
        list[str] | None,
        typer.Option("--input-value", help="Freeze an input to a value, NAME=VALUE (a number or \\[list]; repeatable): "
                     "it becomes a constant of the model, e.g. sr=16000."),
    ] = None,
    trust_model: Annotated[
        bool, typer.Option("--trust-model", help="Let a .keras file load Lambda layers / custom objects (their code runs), "
                           "and a SavedModel run ops other than math ops (file, Python ops).")
    ] = False,
    allow_float_op: Annotated[
        list[str] | None,
        typer.Option("--allow-float-op", help="Accept this TFLite op in float32 inside the INT8 model, e.g. SIN "
                     "(repeatable; adds to [quantization].allow_float_ops)."),
    ] = None,
    no_repair: Annotated[
        bool, typer.Option("--no-repair", help="When a gate fails, do not try 16-bit activations where the error "
                           "originates (same as [quantization] repair = false).")
    ] = False,
    convert_timeout: Annotated[
        float, typer.Option("--convert-timeout", help="Seconds the converter may run for one graph before it is "
                            "stopped (exit 2).")
    ] = 1800.0,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write the gates as JUnit XML here (CI test results).")
    ] = None,
    summary: Annotated[Path | None, typer.Option("--summary", help="Also append a Markdown job summary here, e.g. "
                                                 "$GITHUB_STEP_SUMMARY.")] = None,
    emulated_samples: Annotated[str, typer.Option("--emulated-samples", help="Eval samples each emulated core runs: "
                                                  "a seeded subset of N, or all (host runtimes run every one).")] = "64",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Run every stage; use and fill no stage cache "
                                           "(`edgeq cache info`).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json to stdout instead of the summary.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Build the target's bundle for MODEL_DIR and validate it. Exit 0 pass, 1 gate failed, 2 bad input."""
    from edgeq.build import BuildOptions
    from edgeq.build import build as run_build
    from edgeq.cache import default_root
    from edgeq.config import (
        check_tflite_ops,
        load_model_spec,
        load_target,
        parse_gate_override,
        parse_input_shape,
        parse_input_value,
    )
    from edgeq.summary import print_summary

    try:
        overrides = dict(parse_gate_override(g) for g in gate or [])
        shapes = dict(parse_input_shape(t) for t in input_shape or [])
        values = dict(parse_input_value(t) for t in input_value or [])
        float_ops = check_tflite_ops(list(allow_float_op or []), "--allow-float-op")
        if not 1 <= convert_timeout < float("inf"):
            raise ConfigError(f"--convert-timeout must be a number of seconds, 1 or more; got {convert_timeout:g}")
        for option, path in (("--junit", junit), ("--summary", summary)):
            _check_result_file(option, path)
        if out is None:
            spec = load_model_spec(model_dir, shapes, values)
            name = load_target(target).name  # a target file's name, not its path
            out = Path("dist") / f"{spec.name}-{name}-{{precision}}"  # the rung shipped, once it is known
        opts = BuildOptions(model_dir=model_dir, target=target, out=out, io_dtype=io_dtype, gates=overrides,
                            keep_build_dir=keep_build, runtimes=tuple(runtime) if runtime else None,
                            setup_emulator=setup_emulator, log=lambda line: err.print(line, markup=False),
                            trust_model=trust_model, input_shapes=shapes or None, input_values=values or None,
                            allow_float_ops=float_ops, repair=not no_repair, convert_timeout=convert_timeout,
                            precision=precision, cache=None if no_cache else default_root(),
                            emulated_samples=_samples(emulated_samples))
        outcome = run_build(opts, on_event=_progress)
    except EdgeqError as e:
        fail(e, debug, e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted; --out was left as it was")
        raise typer.Exit(130) from None
    except Exception as e:  # a bug in edgeq, not in the user's input
        _internal(e, debug)
    report = outcome.report
    for note in outcome.notes:
        err.print(printable(note), markup=False)
    from edgeq.ci_reports import write_job_summary, write_junit

    try:  # checked before the build; a file that still cannot be written is named, the bundle stays
        if junit is not None:
            write_junit(junit, report, outcome.seconds)
        if summary is not None:
            write_job_summary(summary, report, outcome.out, outcome.seconds, outcome.cached)
    except OSError as e:
        fail(ConfigError(f"the bundle is written, but {shown(str(e.filename))} could not be: {e.strerror}"), debug,
              EXIT_BAD_INPUT)
    if as_json:
        typer.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        print_summary(report, outcome.out)
    raise typer.Exit(EXIT_OK if outcome.passed else EXIT_GATE_FAILED)


def _samples(text: str) -> int | None:
    """--emulated-samples: a count of 1 or more, or all (None)."""
    if text.strip().lower() == "all":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"--emulated-samples takes a number of samples (1 or more) or all; got {shown(text)!r}")
    return int(text)


def _check_result_file(option: str, path: Path | None) -> None:
    """--junit / --summary: a file (or a new name) in a folder that exists."""
    if path is not None and (path.is_symlink() or path.is_dir() or not path.parent.is_dir()):
        raise ConfigError(f"{option} '{shown(str(path))}': give a file in an existing folder (not a folder or a symlink)")


def _progress(name: str, k: int, total: int, status: str, seconds: float) -> None:
    if status == "start":
        err.print(f"[{k}/{total}] {name} ...", markup=False)
    elif status == "done":
        err.print(f"[{k}/{total}] {name} done in {seconds:.1f} s", markup=False)
    elif status == "cached":
        err.print(f"[{k}/{total}] {name} reused from the stage cache (it took {seconds:.1f} s)", markup=False)
    else:
        err.print(f"[{k}/{total}] {name} failed after {seconds:.1f} s", markup=False)


@app.command()
def translate(
    bundle: Annotated[Path, typer.Argument(help="A translation bundle written by `edgeq build`.")],
    text: Annotated[list[str] | None, typer.Argument(help="Sentences to translate.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Translate every line of this file.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Translate with a bundle's .tflite files on LiteRT, as an app would (one line out per line in)."""
    from edgeq.bundle.reader import Bundle
    from edgeq.bundle.reader import translate as run_translate
    from edgeq.inputs.files import MAX_TEXT, read_text
    from edgeq.tasks.translation import Translation

    try:
        lines = list(text or [])
        if file is not None:
            if not file.exists():
                raise ConfigError(f"--file {shown(str(file))!r} does not exist")
            content = read_text(file.resolve(), MAX_TEXT, "--file")
            lines += [ln for ln in content.splitlines() if ln.strip()]
        if not lines:
            raise ConfigError("nothing to translate; pass sentences or --file")
        for out in run_translate(Bundle.open(bundle, task=Translation.kind), lines):
            typer.echo(printable(out))
    except EdgeqError as e:
        fail(e, debug, e.exit_code)
    except Exception as e:
        _internal(e, debug)


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `edgeq build`.")],
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Check every file of a bundle against its manifest.json. Exit 0 intact, 1 changed/missing/extra files."""
    from edgeq.bundle.verify import verify as run_verify

    try:
        findings, checked = run_verify(bundle)
    except EdgeqError as e:
        fail(e, debug, e.exit_code)
    except Exception as e:
        _internal(e, debug)
    if findings:
        for f in findings:
            err.print(f"[red]{escape(printable(str(f)))}[/red]", soft_wrap=True)
        err.print(f"FAILED: {len(findings)} problem(s) in {escape(printable(str(bundle)))}; the bundle is not what edgeq wrote",
                  soft_wrap=True)
        raise typer.Exit(EXIT_GATE_FAILED)
    typer.echo(printable(f"OK: {checked} files match {bundle / 'manifest.json'}"))


app.add_typer(emulator_app, name="emulator")
app.add_typer(cache_app, name="cache")


@app.command()
def targets(
    files: Annotated[
        list[Path] | None, typer.Argument(metavar="[FILE.toml]...", help="Target files to check and list too.")
    ] = None,
) -> None:
    """List the edge targets edgeq can build for: the built-in ones, then the target files given, checked."""
    from edgeq.config import available_targets, load_target
    from edgeq.runtimes import with_runtimes

    try:
        listed = [*available_targets(), *(with_runtimes(load_target(str(f))) for f in files or [])]
    except ConfigError as e:
        fail(e, False, EXIT_BAD_INPUT)
    for t in listed:
        rungs = f"precisions: {', '.join(t.precisions)}; default {t.precision}"
        typer.echo(f"{shown(t.name):<10} {shown(t.description, limit=300)} ({rungs})")


@app.command()
def matrix(
    models_dir: Annotated[Path, typer.Argument(help="The folder whose sub-folders are model folders (with edgeq.toml).")],
    target: Annotated[list[str] | None, typer.Option("--target", "-t", help="Targets (repeatable) \\[default: android].")] = None,
) -> None:
    """The CI build matrix: one JSON entry per model folder and target, with the folder's content hash."""
    from edgeq.matrix import matrix_json

    try:
        typer.echo(matrix_json(models_dir, target or ["android"]))
    except EdgeqError as e:
        fail(e, False, e.exit_code)


@app.command()
def precisions() -> None:
    """List the precisions a model can be quantized to: alias, name (what is quantized), bits per weight."""
    from edgeq.precisions import precision_lines

    typer.echo("\n".join(precision_lines()))


@app.command()
def inspect(
    file: Annotated[Path | None, typer.Argument(metavar="FILE", help="A .onnx, .tflite, .safetensors or .gguf file, or a "
                                                "bundle folder.")] = None,
    params: Annotated[float | None, typer.Option("--params", help="A parameter count, e.g. 7e9: the size of such a model's "
                                                 "weights at every precision.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """What a model file's weights weigh per dtype and at every precision, or a model of --params weights."""
    from edgeq.inspection import inspect_path, inspection_lines
    from edgeq.precisions import ladder, ladder_lines

    try:
        if (file is None) == (params is None):
            raise ConfigError("pass a model FILE or --params N, one of the two; e.g. edgeq inspect model.gguf")
        if params is not None and not 1 <= params < float("inf"):
            raise ConfigError(f"--params must be a parameter count of 1 or more, e.g. 7e9; got {params:g}")
        info = inspect_path(file) if file is not None else {"params": params, "ladder": ladder(params or 0)}
    except ConfigError as e:
        fail(e, False, EXIT_BAD_INPUT)
    lines = inspection_lines(info) if file is not None else ladder_lines(params or 0)
    typer.echo(json.dumps(info, indent=2) if as_json else "\n".join(lines))


def main() -> None:
    """Run the edgeq command line; exit with its code (EXIT_BAD_INPUT when the exit carries a message)."""
    try:
        app()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_BAD_INPUT)
        sys.exit(code)
