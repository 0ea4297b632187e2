"""Property-based tests (hypothesis) of the readers of untrusted files: edgeq.toml, model.json and
manifest.json, generated at random, mutated from valid ones, or as raw bytes (issue 11).

The promise each test checks, for any input:

* a reader returns or raises one of edgeq's own errors (``EdgeqError``): any other exception fails;
* the refusal is one line: ``str(err)`` holds no control, format or line-separator character (no
  newline, no ESC), nor anything of the canary files outside the folder;
* the command line exits 2 with exactly one line on stderr, starting with "error: " (never exit 3 or a
  traceback), and writes nothing (``--out`` not created);
* nothing outside the folder is opened: a symlink in the folder points at a FIFO outside it, and
  every read is bounded by a timer, so a reader that follows the link blocks and fails.

One valid folder per reader is built per module; each example rewrites only the file under test.
Runs are reproducible (derandomize), keep no example database and write nothing in the repository.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import itertools
import json
import math
import os
import signal
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from conftest import CLASS_NAMES, INPUT, MODEL_PY, OUTPUT, default_config, invoke_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from edgeq.errors import EdgeqError

# No example database (settings below), and Hypothesis' own caches outside the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "edgeq-hypothesis")


# EDGEQ_PROPERTY_SCALE=10 runs ten times the examples (a deeper search, still reproducible).
SCALE = float(os.environ.get("EDGEQ_PROPERTY_SCALE", "1"))


def _settings(examples: int) -> settings:
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


CANARY = "CANARY-outside-the-folder-7f3a"
UNSAFE = ("Cc", "Cf", "Zl", "Zp", "Cs")  # controls (newline, ESC), format (bidi), line separators, surrogates
BLOCK_SECONDS = 20  # one reader call; the canary FIFO would block forever


# --------------------------------------------------------------------------------------------
# The promises.


@contextlib.contextmanager
def bounded(seconds: float = BLOCK_SECONDS) -> Iterator[None]:
    """A call that blocks (a FIFO opened for reading) raises TimeoutError instead of hanging."""

    def on_alarm(*_: Any) -> None:
        raise TimeoutError(f"a reader blocked for {seconds} s: it opened a FIFO (the canary outside the folder?)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def rewrite(path: Path, data: bytes | str) -> None:
    """The file under test, written anew: unlinked first (truncating a file in place costs ms on ext4)."""
    path.unlink(missing_ok=True)
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)


def assert_one_line(message: str) -> None:
    assert message.strip(), "an empty message"
    bad = sorted({f"U+{ord(c):04X}" for c in message if unicodedata.category(c) in UNSAFE})
    assert not bad, f"message holds control/format characters {bad}: {message[:300]!r}"
    assert CANARY not in message, f"a file outside the folder was read: {message[:300]!r}"


def refusal(call: Callable[[], Any]) -> tuple[Any, EdgeqError | None]:
    """(result, None) or (None, the EdgeqError); any other exception propagates and fails the test."""
    with bounded():
        try:
            return call(), None
        except EdgeqError as e:
            assert_one_line(str(e))
            return None, e


def cli(args: list[str]) -> Any:
    with bounded():
        result = invoke_cli(args)
    text = result.stdout + result.stderr
    assert isinstance(result.exception, SystemExit | type(None)), (result.exception, result.stderr[-2000:])
    assert result.exit_code != 3 and "Traceback" not in text, (result.exit_code, result.stderr[-2000:])
    assert CANARY not in text
    return result


def assert_cli_refusal(result: Any) -> None:
    """Exit 2, nothing on stdout, stderr exactly one line 'error: ...' without control characters."""
    assert result.exit_code == 2, (result.exit_code, result.stdout[-500:], result.stderr[-2000:])
    assert result.stdout == ""
    err = result.stderr
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err[:2000]
    assert_one_line(err[:-1])


# --------------------------------------------------------------------------------------------
# Hostile strings and the folder entries they may name.

HOSTILE_NAMES = [
    "", " ", ".", "..", "./", "/", "//", "../x", "../../../../etc/passwd", "/etc/passwd", "/proc/self/environ",
    "/dev/zero", "/dev/stdin", "a/../../b", "data/../../model/labels.txt", "~/.ssh/id_rsa", "C:\\Windows\\win.ini",
    "C:x", "\\\\server\\share\\x", "..\\..\\x", "data\\calibration", "labels.txt/", "./labels.txt", "labels.txt\0.png",
    "x\0", "\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "name\nerror: forged second line", "name\r", "tab\tname", "\u202eevil",
    "\u2028line", "\u200b", "\x7f", "\x9b31m", "%s%n%x", "{name}", "$HOME", "`id`", "'; rm -rf /", "a" * 5000,
    "/" * 300, "é" * 200, "🙂" * 50, "link_out", "link_txt", "link_dir", "link_dir/canary.fifo", "link_dir/canary.txt",
    "fifo", "sub", "sub/", "data", "data/eval", "labels.txt", "model.json", "manifest.json", "edgeq.toml",
]


def _add_hostile_entries(folder: Path, outside: Path) -> None:
    """A FIFO in the folder, symlinks out of it (to the canary FIFO, the canary file, the folder
    above), and a sub-folder: names the hostile strings above point at."""
    os.mkfifo(folder / "fifo")
    (folder / "link_out").symlink_to(outside / "canary.fifo")
    (folder / "link_txt").symlink_to(outside / "canary.txt")
    (folder / "link_dir").symlink_to(outside, target_is_directory=True)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "x.bin").write_bytes(b"x")


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding every test folder, and the canaries: a FIFO (reading it blocks) and a file."""
    root = tmp_path_factory.mktemp("reader_properties")
    os.mkfifo(root / "canary.fifo")
    (root / "canary.txt").write_text(CANARY + "\n", encoding="utf-8")
    return root


