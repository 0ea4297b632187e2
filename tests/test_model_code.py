"""A model is a program (issue 11): SavedModels are scanned for ops that are not math before TensorFlow
loads them (``edgeq.saved_model_ops``), and the export and convert children run with their writes
confined to the build folder (``edgeq.landlock``).

The SavedModels are made in code, in one child process (TensorFlow stays out of the test process):
a normal one, and hostile ones whose resource initializer writes a canary file when TensorFlow loads
them, whose serving function reads a file, runs Python (py_function) or writes a checkpoint.
Attacks on the checkpoint exception are edits of the normal file's protobuf."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    CLASS_NAMES,
    N_CALIBRATION,
    N_EVAL,
    invoke_cli,
    staging_leftovers,
    write_config,
)
from tf_models import SHAPE_NHWC

from edgeq import saved_model_ops
from edgeq.errors import ModelError
from edgeq.landlock import abi_version
from edgeq.saved_model_ops import ALLOWLIST, check_saved_model, parse_saved_model

HOST = ["--runtime", "litert"]
needs_landlock = pytest.mark.skipif(abi_version() == 0, reason="this kernel has no Landlock")

_BUILD = textwrap.dedent('''
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf

    root, canary = sys.argv[1], sys.argv[2]
    SIG = [tf.TensorSpec((1, 8, 8, 3), tf.float32, name="image")]

    class Canary(tf.saved_model.experimental.TrackableResource):
        """A resource whose initializer writes a file: TensorFlow runs it when the model loads."""
        def __init__(self, path):
            self.path = path
            super().__init__()
        def _create_resource(self):
            return tf.raw_ops.HashTableV2(key_dtype=tf.int64, value_dtype=tf.float32)
        def _initialize(self):
            tf.io.write_file(self.path, "written when the model loaded")

    class Net(tf.Module):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind
            self.w = tf.Variable(tf.random.stateless_normal((192, 4), seed=(0, 1)))
            if kind == "init_write":
                self.canary = Canary(canary)

        @tf.function
        def dump(self, x):  # a checkpoint op in a function that the serving function calls
            tf.raw_ops.SaveV2(prefix=canary, tensor_names=["x"], shape_and_slices=[""], tensors=[x])
            return x

        @tf.function(input_signature=SIG)
        def serve(self, image):
            logits = tf.matmul(tf.reshape(image, (1, 192)), self.w)
            if self.kind == "read_file":
                return {"logits": logits, "leak": tf.io.read_file(canary)}
            if self.kind == "py_function":
                logits = tf.py_function(lambda t: t, [logits], tf.float32)
            if self.kind == "save_in_serving":
                logits = self.dump(logits)
            return {"logits": logits}

    for kind in ("normal", "init_write", "read_file", "py_function", "save_in_serving"):
        net = Net(kind)
        tf.saved_model.save(net, f"{root}/{kind}", signatures={"serving_default": net.serve})
        if os.path.exists(canary):
            os.remove(canary)
        if kind == "init_write":  # the threat is real: loading this model writes the file
            tf.saved_model.load(f"{root}/{kind}")
            assert os.path.exists(canary)
            os.remove(canary)
''')


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of SavedModels by kind; the hostile ones aim at ``<folder>/../canary``."""
    root = tmp_path_factory.mktemp("saved_models")
    subprocess.run([sys.executable, "-c", _BUILD, str(root / "m"), str(root / "canary")], check=True,
                   capture_output=True, timeout=300)
    return root / "m"


def _canary(saved_models: Path) -> Path:
    return saved_models.parent / "canary"


