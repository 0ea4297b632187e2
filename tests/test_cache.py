"""The stage cache (edgeq.cache): entries, their checks and eviction; builds that reuse them."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import HOST_RUNTIMES, invoke_cli, make_model_dir, snapshot

from edgeq.cache import ENTRY, FILES, OFF_ENV, StageCache, canonical, digest, fingerprint, memo, roundtrip

CACHEABLE = ["export", "quantize", "convert", "precision"]


# ---------------------------------------------------------------------------------------------
# Entries


def _stored(tmp_path: Path, data: Any = None, files: dict[str, bytes] | None = None) -> tuple[StageCache, str]:
    src = tmp_path / "src"
    for rel, content in (files or {}).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(content)
    cache = StageCache(tmp_path / "cache")
    key = cache.key("parts")
    cache.put("convert", key, data if data is not None else {"a": [1, 2.5, None]}, 3.25, src, sorted(files or {}))
    return cache, key


def test_an_entry_gives_back_its_data_files_and_seconds(tmp_path: Path) -> None:
    cache, key = _stored(tmp_path, files={"m.tflite": b"TFL3" * 10, "sm/variables/v.data": b"\x00\x01"})
    hit = cache.get("convert", key)
    assert hit is not None and hit.data == {"a": [1, 2.5, None]} and hit.seconds == 3.25
    assert set(hit.files) == {"m.tflite", "sm/variables/v.data"}
    dest = tmp_path / "build"
    cache.restore(hit, dest)
    assert (dest / "m.tflite").read_bytes() == b"TFL3" * 10 and (dest / "sm/variables/v.data").read_bytes() == b"\x00\x01"
    assert cache.used == ["convert"] and cache.notes == []
    assert cache.get("convert", cache.key("other parts")) is None and cache.get("quantize", key) is None


@pytest.mark.parametrize("damage", ["same size, other bytes", "truncated", "removed"])
def test_a_cached_file_whose_bytes_changed_is_found_and_its_entry_removed(tmp_path: Path, damage: str) -> None:
    cache, key = _stored(tmp_path, files={"m.tflite": b"TFL3 model bytes"})
    path = cache.root / "convert" / key / FILES / "m.tflite"
    if damage == "removed":
        path.unlink()
    else:
        path.write_bytes(b"TFL3 model bytez" if damage.startswith("same") else b"TFL3")
    assert cache.get("convert", key) is None
    assert not (cache.root / "convert" / key).exists()
    assert len(cache.notes) == 1 and "m.tflite" in cache.notes[0] and "convert runs again" in cache.notes[0]


def test_a_changed_entry_json_is_found(tmp_path: Path) -> None:
    cache, key = _stored(tmp_path)
    path = cache.root / "convert" / key / ENTRY
    entry = json.loads(path.read_text())
    entry["data"]["a"][0] = 2
    path.write_text(json.dumps(entry))
    assert cache.get("convert", key) is None and "checksum" in cache.notes[0]
    _, key2 = _stored(tmp_path / "2")
    (tmp_path / "2" / "cache" / "convert" / key2 / ENTRY).write_text("{not json")
    cache2 = StageCache(tmp_path / "2" / "cache")
    assert cache2.get("convert", key2) is None and "unreadable" in cache2.notes[0]


@pytest.mark.parametrize("rel", ["../outside", "/etc/passwd", "a/../../b"])
def test_an_entry_naming_a_file_outside_itself_is_refused(tmp_path: Path, rel: str) -> None:
    cache, key = _stored(tmp_path, files={"m.tflite": b"x"})
    path = cache.root / "convert" / key / ENTRY
    entry = json.loads(path.read_text())
    body = {k: entry[k] for k in ("format", "kind", "key", "data", "files", "seconds")}
    body["files"] = {rel: entry["files"]["m.tflite"]}
    path.write_text(json.dumps({**body, "check": digest(body)}))
    assert cache.get("convert", key) is None and "missing" in cache.notes[0]


def test_a_symlinked_file_in_an_entry_is_refused(tmp_path: Path) -> None:
    cache, key = _stored(tmp_path, files={"m.tflite": b"x"})
    path = cache.root / "convert" / key / FILES / "m.tflite"
    (tmp_path / "elsewhere").write_bytes(b"x")
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    assert cache.get("convert", key) is None


def test_the_least_recently_used_entries_go_past_the_size_limit(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"\x00" * 1000)
    cache = StageCache(tmp_path / "cache")
    keys = [cache.key(k) for k in range(3)]
    cache.put("convert", keys[0], {}, 0.0, src, ["f"])
    cache.max_bytes = 2 * cache.entries()[0][2] + 10  # two entries fit, not three
    os.utime(cache.root / "convert" / keys[0] / ENTRY, (time.time() - 100, time.time() - 100))
    cache.put("convert", keys[1], {}, 0.0, src, ["f"])
    os.utime(cache.root / "convert" / keys[1] / ENTRY, (time.time() - 50, time.time() - 50))
    assert cache.get("convert", keys[0]) is not None  # used now: keys[1] is the least recently used
    cache.put("convert", keys[2], {}, 0.0, src, ["f"])
    assert sorted(p.name for p in (cache.root / "convert").iterdir()) == sorted([keys[0], keys[2]])


def test_a_store_that_fails_is_a_note_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    cache = StageCache(tmp_path / "cache")
    cache.put("convert", cache.key(1), {"a": 1}, 1.0)
    assert "could not be stored" in cache.notes[0] and cache.get("convert", cache.key(1)) is None


def test_clear_removes_every_entry_and_stale_temporary_folders(tmp_path: Path) -> None:
    cache, _ = _stored(tmp_path, files={"m": b"12345"})
    stale = cache.root / "convert" / ".tmp-1-2"
    stale.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = cache.root / "convert" / ".tmp-3-4"  # another build writing right now
    fresh.mkdir()
    assert len(cache.entries()) == 1 and not stale.exists() and fresh.exists()
    assert cache.clear()[0] == 1
    assert cache.entries() == [] and not (cache.root / "convert").exists()


def test_memo_computes_once_and_always_gives_json_values(tmp_path: Path) -> None:
    calls = []

    def compute() -> Any:
        calls.append(1)
        return {"t": (1, 2), "x": 0.1}

    assert memo(None, "check", lambda: (1,), compute) == {"t": [1, 2], "x": 0.1}  # no cache: the same JSON values
    cache = StageCache(tmp_path)
    first = memo(cache, "check", lambda: (1,), compute)
    again = memo(cache, "check", lambda: (1,), compute)
    assert first == again == {"t": [1, 2], "x": 0.1} and len(calls) == 2 and cache.used == ["check"]
    memo(cache, "check", lambda: (2,), compute)
    assert len(calls) == 3


def test_keys_are_canonical_json() -> None:
    @dataclass(frozen=True)
    class Spec:
        path: Path
        shape: tuple[int, ...]

    assert canonical(Spec(Path("/m/x.onnx"), (1, 2))) == {"path": "/m/x.onnx", "shape": [1, 2]}
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1}) != digest({"a": 1, "b": 2})
    assert roundtrip({"a": (1,)}) == {"a": [1]}
    assert fingerprint() == fingerprint() and len(fingerprint()) == 64


# ---------------------------------------------------------------------------------------------
# Builds: the tiny model on the host runtimes, the cache in the module's folder


@dataclass
class Run:
    out: Path
    events: list[tuple[str, str]]
    outcome: Any


@pytest.fixture(scope="module")
def no_off_switch() -> Iterator[None]:
    saved = os.environ.pop(OFF_ENV, None)
    yield
    if saved is not None:
        os.environ[OFF_ENV] = saved


@pytest.fixture(scope="module")
def cached_builds(tmp_path_factory: pytest.TempPathFactory, no_off_switch: None) -> dict[str, Any]:
    from edgeq.build import BuildOptions, build

    root = tmp_path_factory.mktemp("cache_builds")
    model_dir = make_model_dir(root)
    cache = root / "cache"

    def run(name: str, **options: Any) -> Run:
        events: list[tuple[str, str]] = []
        opts = BuildOptions(model_dir=model_dir, target="android", out=root / name, runtimes=HOST_RUNTIMES,
                            cache=cache, **options)
        outcome = build(opts, on_event=lambda stage, k, n, status, s: events.append((stage, status)))
        return Run(root / name, events, outcome)

    runs = {"first": run("first"), "second": run("second")}
    runs["gate"] = run("gate", gates={"model_bytes": 100}, repair=False)
    convert = next((cache / "convert").iterdir())
    tflite = convert / FILES / "model.int8.tflite"
    data = bytearray(tflite.read_bytes())
    data[-64] ^= 0xFF  # a flipped bit in the cached INT8 model
    tflite.write_bytes(bytes(data))
    runs["damaged"] = run("damaged")
    return {"runs": runs, "cache": cache, "model_dir": model_dir}


def _cached(run: Run) -> list[str]:
    return [stage for stage, status in run.events if status == "cached"]


def test_a_first_build_runs_every_stage_and_fills_the_cache(cached_builds: dict[str, Any]) -> None:
    first = cached_builds["runs"]["first"]
    assert first.outcome.passed and _cached(first) == [] and first.outcome.cached == ()
    kinds = {p.name for p in cached_builds["cache"].iterdir()}
    assert kinds >= {*CACHEABLE, "check", "attribution", "attribution_tflite"}


def test_an_unchanged_rebuild_reuses_every_stage_and_gives_byte_identical_files(cached_builds: dict[str, Any]) -> None:
    first, second = cached_builds["runs"]["first"], cached_builds["runs"]["second"]
    assert _cached(second) == CACHEABLE
    assert set(second.outcome.cached) >= {*CACHEABLE, "check"}
    assert [s for s, status in second.events if status == "done"] == ["calibrate", "validate", "package"]
    a, b = snapshot(first.out), snapshot(second.out)
    assert sorted(a) == sorted(b) and {n for n in a if a[n] != b[n]} == set()  # report, manifest and plot too
    assert "stage_seconds" not in json.loads(a["report.json"])  # no build time in the bundle


def test_changing_a_gate_limit_reconverts_nothing_and_the_gate_decides(cached_builds: dict[str, Any]) -> None:
    first, gate = cached_builds["runs"]["first"], cached_builds["runs"]["gate"]
    assert _cached(gate) == CACHEABLE and "check" in gate.outcome.cached
    assert not gate.outcome.passed
    failed = [g for g in gate.outcome.report["gates"] if not g["passed"]]
    assert [g["name"] for g in failed] == ["model_bytes"] and failed[0]["limit"] == 100
    assert (gate.out / "model.tflite").read_bytes() == (first.out / "model.tflite").read_bytes()


def test_a_changed_cached_file_is_detected_and_its_stage_runs_again(cached_builds: dict[str, Any]) -> None:
    first, damaged = cached_builds["runs"]["first"], cached_builds["runs"]["damaged"]
    assert _cached(damaged) == ["export", "quantize", "precision"]  # convert ran again; what follows it was the same
    assert any("convert entry changed" in n and "model.int8.tflite" in n for n in damaged.outcome.notes)
    assert snapshot(damaged.out) == snapshot(first.out)


def test_the_off_switch_turns_the_cache_off(tmp_path: Path, stub_stages: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.build import BuildOptions, build

    model_dir = make_model_dir(tmp_path)
    monkeypatch.delenv(OFF_ENV, raising=False)
    build(BuildOptions(model_dir=model_dir, target="android", out=tmp_path / "a", cache=tmp_path / "cache"))
    assert stub_stages.contexts[-1].cache is not None and stub_stages.contexts[-1].cache_base
    monkeypatch.setenv(OFF_ENV, "1")
    build(BuildOptions(model_dir=model_dir, target="android", out=tmp_path / "b", cache=tmp_path / "cache"))
    assert stub_stages.contexts[-1].cache is None
    monkeypatch.delenv(OFF_ENV)
    build(BuildOptions(model_dir=model_dir, target="android", out=tmp_path / "c", cache=None))  # --no-cache
    assert stub_stages.contexts[-1].cache is None


def test_the_keys_follow_what_decides_each_stage(tmp_path: Path, stub_stages: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeq.build import BuildOptions, build

    monkeypatch.delenv(OFF_ENV, raising=False)
    model_dir = make_model_dir(tmp_path)

    def keys(**options: Any) -> tuple[str | None, str | None, str | None, str | None]:
        out = tmp_path / f"out{len(stub_stages.contexts)}"
        build(BuildOptions(model_dir=model_dir, target="android", out=out, cache=tmp_path / "cache", **options))
        c = stub_stages.contexts[-1]
        return c.model_key, c.cache_base, c.calibration_key, c.eval_key

    base = keys()
    assert keys(gates={"output_cosine": 0.5}) == base  # a gate limit decides no artifact
    assert keys(runtimes=("litert",)) == base  # nor where it is validated (the measurements' keys say so)
    assert keys(precision="int4")[:2] == base[:2]  # the rungs are the precision stage's own input
    assert keys(io_dtype="int8")[1] != base[1]
    toml = model_dir / "edgeq.toml"
    toml.write_text(toml.read_text() + "\n[gates]\noutput_cosine = 0.5\n")
    assert keys() == base  # edgeq.toml's gates neither
    (model_dir / "notes.txt").write_text("a file of the model folder")
    changed = keys()
    assert changed[0] != base[0] and changed[2:] == base[2:]
    moved = tmp_path / "moved"
    model_dir.rename(moved)
    model_dir = moved
    assert keys() == changed  # the folder's place is not part of it


def test_cache_info_and_clear(cached_builds: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setenv("EDGEQ_CACHE_DIR", str(tmp_path))
    shutil.copytree(cached_builds["cache"], tmp_path / "stages")
    result = invoke_cli(["cache", "info", "--json"])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["path"] == str(tmp_path / "stages") and info["entries"] >= 7 and info["bytes"] > 0
    assert set(info["kinds"]) >= set(CACHEABLE)
    text = invoke_cli(["cache", "info"]).stdout
    assert "stage cache:" in text and "convert" in text and "--no-cache" in text
    result = invoke_cli(["cache", "clear"])
    assert result.exit_code == 0 and f"removed {info['entries']} entries" in result.stdout
    assert json.loads(invoke_cli(["cache", "info", "--json"]).stdout)["entries"] == 0


def test_the_command_line_passes_the_cache_or_none(tiny_report: dict[str, Any], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import edgeq.build
    from edgeq.build import BuildOutcome

    seen: list[Any] = []

    def fake(opts: Any, on_event: Any = None) -> BuildOutcome:
        seen.append(opts.cache)
        on_event("convert", 4, 7, "cached", 6.5)
        return BuildOutcome(tmp_path, tiny_report, {"convert": 0.01}, ("convert",), ("cache: a note",))

    monkeypatch.setattr(edgeq.build, "build", fake)
    monkeypatch.setenv("EDGEQ_CACHE_DIR", str(tmp_path / "c"))
    model_dir = make_model_dir(tmp_path)
    summary = tmp_path / "summary.md"
    result = invoke_cli(["build", str(model_dir), "--out", str(tmp_path / "o"), "--summary", str(summary)])
    assert result.exit_code == 0 and seen[-1] == tmp_path / "c" / "stages"
    assert "convert reused from the stage cache (it took 6.5 s)" in result.stderr and "cache: a note" in result.stderr
    assert "convert 0.0 (cached)" in summary.read_text()
    invoke_cli(["build", str(model_dir), "--out", str(tmp_path / "o"), "--no-cache"])
    assert seen[-1] is None