def test_the_canary_fifo_blocks_and_the_timer_ends_it(outside: Path) -> None:
    with pytest.raises(TimeoutError), bounded(0.3):
        (outside / "canary.fifo").read_bytes()


# --------------------------------------------------------------------------------------------
# Documents as Python values, and mutations of them. Deep nesting is text (a placeholder replaced
# after rendering): a renderer would recurse as deep as the document.

DEEP = "@@deep@@"


class Raw:
    """A value written as it is (TOML: dates, huge integers, long arrays)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


Path_ = tuple[Any, ...]


def _paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """The path (keys and indices) of every value below ``node``."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield (*prefix, k)
        yield from _paths(v, (*prefix, k))


def _containers(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """The path of every table/object (the root included): where a key can be added."""
    if isinstance(node, dict):
        yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield from _containers(v, (*prefix, k))


def _at(doc: Any, path: Path_) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def _scalars() -> st.SearchStrategy[Any]:
    """Any scalar, extreme numbers and hostile names more often than chance would draw them."""
    ints = st.integers() | st.sampled_from([-1, 0, 1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
                                            10**40, 10**400])
    floats = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 99.9999])
    text = st.text(max_size=30) | st.sampled_from(HOSTILE_NAMES)
    return st.one_of(st.booleans(), ints, floats, text)


def _values(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.text(max_size=12) | st.sampled_from(HOSTILE_NAMES[:40])
    return st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=4),
                        max_leaves=12)


NUMBERS = [-1, 0, 1, 7, 2**31 - 1, 2**31, 2**40, 2**63, 2**64, -(2**63) - 1, 10**400, -(10**400), 0.5, 1e308, -0.0,
           5e-324, math.nan, math.inf, -math.inf, True, False, "1", [1]]
LISTS = [[], [[]], [{}], [-1], [0], [10**400], [2**31, 2**31], [1.5, 2], ["a", 1], [[1, 2], [3]], [1] * 70_000]
TABLES = [{}, {"": 1}, {"\x1b[2J": 1}, {"a": {"b": {"c": {}}}}]


@dataclass(frozen=True)
class Format:
    """What the mutations of one kind of file draw from: any value, extreme numbers, the names the
    document and its folder use, odd lists and tables, and how deep to nest."""

    values: st.SearchStrategy[Any]
    numbers: list[Any]
    names: list[str]
    deep_sizes: list[int]
    lists: list[Any] = field(default_factory=lambda: LISTS)
    tables: list[Any] = field(default_factory=lambda: TABLES)

    def extreme(self, value: Any) -> st.SearchStrategy[Any]:
        """A value of the same kind as ``value`` (a number, a name, a list, a table) but extreme."""
        if isinstance(value, str):
            return st.sampled_from(self.names) | st.sampled_from(HOSTILE_NAMES)
        if isinstance(value, list):
            return st.sampled_from(self.lists)
        if isinstance(value, dict):
            return st.sampled_from(self.tables)
        return st.sampled_from(self.numbers)


def fresh(value: Any) -> Any:
    """A copy of a drawn value: a later mutation must not change the strategies' own lists and tables."""
    return copy.deepcopy(value)


# The kinds of mutation, the type-aware ones drawn more often (they reach deepest).
OPS = ["extreme"] * 4 + ["name"] * 2 + ["drop", "replace", "unknown", "wrap", "deep"]


@st.composite
def mutated(draw: st.DrawFn, base: Any, fmt: Format, max_steps: int = 3) -> tuple[Any, int | None, str | None]:
    """``base`` with 1..max_steps mutations: a value replaced by an extreme one of its kind or by a
    name (a hostile one, or one the file uses elsewhere), a key dropped, a value replaced by any
    value, an unknown key added, a value wrapped in a list or table, or nested deep.
    Returns (document, deep nesting size or None, deep kind)."""
    doc = copy.deepcopy(base)
    deep: int | None = None
    kind: str | None = None
    for _ in range(draw(st.integers(1, max_steps))):
        op = draw(st.sampled_from(OPS))
        if op == "unknown":
            where = _at(doc, draw(st.sampled_from(list(_containers(doc)))))
            key = draw(st.sampled_from(HOSTILE_NAMES + fmt.names) | st.text(max_size=12))
            where[key] = fresh(draw(_values(fmt.values)))
            continue
        paths = list(_paths(doc))
        if op == "name":
            paths = [p for p in paths if isinstance(_at(doc, p), str)] or paths
        if not paths:
            continue
        path = draw(st.sampled_from(paths))
        parent, key = _at(doc, path[:-1]), path[-1]
        if op == "extreme":
            parent[key] = fresh(draw(fmt.extreme(parent[key])))
        elif op == "name":
            parent[key] = draw(st.sampled_from(fmt.names) | st.sampled_from(HOSTILE_NAMES))
        elif op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = fresh(draw(_values(fmt.values)))
        elif op == "wrap":
            parent[key] = [parent[key]] if draw(st.booleans()) else {"x": parent[key]}
        else:
            parent[key] = DEEP
            deep = draw(st.sampled_from(fmt.deep_sizes))
            kind = draw(st.sampled_from(["array", "table"]))
    return doc, deep, kind


# --------------------------------------------------------------------------------------------
# edgeq.toml