def _model_dir(tmp_path: Path, saved: Path) -> Path:
    """A model folder around the SavedModel ``saved``, as tf_models.make_tf_dir writes one."""
    root = tmp_path / "model"
    shutil.copytree(saved, root / "saved")
    rng = np.random.default_rng(0)
    for name, n in (("calibration", N_CALIBRATION), ("eval", N_EVAL)):
        (root / "data" / name).mkdir(parents=True)
        np.save(root / "data" / name / "image.npy", rng.standard_normal((n, *SHAPE_NHWC[1:])).astype(np.float32))
    np.save(root / "data" / "eval" / "labels.npy", rng.integers(0, len(CLASS_NAMES), N_EVAL))
    (root / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    write_config(root, {
        "model": {"name": "tiny-saved-model", "format": "saved_model", "file": "saved"},
        "inputs": [{"name": "image", "shape": list(SHAPE_NHWC), "dtype": "float32", "layout": "NHWC"}],
        "task": {"kind": "classification", "output": "logits", "labels": "labels.txt"},
        "data": {"calibration": "data/calibration", "eval": "data/eval"},
    })
    return root


# --- the scan on SavedModels TensorFlow wrote ------------------------------------------------------------


def test_a_normal_saved_model_passes_without_importing_tensorflow(saved_models: Path) -> None:
    code = ("import sys; from pathlib import Path; from edgeq.saved_model_ops import check_saved_model; "
            f"check_saved_model(Path({str(saved_models / 'normal')!r}), False); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize(("kind", "function", "op"), [
    ("init_write", "function '__inference__initializer_", "op 'WriteFile' (node 'WriteFile')"),
    ("read_file", "function '__inference_serve_", "op 'ReadFile' (node 'ReadFile')"),
    ("py_function", "function '__inference_serve_", "op 'EagerPyFunc' (node 'EagerPyFunc')"),
    ("save_in_serving", "function '__inference_dump_", "op 'SaveV2' (node 'SaveV2'), a checkpoint op"),
])
def test_a_saved_model_running_file_or_python_ops_is_refused(saved_models: Path, tmp_path: Path, kind: str,
                                                             function: str, op: str) -> None:
    d = _model_dir(tmp_path, saved_models / kind)
    out = tmp_path / "dist" / "bundle"
    result = invoke_cli(["build", str(d), "--out", str(out), *HOST])
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: saved/saved_model.pb: {function}"), result.stderr
    assert op in lines[0] and lines[0].endswith("remove it, or pass --trust-model if you trust this file")
    assert not out.exists() and not out.parent.exists()
    assert staging_leftovers(tmp_path) == []
    assert not _canary(saved_models).exists()


@needs_landlock
def test_with_trust_model_the_initializer_runs_but_cannot_write_outside_the_build_folder(
        saved_models: Path, tmp_path: Path) -> None:
    d = _model_dir(tmp_path, saved_models / "init_write")
    out, keep = tmp_path / "out", tmp_path / "keep"
    result = invoke_cli(["build", str(d), "--out", str(out), "--keep-build", str(keep), "--trust-model", *HOST])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "converting saved to ONNX failed: PermissionDeniedError" in result.stderr
    assert not _canary(saved_models).exists()
    assert not out.exists() and staging_leftovers(tmp_path) == []
    child = json.loads((keep / "export.job.result.json").read_text(encoding="utf-8"))
    assert child["confinement"] == f"landlock ABI {abi_version()}: writes confined to the build folder"
    assert "Permission denied" in (keep / "export.log").read_text(encoding="utf-8")


def test_trust_skips_the_scan(saved_models: Path) -> None:
    check_saved_model(saved_models / "init_write", trust=True)
    with pytest.raises(ModelError, match="WriteFile"):
        check_saved_model(saved_models / "init_write", trust=False)


def test_the_allowlist_is_math_only() -> None:
    for op in ("ReadFile", "WriteFile", "MatchingFiles", "PyFunc", "EagerPyFunc", "PrintV2", "ImmutableConst",
               "SaveV2", "RestoreV2", "MergeV2Checkpoints", "InitializeTableFromTextFileV2", "TFRecordDataset"):
        assert op not in ALLOWLIST


# --- attacks on the checkpoint exception, and ops named in other ways ------------------------------------

Meta = Any


def _fn(meta: Meta, name: str) -> Any:
    return next(f for f in meta.graph_def.library.function if f.signature.name == name)


def _node(meta: Meta, name: str) -> Any:
    return next(n for n in meta.graph_def.node if n.name == name)


def _called(node: Any) -> str:
    return next(a.value.func.name for a in node.attr if a.key == "f")


def _saver_fn(meta: Meta, role: str) -> str:
    tensor = meta.saver_def.save_tensor_name if role == "save" else meta.saver_def.restore_op_name
    return _called(_node(meta, tensor.partition(":")[0]))


def _serving(meta: Meta) -> Any:
    return next(f for f in meta.graph_def.library.function if f.signature.name.startswith("__inference_serve_"))


def _call(fn: Any, callee: str, op: str = "StatefulPartitionedCall") -> Any:
    node = fn.node_def.add(name="edgeq_test_call", op=op)
    node.attr.add(key="f").value.func.name = callee
    return node


def _unknown_field(text: str) -> bytes:
    """Bytes of an extra length-delimited field (number 15) holding ``text``."""
    data = text.encode()
    return bytes([15 << 3 | 2, len(data)]) + data


def _nested(meta: Meta) -> None:
    node = _call(_serving(meta), _serving(meta).signature.name, "PartitionedCall")
    entry = next(a for a in node.attr if a.key == "f").value.func.attr.add(key="g")
    entry.value.func.name = "ReadFile"


