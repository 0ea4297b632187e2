"""``edgeq emulator`` and ``edgeq cache``: what edgeq keeps in its cache folder (edgeq.emulator.cache_dir)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from edgeq.cli_common import err, fail
from edgeq.errors import ConfigError, EdgeqError
from edgeq.inputs.shown import printable

__all__ = ["cache_app", "emulator_app"]

emulator_app = typer.Typer(help="Emulated edge CPUs for validation: set up once, then builds run offline.",
                           no_args_is_help=True)


def _emulator_spec(name: str) -> Any:
    from edgeq.emulator import EMULATORS

    if name not in EMULATORS:
        raise ConfigError(f"unknown emulator '{name}'; known: {', '.join(EMULATORS)}")
    return EMULATORS[name]


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@emulator_app.command("setup")
def emulator_setup(
    name: Annotated[str, typer.Argument(help="The emulator: arm64.")] = "arm64",
    mirror: Annotated[
        str | None, typer.Option("--mirror", help="Debian mirror \\[default: http://deb.debian.org/debian].")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch and unpack again even if it is set up.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Fetch the emulator's root (Debian packages and aarch64 wheels) into the user cache; once."""
    from edgeq.emulator import DEFAULT_MIRROR, emulator_dir, setup

    try:
        spec = _emulator_spec(name)
        m = setup(spec, mirror=mirror or DEFAULT_MIRROR, force=force, log=lambda line: err.print(line, markup=False))
    except EdgeqError as e:
        fail(e, debug, e.exit_code)
    where = emulator_dir(spec)
    if not m["fetched"]:
        typer.echo(f"{name}: already set up in {where} ({_mb(m['bytes_installed'])}, {m['created']}); nothing to do")
        return
    g = m["guest"]
    typer.echo(f"{name}: fetched {len(m['packages'])} Debian {m['suite']} packages and "
               f"{', '.join(w['requirement'] for w in m['wheels'])}: {_mb(m['bytes_fetched'])} downloaded")
    typer.echo(f"{name}: set up in {where}: {_mb(m['bytes_installed'])} on disk, Python {g['python']} {g['machine']}, "
               f"LiteRT {g['litert']}, numpy {g['numpy']} ({m['setup_seconds']:.0f} s)")


@emulator_app.command("status")
def emulator_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """What is installed: qemu, each emulator's root, the CPU profiles."""
    from edgeq.emulator import EMULATORS, status

    states = [status(spec) for spec in EMULATORS.values()]
    if as_json:
        typer.echo(json.dumps(states, indent=2, sort_keys=True))
        return
    for st in states:
        q = st["qemu"]
        typer.echo(f"{st['emulator']}:")
        typer.echo(f"  qemu:     {q['path'] + ' (' + q['version'] + ')' if 'path' in q else 'missing - ' + q['missing']}")
        if st["installed"]:
            g = st["guest"]
            typer.echo(f"  root:     {st['path']} ({_mb(st['bytes_installed'])}, Debian {st['suite']}, set up {st['created']})")
            typer.echo(f"  guest:    Python {g['python']} {g['machine']}, LiteRT {g['litert']}, numpy {g['numpy']}")
        else:
            why = "set up by another edgeq version" if st.get("stale") else "not set up"
            typer.echo(f"  root:     {why}; run: edgeq emulator setup {st['emulator']}")
        typer.echo("  profiles: " + "; ".join(f"{p} ({d})" for p, d in st["profiles"].items()))




cache_app = typer.Typer(help="The stage cache: what earlier builds made, reused by a build whose inputs are the same.",
                        no_args_is_help=True)


@cache_app.command("info")
def cache_info(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where the stage cache is, its entries and bytes per kind, and its size limit."""
    from edgeq.cache import OFF_ENV, StageCache, default_root

    cache = StageCache(default_root())
    kinds: dict[str, list[int]] = {}
    for kind, _, size, _ in cache.entries():
        kinds.setdefault(kind, [0, 0])
        kinds[kind][0] += 1
        kinds[kind][1] += size
    info = {"path": str(cache.root), "entries": sum(v[0] for v in kinds.values()), "bytes": sum(v[1] for v in kinds.values()),
            "max_bytes": cache.max_bytes, "kinds": {k: {"entries": n, "bytes": b} for k, (n, b) in kinds.items()}}
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    typer.echo(printable(f"stage cache: {cache.root}"))
    typer.echo(f"  {info['entries']} entries, {_mb(info['bytes'])} of at most {_mb(cache.max_bytes)} "
               "(least recently used go first; EDGEQ_CACHE_MAX_BYTES sets it)")
    for kind, (n, b) in kinds.items():
        typer.echo(f"  {kind:<19} {n:>5} entries  {_mb(b):>10}")
    typer.echo(f"  builds use it unless --no-cache or {OFF_ENV}=1; `edgeq cache clear` empties it")


@cache_app.command("clear")
def cache_clear() -> None:
    """Remove every entry of the stage cache (the emulators' roots stay)."""
    from edgeq.cache import StageCache, default_root

    cache = StageCache(default_root())
    n, size = cache.clear()
    typer.echo(printable(f"removed {n} entries ({_mb(size)}) from {cache.root}"))