def _toml_value(v: Any) -> str:
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)  # nan, inf, -inf are TOML too
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string (\uXXXX escapes)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {v!r}")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(doc: dict[str, Any], deep: int | None = None, kind: str | None = None) -> str:
    """Top-level tables as [tables] and [[arrays of tables]] (headers quoted), the rest inline."""
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)
             and not _is_table_array(v)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{json.dumps(k)}]"] + [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{json.dumps(k)}]]"] + [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in item.items()]
    text = "\n".join(lines) + "\n"
    if deep is not None:
        nested = "[" * deep + "]" * deep if kind == "array" else "{a = " * deep + "1" + "}" * deep
        text = text.replace(json.dumps(DEEP), nested)
    return text


LENGTH = 8


def translation_config() -> dict[str, Any]:
    """tests/tiny_translator.py's edgeq.toml (without training the model: load_model_spec does not read it)."""
    ids = {"shape": [1, LENGTH], "dtype": "int32"}
    return {
        "model": {"name": "tiny-translator", "format": "pytorch", "file": "model.py", "class": "TinyTranslator",
                  "weights": "weights.safetensors", "init_args": {"vocab_size": 24, "d_model": 16, "max_len": LENGTH}},
        "graphs": [
            {"name": "encoder", "method": "encode", "inputs": [{"name": "src_ids", **ids}], "outputs": [{"name": "memory"}]},
            {"name": "decoder", "method": "decode",
             "inputs": [{"name": "tgt_ids", **ids},
                        {"name": "memory", "shape": [1, LENGTH, 16], "dtype": "float32", "layout": "NTC"},
                        {"name": "src_ids", **ids}],
             "outputs": [{"name": "logits"}]},
        ],
        "task": {"kind": "translation", "tokenizer": "tokenizer.model"},
        "data": {"calibration": "data/calibration", "eval": "data/eval", "calibration_samples": 4},
        "quantization": {"method": "percentile", "percentile": 99.9, "allow_float_ops": ["SIN"]},
        "gates": {"bleu_drop": 5.0},
        "target": {"io_dtype": "float32"},
    }


def _onnx_config() -> dict[str, Any]:
    cfg = default_config("onnx")
    cfg["gates"] = {"accuracy_drop": 1, "model_bytes": 100000}
    return cfg


def _onnx_bare_config() -> dict[str, Any]:
    """An ONNX model whose inputs come from the file (no [[inputs]])."""
    return {"model": {"name": "bare", "format": "onnx", "file": "model.onnx"}, "outputs": [{"name": OUTPUT}],
            "task": {"kind": "generic"}, "data": {"calibration": "data/calibration", "eval": "data/eval"}}


BASE_CONFIGS = {
    "pytorch": default_config("pytorch"),
    "onnx": _onnx_config(),
    "onnx-bare": _onnx_bare_config(),
    "translation": translation_config(),
}
CONFIG_NAMES = sorted({k for cfg in BASE_CONFIGS.values() for p in _paths(cfg) for k in p if isinstance(k, str)}
                      | {"graphs", "value", "method", "subset_seed", "max_unpacked_bytes", "max_unpack_ratio",
                         "per_channel", "io_dtype", "tokenizer", "encoder", "decoder", "labels", "output",
                         "model.py", "model.onnx", "weights.safetensors", "tokenizer.model", "keras", "saved_model",
                         "onnx", "pytorch", "translation", "classification", "generic", "NCHW", "NHWC", "int32",
                         "float32", "entropy", "percentile", "SIN", "CUMSUM", "bleu_drop", "top1_agreement"})

TOML_VALUES = _scalars() | st.sampled_from([
    Raw("1" * 5000), Raw("-" + "9" * 4400), Raw("1979-05-27T07:32:00Z"), Raw("1979-05-27"), Raw("07:32:00"),
    Raw("0x7fffffffffffffff"), Raw("0o777"), Raw("0b1"), Raw("+inf"), Raw("-nan"), Raw("1e999"),
    Raw("[" + "1, " * 70000 + "]"), Raw("[" + "[1, 2], [3], " * 10 + "]"), Raw("[" + "[" * 9 + "1" + "]" * 9 + "]"),
    [], {}, [[]], [{}], [1, "a"], [1, [2, [3]]], [[1, 2], [3, 4]], [True, 2.5],
])


TOML_FORMAT = Format(TOML_VALUES, [*NUMBERS, Raw("1" * 5000), Raw("1979-05-27"), Raw("07:32:00")], CONFIG_NAMES,
                     [65, 300, 5000])


@functools.lru_cache(maxsize=1)
def tokenizer_bytes() -> bytes:
    from tiny_translator import corpus_lines, train_tokenizer

    return train_tokenizer(corpus_lines())