# The save function's first op outside the allowlist (a string op for checkpoint file names), no longer excepted.
SAVE_FN_REFUSED = "runs op 'StaticRegexFullMatch' (node 'StaticRegexFullMatch'), a checkpoint op"

CRAFTED: list[tuple[str, Callable[[Meta], Any], str]] = [
    ("a file op in the save function",
     lambda m: _fn(m, _saver_fn(m, "save")).node_def.add(name="w", op="WriteFile"),
     "function '__inference__traced_save_"),
    ("the serving function calls the save function",
     lambda m: _call(_serving(m), _saver_fn(m, "save")), SAVE_FN_REFUSED),
    ("a string attribute names the save function",
     lambda m: _serving(m).node_def.add(name="s", op="NoOp").attr.add(key="x").value.__setattr__(
         "s", _saver_fn(m, "save").encode()), SAVE_FN_REFUSED),
    ("the object graph names the save function",
     lambda m: setattr(m, "object_graph_def", m.object_graph_def + _unknown_field(_saver_fn(m, "save"))),
     SAVE_FN_REFUSED),
    ("a signature names the save node",
     lambda m: m.signature_def.append(_unknown_field(m.saver_def.save_tensor_name)), SAVE_FN_REFUSED),
    ("another node depends on the save node",
     lambda m: m.graph_def.node[0].input.append("^" + m.saver_def.save_tensor_name.partition(":")[0]), SAVE_FN_REFUSED),
    ("a gradient names the save function",
     lambda m: m.graph_def.library.gradient.add(function_name=_serving(m).signature.name,
                                                gradient_func=_saver_fn(m, "save")), SAVE_FN_REFUSED),
    ("the save function declares api_implements",
     lambda m: _fn(m, _saver_fn(m, "save")).attr.add(key="api_implements").value.__setattr__("s", b"lstm"),
     SAVE_FN_REFUSED),
    ("the restore function saves",
     lambda m: _fn(m, _saver_fn(m, "restore")).node_def.add(name="save", op="SaveV2"),
     "function '__inference__traced_restore_"),
    ("a function attribute names an op",
     lambda m: _call(_serving(m), "WriteFile", "PartitionedCall"), "op 'WriteFile' (node 'edgeq_test_call')"),
    ("a nested function attribute names an op", _nested, "op 'ReadFile' (node 'edgeq_test_call')"),
    ("a file op at the top level", lambda m: m.graph_def.node.add(name="w", op="MatchingFiles"),
     "the graph runs op 'MatchingFiles' (node 'w')"),
]


def _edited(saved: Path, tmp_path: Path, edit: Callable[[Meta], Any]) -> Path:
    folder = tmp_path / "saved"
    shutil.copytree(saved, folder)
    model = parse_saved_model((folder / "saved_model.pb").read_bytes(), "test")
    edit(model.meta_graphs[0])
    (folder / "saved_model.pb").write_bytes(model.SerializeToString())
    return folder