def tiny_onnx() -> bytes:
    """A small ONNX model, input 'image' [1, 3, 8, 8] -> 'logits' [1, 3], made without torch."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", [INPUT], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Slice", ["flat", "starts", "ends", "axes"], [OUTPUT])],
        "tiny",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor("starts", TensorProto.INT64, [1], [0]), helper.make_tensor("ends", TensorProto.INT64, [1], [3]),
         helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture(scope="module")
def model_dir(outside: Path) -> Path:
    """One valid model folder for every base config (each file load_model_spec checks), and hostile entries."""
    root = outside / "model"
    root.mkdir()
    (root / "model.py").write_text(MODEL_PY, encoding="utf-8")
    (root / "weights.safetensors").write_bytes(b"load_model_spec checks that the weights exist, not what they hold")
    (root / "model.onnx").write_bytes(tiny_onnx())
    (root / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    (root / "tokenizer.model").write_bytes(tokenizer_bytes())
    for role in ("calibration", "eval"):
        folder = root / "data" / role
        folder.mkdir(parents=True)
        np.save(folder / f"{INPUT}.npy", np.zeros((2, 3, 8, 8), np.float32))
        (folder / "source.txt").write_text("red cat\n", encoding="utf-8")
    _add_hostile_entries(root, outside)
    return root


def load_toml_text(model_dir: Path, data: bytes | str) -> tuple[Any, EdgeqError | None]:
    from edgeq.config import load_model_spec

    rewrite(model_dir / "edgeq.toml", data)
    return refusal(lambda: load_model_spec(model_dir))


@pytest.mark.parametrize("name", sorted(BASE_CONFIGS))
def test_every_base_config_loads(model_dir: Path, name: str) -> None:
    """The mutations start from valid documents (so they reach past the first check)."""
    spec, error = load_toml_text(model_dir, to_toml(BASE_CONFIGS[name]))
    assert error is None and spec is not None, error


TOML_KEYS = st.sampled_from(CONFIG_NAMES) | st.text(max_size=12)
RANDOM_TOML = st.dictionaries(TOML_KEYS, _values(TOML_VALUES), max_size=7) | st.fixed_dictionaries(
    {k: _values(TOML_VALUES) | st.dictionaries(TOML_KEYS, _values(TOML_VALUES), max_size=6)
     for k in ("model", "task", "data")},
    optional={"inputs": st.lists(st.dictionaries(TOML_KEYS, _values(TOML_VALUES), max_size=5), max_size=3),
              "quantization": st.dictionaries(TOML_KEYS, _values(TOML_VALUES), max_size=4)},
)


@_settings(150)
@given(doc=RANDOM_TOML)
def test_random_toml_documents(model_dir: Path, doc: dict[str, Any]) -> None:
    load_toml_text(model_dir, to_toml(doc))


@st.composite
def mutated_toml(draw: st.DrawFn) -> str:
    base = BASE_CONFIGS[draw(st.sampled_from(sorted(BASE_CONFIGS)))]
    doc, deep, kind = draw(mutated(base, TOML_FORMAT))
    return to_toml(doc, deep, kind)


@_settings(250)
@given(text=mutated_toml())
def test_mutated_edgeq_toml(model_dir: Path, text: str) -> None:
    load_toml_text(model_dir, text)


@st.composite
def toml_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a valid edgeq.toml with bytes flipped, cut, or in another encoding."""
    valid = to_toml(BASE_CONFIGS[draw(st.sampled_from(sorted(BASE_CONFIGS)))]).encode("utf-8")
    how = draw(st.sampled_from(["random", "flip", "cut", "bom", "utf16", "insert"]))
    if how == "random":
        return draw(st.binary(max_size=300))
    if how == "flip":
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "cut":
        return valid[: draw(st.integers(0, len(valid)))]
    if how == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xef\xbb\xbf\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + valid
    if how == "utf16":
        return valid.decode("utf-8").encode(draw(st.sampled_from(["utf-16", "utf-16-be", "utf-32", "latin-1"])))
    at = draw(st.integers(0, len(valid)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\x1b[2J", b"\r", b"\xe2\x80\xae",
                                 b"\xf4\x90\x80\x80", b"\xc0\xaf"]) | st.binary(min_size=1, max_size=8))
    return valid[:at] + junk + valid[at:]


@_settings(120)
@given(data=toml_bytes())
def test_edgeq_toml_as_bytes(model_dir: Path, data: bytes) -> None:
    load_toml_text(model_dir, data)


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 100_000 + "]" * 100_000,
        "x = " + "{a = " * 3000 + "1" + "}" * 3000,
        "[" + ".".join(["a"] * 2000) + "]\n",
        "x = " + "1" * 5000,
        "x = 1\n" * 200_000,  # over 1 MiB
        "[model]\nname = '" + "a" * (1 << 20) + "'\n",
    ],
    ids=["arrays-100k-deep", "inline-tables-3k-deep", "dotted-header-2k-deep", "int-5000-digits", "over-1MiB",
         "long-string"],
)
def test_extreme_edgeq_toml(model_dir: Path, text: str) -> None:
    _, error = load_toml_text(model_dir, text)
    assert error is not None


@st.composite
def invalid_toml(draw: st.DrawFn) -> str:
    """A mutated edgeq.toml that can never be valid: an unknown top-level key comes first."""
    return "zz_not_an_edgeq_key = 1\n" + draw(mutated_toml())


@_settings(15)
@given(text=invalid_toml())
def test_edgeq_build_refuses_a_mutated_edgeq_toml(model_dir: Path, outside: Path, text: str) -> None:
    rewrite(model_dir / "edgeq.toml", text)
    out = outside / "dist" / "never-written"
    with mock.patch("edgeq.build.run_stages", side_effect=AssertionError("a build ran")):
        result = cli(["build", str(model_dir), "--out", str(out)])
    assert_cli_refusal(result)
    assert not out.exists() and not (outside / "dist").exists()


# --------------------------------------------------------------------------------------------
# model.json: a translation bundle made of hand-written .tflite files (no converter), the tokenizer
# of tests/tiny_translator.py.


def _tflite(inputs: list[tuple[str, str, list[int]]], ops: list[tuple[str, list[str], tuple[str, str, list[int]]]],
            outputs: list[str], consts: dict[str, np.ndarray]) -> bytes:
    """A .tflite with one subgraph and a 'serving_default' signature: ``inputs`` (name, dtype, shape),
    constant tensors, ``ops`` (op name, input names, output (name, dtype, shape)) in order."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    types = {"int32": fb.TensorType.INT32, "float32": fb.TensorType.FLOAT32}
    model = fb.ModelT()
    model.version = 3
    model.buffers = [fb.BufferT()]
    model.operatorCodes = []
    sg = fb.SubGraphT()
    sg.tensors, sg.operators = [], []
    index: dict[str, int] = {}

    def tensor(name: str, dtype: str, shape: list[int], data: np.ndarray | None = None) -> None:
        t = fb.TensorT()
        t.name, t.type, t.shape, t.buffer = name.encode(), types[dtype], list(shape), 0
        if data is not None:
            buf = fb.BufferT()
            buf.data = list(np.ascontiguousarray(data).tobytes())
            model.buffers.append(buf)
            t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        index[name] = len(sg.tensors) - 1

    for name, dtype, shape in inputs:
        tensor(name, dtype, shape)
    for name, value in consts.items():
        tensor(name, "int32" if value.dtype == np.int32 else "float32", list(value.shape), value)
    codes: dict[str, int] = {}
    for op_name, op_inputs, (out_name, out_dtype, out_shape) in ops:
        tensor(out_name, out_dtype, out_shape)
        if op_name not in codes:
            code = fb.OperatorCodeT()
            code.builtinCode = getattr(fb.BuiltinOperator, op_name)
            code.deprecatedBuiltinCode = min(code.builtinCode, fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            code.version = 1
            model.operatorCodes.append(code)
            codes[op_name] = len(model.operatorCodes) - 1
        op = fb.OperatorT()
        op.opcodeIndex = codes[op_name]
        op.inputs, op.outputs = [index[n] for n in op_inputs], [index[out_name]]
        sg.operators.append(op)
    sg.inputs, sg.outputs = [index[n] for n, _, _ in inputs], [index[n] for n in outputs]

    def tensor_map(name: str) -> Any:
        m = fb.TensorMapT()
        m.name, m.tensorIndex = name.encode(), index[name]
        return m

    sig = fb.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = b"serving_default", 0
    sig.inputs, sig.outputs = [tensor_map(n) for n, _, _ in inputs], [tensor_map(n) for n in outputs]
    model.subgraphs, model.signatureDefs = [sg], [sig]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def encoder_tflite() -> bytes:
    """src_ids int32 [1, 8] -> memory float32 [1, 8] (a CAST)."""
    return _tflite([("src_ids", "int32", [1, LENGTH])], [("CAST", ["src_ids"], ("memory", "float32", [1, LENGTH]))],
                   ["memory"], {})


def decoder_tflite(vocab: int, token: int) -> bytes:
    """(tgt_ids, memory, src_ids) -> logits float32 [1, 8, vocab] whose argmax is always ``token``."""
    bias = np.full((1, 1, vocab), -1.0, np.float32)
    bias[0, 0, token] = 1.0
    return _tflite(
        [("tgt_ids", "int32", [1, LENGTH]), ("memory", "float32", [1, LENGTH]), ("src_ids", "int32", [1, LENGTH])],
        [("RESHAPE", ["memory", "shape3"], ("memory3", "float32", [1, LENGTH, 1])),
         ("MUL", ["memory3", "zero"], ("zeros", "float32", [1, LENGTH, 1])),
         ("ADD", ["zeros", "bias"], ("logits", "float32", [1, LENGTH, vocab]))],
        ["logits"],
        {"shape3": np.array([1, LENGTH, 1], np.int32), "zero": np.zeros((1, 1, 1), np.float32), "bias": bias},
    )


VOCAB = 40  # logits of decoder.tflite; the tokenizer has fewer pieces (24)
BUNDLE_FILES = ["encoder.tflite", "decoder.tflite", "decoder_wide.tflite", "garbage.tflite", "empty.tflite",
                "tokenizer.model", "model.json"]


def _tensor(name: str, dtype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "tensor": name, "shape": shape, "dtype": dtype, "layout": "", "quantization": None,
            "onnx_shape": shape, "onnx_axes": list(range(len(shape)))}


MODEL_JSON: dict[str, Any] = {
    "name": "tiny-translator", "format": "tflite", "precision": "int8", "io_dtype": "float32",
    "graphs": {
        "encoder": {"file": "encoder.tflite", "signature": "serving_default",
                    "inputs": [_tensor("src_ids", "int32", [1, LENGTH])],
                    "outputs": [_tensor("memory", "float32", [1, LENGTH])], "frozen_inputs": []},
        "decoder": {"file": "decoder.tflite", "signature": "serving_default",
                    "inputs": [_tensor("tgt_ids", "int32", [1, LENGTH]), _tensor("memory", "float32", [1, LENGTH]),
                               _tensor("src_ids", "int32", [1, LENGTH])],
                    "outputs": [_tensor("logits", "float32", [1, LENGTH, VOCAB])], "frozen_inputs": []},
    },
    "task": {
        "kind": "translation", "tokenizer": "tokenizer.model", "tokenizer_type": "sentencepiece",
        "bos_id": 1, "eos_id": 2, "pad_id": 0, "source_length": LENGTH, "target_length": LENGTH,
        "encoder": {"graph": "encoder", "input": "src_ids", "output": "memory"},
        "decoder": {"graph": "decoder", "target_input": "tgt_ids", "memory_input": "memory", "source_input": "src_ids",
                    "output": "logits"},
        "loop": ["source row = ...", "memory = encoder(source row)"],
    },
    "runtime": {"name": "LiteRT (TFLite runtime)", "threads": 1, "note": "..."},
}
MODEL_JSON_NAMES = sorted({k for p in _paths(MODEL_JSON) for k in p if isinstance(k, str)}
                          | set(BUNDLE_FILES) | {"encoder", "decoder", "model", "src_ids", "tgt_ids", "memory", "logits",
                                                 "serving_default", "int8", "uint8", "int16", "int32", "int64",
                                                 "float16", "float32", "bool", "object", "<U1", "V8", "datetime64",
                                                 "classification", "translation", "scale", "zero_point", "graphs"})
QUANTIZATIONS = [
    {"scale": 0, "zero_point": 0}, {"scale": 0.5, "zero_point": 2**40}, {"scale": 10**400, "zero_point": 0},
    {"scale": 1.0, "zero_point": 10**400}, {"scale": [], "zero_point": []}, {"scale": [1.0, 2.0], "zero_point": [0]},
    {"scale": ["a"], "zero_point": [0]}, {"scale": [[1]], "zero_point": [[[0]]]}, {"scale": 1e-45, "zero_point": -1},
    {"scale": math.nan, "zero_point": math.inf}, {"scale": 0.1, "zero_point": 3}, {"scale": [0.1], "zero_point": [1]},
]
QUANTIZED = ["int8", "uint8", "int16"]
JSON_VALUES = _scalars() | st.none() | st.sampled_from([
    "\ud800", "\udcff", "a\ud800b", [], {}, [[]], [{}], [1, "a"], [0, 2**31], [-1, 8], [1, 8, 1, 1, 1], *QUANTIZATIONS,
]) | st.integers(-3, 70) | st.lists(st.integers(-2, 2**31), max_size=4)
JSON_NUMBERS = [*NUMBERS, None, "�", *QUANTIZATIONS]
MODEL_JSON_FORMAT = Format(JSON_VALUES, JSON_NUMBERS, [*MODEL_JSON_NAMES, "�", "a�b"], [65, 1000, 100_000])


def _json_text(doc: Any, deep: int | None = None, kind: str | None = None) -> str:
    text = json.dumps(doc)
    if deep is not None:
        nested = "[" * deep + "]" * deep if kind == "array" else '{"a": ' * deep + "1" + "}" * deep
        text = text.replace(json.dumps(DEEP), nested)
    return text


@pytest.fixture(scope="module")
def bundle_dir(outside: Path) -> Path:
    """A translation bundle that `edgeq translate` runs (encoder, decoder, tokenizer), with extra
    files a mutated model.json may name: a decoder whose logits are wider than the vocabulary, a
    garbage and an empty .tflite, a FIFO and symlinks out of the bundle."""
    root = outside / "bundle"
    root.mkdir()
    (root / "encoder.tflite").write_bytes(encoder_tflite())
    (root / "decoder.tflite").write_bytes(decoder_tflite(VOCAB, 5))
    (root / "decoder_wide.tflite").write_bytes(decoder_tflite(100, 99))  # token 99: not in the tokenizer
    (root / "garbage.tflite").write_bytes(bytes(range(256)) * 8)
    (root / "empty.tflite").write_bytes(b"")
    (root / "tokenizer.model").write_bytes(tokenizer_bytes())
    (root / "model.json").write_text(json.dumps(MODEL_JSON), encoding="utf-8")
    _add_hostile_entries(root, outside)
    return root


def open_and_translate(bundle_dir: Path, text: str) -> tuple[Any, EdgeqError | None]:
    from edgeq.bundle.reader import Bundle, translate

    rewrite(bundle_dir / "model.json", text)
    bundle, error = refusal(lambda: Bundle.open(bundle_dir))
    if error is not None:
        return None, error
    return refusal(lambda: translate(bundle, ["hello", "red cat"]))


def test_the_base_bundle_translates(bundle_dir: Path) -> None:
    """The mutations start from a bundle that runs: 'hello' decodes to word 5 seven times."""
    out, error = open_and_translate(bundle_dir, json.dumps(MODEL_JSON))
    assert error is None, error
    assert len(out) == 2 and all(len(line.split()) == LENGTH - 1 for line in out)


@st.composite
def mutated_model_json(draw: st.DrawFn) -> str:
    """MODEL_JSON mutated; often with one tensor made quantized first (dtype int8/uint8/int16, odd
    scale and zero point), the path where numbers from model.json reach numpy."""
    base = copy.deepcopy(MODEL_JSON)
    if draw(st.booleans()):
        graph = draw(st.sampled_from(["encoder", "decoder"]))
        side = draw(st.sampled_from(["inputs", "outputs"]))
        tensor = draw(st.sampled_from(base["graphs"][graph][side]))
        tensor["dtype"] = draw(st.sampled_from(QUANTIZED))
        tensor["quantization"] = fresh(draw(st.sampled_from(QUANTIZATIONS)))
    doc, deep, kind = draw(mutated(base, MODEL_JSON_FORMAT, max_steps=2))
    return _json_text(doc, deep, kind)


@_settings(180)
@given(text=mutated_model_json())
def test_mutated_model_json(bundle_dir: Path, text: str) -> None:
    open_and_translate(bundle_dir, text)


@_settings(60)
@given(doc=_values(JSON_VALUES) | st.fixed_dictionaries(
    {"graphs": st.dictionaries(st.sampled_from(["encoder", "decoder", "model"]) | st.text(max_size=5),
                               _values(JSON_VALUES), max_size=3),
     "task": st.dictionaries(st.sampled_from(MODEL_JSON_NAMES), _values(JSON_VALUES), max_size=6)}))
def test_random_model_json(bundle_dir: Path, doc: Any) -> None:
    open_and_translate(bundle_dir, json.dumps(doc))


@_settings(60)
@given(data=st.binary(max_size=200) | st.builds(lambda b, at, junk: b[:at] + junk + b[at:],
                                                 st.just(json.dumps(MODEL_JSON).encode()), st.integers(0, 3000),
                                                 st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf",
                                                                  b"}", b"\\", b'"', b"NaN"])))
def test_model_json_as_bytes(bundle_dir: Path, data: bytes) -> None:
    from edgeq.bundle.reader import Bundle, translate

    rewrite(bundle_dir / "model.json", data)
    bundle, error = refusal(lambda: Bundle.open(bundle_dir))
    if error is None:
        refusal(lambda: translate(bundle, ["hello"]))


@_settings(15)
@given(text=mutated_model_json())
def test_edgeq_translate_never_crashes(bundle_dir: Path, text: str) -> None:
    rewrite(bundle_dir / "model.json", text)
    result = cli(["translate", str(bundle_dir), "hello"])
    if result.exit_code != 0:
        assert_cli_refusal(result)
    else:
        assert result.stdout.count("\n") == 1 and result.stderr == ""  # one translation, maybe empty (EOS first)
        assert not [c for c in result.stdout[:-1] if unicodedata.category(c) in UNSAFE], result.stdout


# --------------------------------------------------------------------------------------------
# manifest.json


BUNDLE_CONTENT = {
    "model.tflite": b"TFL3 model",
    "model.json": b'{"name": "tiny"}\n',
    "labels.txt": b"circle\nsquare\n",
    "report.json": b'{"passed": true}\n',
    "nested/x.bin": b"\0\1\2",
}
MANIFEST: dict[str, Any] = {
    "generator": "edgeq", "edgeq_version": "0", "passed": True, "target": {"name": "android", "io_dtype": "float32"},
    "files": [{"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
              for rel, data in sorted(BUNDLE_CONTENT.items())],
    "source_model": {"format": "onnx", "files": [{"name": "model.onnx", "sha256": "0" * 64, "bytes": 1}]},
    "tools": {"numpy": "2"},
}
MANIFEST_NAMES = sorted({k for p in _paths(MANIFEST) for k in p if isinstance(k, str)} | set(BUNDLE_CONTENT)
                        | {"edgeq", "nested", "nested/", "./model.tflite", "nested//x.bin", "model.tflite/.",
                           "manifest.json", "./.", "./"})


@pytest.fixture(scope="module")
def bundles(outside: Path) -> dict[str, Path]:
    """Two bundles that MANIFEST describes: a clean one, and one that also holds a FIFO, symlinks out
    of it (to the canary FIFO and file, to the folder above) and a file whose name is not UTF-8."""
    out = {}
    for name in ("clean", "hostile"):
        root = outside / f"verify-{name}"
        for rel, data in BUNDLE_CONTENT.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        if name == "hostile":
            _add_hostile_entries(root, outside)
            (root / os.fsdecode(b"\xff\x1b[2J.bin")).write_bytes(b"y")
        out[name] = root
    return out


def run_verify(root: Path, text: str) -> tuple[Any, EdgeqError | None]:
    from edgeq.bundle.verify import verify

    rewrite(root / "manifest.json", text)
    return refusal(lambda: verify(root))


def test_the_clean_bundle_verifies(bundles: dict[str, Path]) -> None:
    result, error = run_verify(bundles["clean"], json.dumps(MANIFEST))
    assert error is None and result == ([], len(BUNDLE_CONTENT)), (error, result)


MANIFEST_FORMAT = Format(JSON_VALUES, [*NUMBERS, None, "�"], [*MANIFEST_NAMES, "�", "a�b", "nested/�"],
                         [65, 1000, 100_000])
HOSTILE_ENTRY = st.fixed_dictionaries({
    "path": st.sampled_from(HOSTILE_NAMES + MANIFEST_NAMES + ["\ud800", "a\udcffb", "nested/\ud800"])
    | st.text(max_size=20),
    "sha256": st.sampled_from(["0" * 64, ""]) | st.text(max_size=5),
    "bytes": st.sampled_from([0, 1, -1, 3, 10, 2**63, 10**30]),
})


@st.composite
def mutated_manifest(draw: st.DrawFn) -> str:
    """MANIFEST with hostile entries added, or mutated (a key dropped, retyped, nested deep...), or both."""
    doc = copy.deepcopy(MANIFEST)
    deep = kind = None
    added = draw(st.booleans())
    if added:
        doc["files"] += draw(st.lists(HOSTILE_ENTRY, min_size=1, max_size=3))
    if not added or draw(st.booleans()):
        doc, deep, kind = draw(mutated(doc, MANIFEST_FORMAT, max_steps=2))
    return _json_text(doc, deep, kind)


WHICH = st.sampled_from(["clean", "hostile"])


@_settings(200)
@given(text=mutated_manifest(), which=WHICH)
def test_mutated_manifest(bundles: dict[str, Path], text: str, which: str) -> None:
    result, error = run_verify(bundles[which], text)
    if error is None:
        findings, _ = result
        assert all(f.problem in ("changed", "missing", "extra", "not a regular file") for f in findings)


@_settings(60)
@given(doc=_values(JSON_VALUES) | st.fixed_dictionaries(
    {"generator": st.just("edgeq") | JSON_VALUES, "files": st.lists(HOSTILE_ENTRY | _values(JSON_VALUES), max_size=4)}),
       which=WHICH)
def test_random_manifest(bundles: dict[str, Path], doc: Any, which: str) -> None:
    run_verify(bundles[which], json.dumps(doc))


@_settings(50)
@given(data=st.binary(max_size=200), which=WHICH)
def test_manifest_as_bytes(bundles: dict[str, Path], data: bytes, which: str) -> None:
    from edgeq.bundle.verify import verify

    rewrite(bundles[which] / "manifest.json", data)
    refusal(lambda: verify(bundles[which]))


FINDING_LINE = ("changed: ", "missing: ", "extra: ", "not a regular file: ", "FAILED: ")


@_settings(20)
@given(text=mutated_manifest(), which=WHICH)
def test_edgeq_verify_never_crashes(bundles: dict[str, Path], text: str, which: str) -> None:
    root = bundles[which]
    rewrite(root / "manifest.json", text)
    result = cli(["verify", str(root)])
    if result.exit_code == 2:
        assert_cli_refusal(result)
    elif result.exit_code == 1:
        lines = result.stderr.split("\n")
        assert lines[-1] == "" and lines[-2].startswith("FAILED: "), result.stderr[-2000:]
        for line in lines[:-1]:
            assert line.startswith(FINDING_LINE), line
            assert_one_line(line)
    else:
        assert result.exit_code == 0 and result.stdout.startswith("OK: ") and result.stdout.count("\n") == 1


# --------------------------------------------------------------------------------------------
# The file itself is not a regular file: each reader, each kind.

_counter = itertools.count()


@pytest.mark.parametrize("kind", ["fifo", "link-to-canary-fifo", "link-to-canary-file", "folder", "dangling-link",
                                  "link-inside"])
@pytest.mark.parametrize("reader", ["edgeq.toml", "model.json", "manifest.json"])
def test_the_file_itself_is_not_a_regular_file(outside: Path, reader: str, kind: str) -> None:
    from edgeq.bundle.reader import Bundle
    from edgeq.bundle.verify import verify
    from edgeq.config import load_model_spec

    root = outside / f"special-{next(_counter)}"
    root.mkdir()
    target = root / reader
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "link-to-canary-fifo":
        target.symlink_to(outside / "canary.fifo")
    elif kind == "link-to-canary-file":
        target.symlink_to(outside / "canary.txt")
    elif kind == "folder":
        target.mkdir()
    elif kind == "dangling-link":
        target.symlink_to(root / "nowhere")
    else:
        (root / "real").write_text("{}", encoding="utf-8")
        target.symlink_to(root / "real")
    call = {"edgeq.toml": load_model_spec, "model.json": Bundle.open, "manifest.json": verify}[reader]
    _, error = refusal(lambda: call(root))
    assert error is not None
    command = {"edgeq.toml": ["build", str(root), "--out", str(root / "out")], "model.json": ["translate", str(root), "hi"],
               "manifest.json": ["verify", str(root)]}[reader]
    assert_cli_refusal(cli(command))
    assert not (root / "out").exists()


SWEEP_VALUES = [-1, 0, 2**31, 2**63, 10**400, -(10**400), math.nan, math.inf, 0.5, True, "1", [], {}, [10**400]]
SWEEP_NAMES = ["", "..", "/etc/passwd", "\x1b[2J", "a\nb", "link_out", "fifo", "sub", "a" * 5000, "x\0"]


def sweep(base: Any, names: list[Any], skip: tuple[str, ...] = ()) -> Iterator[Any]:
    """``base`` with one value replaced, for every value in it (but those under a key in ``skip``)
    and each of SWEEP_VALUES (and, for a string, each of ``names``): every single-value mutation of
    that kind, in order. Hypothesis draws a few of these; the sweep tries them all."""
    for path in _paths(base):
        if any(k in skip for k in path):
            continue
        for value in SWEEP_VALUES + (names if isinstance(_at(base, path), str) else []):
            doc = copy.deepcopy(base)
            _at(doc, path[:-1])[path[-1]] = value
            yield doc


@pytest.mark.parametrize("name", sorted(BASE_CONFIGS))
def test_every_value_of_edgeq_toml_made_extreme(model_dir: Path, name: str) -> None:
    for doc in sweep(BASE_CONFIGS[name], SWEEP_NAMES):
        load_toml_text(model_dir, to_toml(doc))


# What the bundle readers never read (text for the app): left out of the model.json sweep.
UNREAD = ("onnx_shape", "onnx_axes", "layout", "frozen_inputs", "loop", "tokenizer_type", "runtime", "name", "format",
          "io_dtype")


def test_every_value_of_model_json_made_extreme(bundle_dir: Path) -> None:
    for doc in sweep(MODEL_JSON, [*SWEEP_NAMES, "decoder_wide.tflite", "garbage.tflite", "empty.tflite", "�"],
                     UNREAD):
        open_and_translate(bundle_dir, json.dumps(doc))


def test_every_tensor_quantized_oddly(bundle_dir: Path) -> None:
    for graph, side in itertools.product(("encoder", "decoder"), ("inputs", "outputs")):
        for k in range(len(MODEL_JSON["graphs"][graph][side])):
            for dtype, q in itertools.product(QUANTIZED, QUANTIZATIONS):
                doc = copy.deepcopy(MODEL_JSON)
                doc["graphs"][graph][side][k].update(dtype=dtype, quantization=q)
                open_and_translate(bundle_dir, json.dumps(doc))


def test_every_value_of_manifest_made_extreme(bundles: dict[str, Path]) -> None:
    for doc in sweep(MANIFEST, [*SWEEP_NAMES, "�", ".", "./", "nested", "nested/", "link_dir/canary.txt"]):
        for root in bundles.values():
            run_verify(root, json.dumps(doc))