@pytest.mark.parametrize(("case", "edit", "message"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_saved_models_are_refused(saved_models: Path, tmp_path: Path, case: str,
                                          edit: Callable[[Meta], Any], message: str) -> None:
    folder = _edited(saved_models / "normal", tmp_path, lambda m: None)
    check_saved_model(folder, False)  # unedited, after a parse and write: passes
    shutil.rmtree(folder)
    folder = _edited(saved_models / "normal", tmp_path, edit)
    with pytest.raises(ModelError, match=r"saved/saved_model\.pb: ") as err:
        check_saved_model(folder, False)
    assert message in str(err.value)


def test_names_from_the_file_are_shown_escaped_and_cut(saved_models: Path, tmp_path: Path) -> None:
    op = "Evil\n\x1b[31m" + "x" * 300
    folder = _edited(saved_models / "normal", tmp_path, lambda m: m.graph_def.node.add(name="n\r", op=op))
    with pytest.raises(ModelError) as err:
        check_saved_model(folder, False)
    text = str(err.value)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert "op 'Evil\\\\n\\\\x1b[31mxxx" in text and "(node 'n\\\\r')" in text
    assert "x...[230 more characters]' (node" in text  # cut at 80 characters


@pytest.mark.parametrize(("damage", "message"), [
    ("random", "saved/saved_model.pb is not a readable SavedModel (DecodeError)"),
    ("truncate", "saved/saved_model.pb is not a readable SavedModel (DecodeError)"),
    ("empty", "saved/saved_model.pb holds no MetaGraph, so it is not a SavedModel"),
    ("symlink", "saved/saved_model.pb cannot be opened"),
    ("too big", "saved/saved_model.pb is 1"),
])
def test_a_saved_model_pb_that_cannot_be_read_is_refused(saved_models: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, damage: str,
                                                         message: str) -> None:
    folder = tmp_path / "saved"
    shutil.copytree(saved_models / "normal", folder)
    pb = folder / "saved_model.pb"
    data = pb.read_bytes()
    if damage == "symlink":
        (tmp_path / "elsewhere.pb").write_bytes(data)
        pb.unlink()
        pb.symlink_to(tmp_path / "elsewhere.pb")
    elif damage == "too big":
        monkeypatch.setattr(saved_model_ops, "MAX_PROTOBUF", 100)
    else:
        pb.write_bytes({"random": np.random.default_rng(0).bytes(512), "truncate": data[: len(data) // 2],
                        "empty": b""}[damage])
    with pytest.raises(ModelError) as err:
        check_saved_model(folder, False)
    assert str(err.value).startswith(message)


# --- Landlock --------------------------------------------------------------------------------------------

_CONFINED = textwrap.dedent('''
    import json, os, sys, tempfile, threading
    from pathlib import Path
    allowed, other, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    go, seen = threading.Event(), {}

    def write(path, key):
        try:
            path.write_text("x")
            seen[key] = "wrote"
        except PermissionError:
            seen[key] = "refused"

    early = threading.Thread(target=lambda: (go.wait(), write(other / "from-early-thread", "early")))
    early.start()  # a thread that runs before confinement, as numpy's BLAS workers do
    if how == "child":
        from edgeq.landlock import confine_child
        status = confine_child(str(allowed))
    else:
        from edgeq.landlock import confine_writes
        status = confine_writes([allowed, Path(os.devnull)], "the test folder")
    go.set()
    early.join()
    (allowed / "sub").mkdir(exist_ok=True)
    write(allowed / "sub" / "inside", "inside")
    write(other / "outside", "outside")
    write(Path(os.devnull), "devnull")
    seen["read"] = (other / "given").read_text()
    print(json.dumps({"status": status, **seen, "tmp": tempfile.gettempdir() if how == "child" else ""}))
''')


def _confined(tmp_path: Path, how: str) -> dict[str, str]:
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    (other / "given").write_text("readable")
    run = subprocess.run([sys.executable, "-c", _CONFINED, str(allowed), str(other), how], capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(run.stdout)


@needs_landlock
def test_confine_writes_allows_writes_beneath_the_given_paths_only(tmp_path: Path) -> None:
    seen = _confined(tmp_path, "writes")
    assert seen["status"] == f"landlock ABI {abi_version()}: writes confined to the test folder"
    assert (seen["inside"], seen["outside"], seen["devnull"], seen["read"]) == ("wrote", "refused", "wrote", "readable")
    assert seen["early"] == "wrote"  # a thread started before is not confined: what confine_child is for
    assert not (tmp_path / "other" / "outside").exists()


@needs_landlock
def test_confine_child_confines_threads_started_before_it_and_moves_tmpdir(tmp_path: Path) -> None:
    seen = _confined(tmp_path, "child")
    assert seen["status"] == f"landlock ABI {abi_version()}: writes confined to the build folder"
    assert (seen["inside"], seen["outside"], seen["early"], seen["devnull"]) == ("wrote", "refused", "refused", "wrote")
    assert seen["tmp"] == str(tmp_path / "allowed" / "tmp")
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["given"]


def test_confinement_that_cannot_start_says_why(tmp_path: Path) -> None:
    code = ("from pathlib import Path; from edgeq.landlock import confine_writes, confine_child; "
            f"print(confine_writes([Path({str(tmp_path / 'missing')!r})])); print(confine_child(None))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    first, second = run.stdout.splitlines()
    if abi_version():
        assert first.startswith("not confined: cannot open") and "missing" in first
    else:
        assert first.startswith("not confined: ")
    assert second == "not confined: the job names no build folder"


@needs_landlock
def test_the_report_says_the_children_ran_confined(tiny_report: dict[str, Any], tiny_build: Any) -> None:
    status = f"landlock ABI {abi_version()}: writes confined to the build folder"
    assert tiny_report["export"]["confinement"] == status
    assert tiny_report["conversion"]["confinement"] == status
    md = (tiny_build.out / "report.md").read_text(encoding="utf-8")
    assert "## Child processes" in md
    assert f"- Export ran with writes confined to the build folder (Landlock ABI {abi_version()})." in md
    assert f"- Conversion ran with writes confined to the build folder (Landlock ABI {abi_version()})." in md
