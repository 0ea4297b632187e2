"""calibrate: the calibration set of every graph, in the format quantize and convert stream.

Rules:

* A one-graph model is calibrated on the user's arrays as they are (nothing is copied).
* A translation model is calibrated on the user's sentences. The encoder's set is the tokenized
  source rows. The decoder's set is made by edgeq: the float encoder (the exported ONNX graph on
  onnxruntime) turns each source into its memory, and each reference target gives several
  teacher-forced prefixes (BOS + the first k tokens, PAD after) - the rows the decode loop feeds.
* Sets are written sample by sample to .npy files under build/calibration/<graph>/, so memory
  does not grow with the number of sentences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeq.context import BuildContext
from edgeq.data import ArrayDataset
from edgeq.errors import DataError
from edgeq.stages import StageResult

__all__ = ["STAGE", "CalibrateStage", "prefix_lengths"]

# Teacher-forced prefixes per calibration sentence: spread over the target so that calibration
# sees short and long prefixes, as the decode loop does.
PREFIXES_PER_SENTENCE = 4


def prefix_lengths(n: int, k: int = PREFIXES_PER_SENTENCE) -> list[int]:
    """Distinct prefix lengths (counting BOS) in 1..n, spread evenly, always including 1 and n."""
    if n <= 1:
        return [1]
    return sorted({1 + round(i * (n - 1) / (k - 1)) for i in range(k)})


class CalibrateStage:
    name = "calibrate"
    requires = ("onnx_float",)
    produces: tuple[str, ...] = ()

    def run(self, ctx: BuildContext) -> StageResult:
        if ctx.spec.task.kind != "translation":
            graph = ctx.spec.single
            for ds in (ctx.calibration, ctx.eval):
                check_token_ids(ds, embedding_rows(ctx.artifact("onnx_float").path, graph.inputs))
            ctx.graph_calibration[graph.name] = ctx.calibration
            return StageResult((), {"samples": {graph.name: len(ctx.calibration)}})
        counts = _translation_sets(ctx)
        return StageResult((), {"samples": counts})


STAGE = CalibrateStage()


_PASS_THROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten"}


def embedding_rows(onnx_path: Path, inputs: Any) -> dict[str, int]:
    """For each integer input that indexes an embedding table (a Gather on a constant, maybe after
    a Cast or Reshape), the number of rows of that table: the ids it accepts are 0 .. rows - 1."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model(str(onnx_path), load_external_data=False)
    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            consts[node.output[0]] = node.attribute[0].t
    users: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    rows = {}
    for spec in inputs:
        if not spec.dtype.startswith("int"):
            continue
        frontier, seen = [spec.name], set()
        while frontier:
            name = frontier.pop()
            seen.add(name)
            for node in users.get(name, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name and node.input[0] in consts:
                    table = numpy_helper.to_array(consts[node.input[0]])
                    rows[spec.name] = min(rows.get(spec.name, table.shape[0]), int(table.shape[0]))
                elif node.op_type in _PASS_THROUGH:
                    frontier += [o for o in node.output if o not in seen]
    return rows


def check_token_ids(ds: ArrayDataset, rows: dict[str, int]) -> None:
    """Token ids must index a row of their embedding table (an out-of-range Gather is undefined)."""
    for name, n in rows.items():
        arr = ds._rows(name)
        for start in range(0, arr.shape[0], 1024):
            chunk = np.asarray(arr[start : start + 1024])
            bad = (chunk < 0) | (chunk >= n)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise DataError(
                    f"{ds.role} data: {name}.npy holds token id {int(chunk[where])} at row {start + where[0]}, "
                    f"outside the model's vocabulary (ids 0..{n - 1}); fix the data or the tokenizer"
                )


def _writer(folder: Path, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


def _translation_sets(ctx: BuildContext) -> dict[str, int]:
    from edgeq.runtimes import create_runtime
    from edgeq.tasks.translation import decode_spec, tokenizer_for

    spec, task = ctx.spec, ctx.spec.task
    tok = tokenizer_for(ctx)
    ds = decode_spec(ctx, tok)
    enc_g, dec_g = spec.graph(task.encoder), spec.graph(task.decoder)
    src_len = enc_g.input(task.source_ids).shape[1]
    text = ctx.calibration
    if text.targets is None:
        raise DataError(
            "calibration data: target.txt is missing; the decoder is calibrated on teacher-forced reference prefixes"
        )
    n = len(text) if spec.data.calibration_samples is None else min(len(text), spec.data.calibration_samples)
    rows = [tok.source_row(s, src_len) for s in text.sources[:n]]
    targets = [tok.target_ids(t)[:-1] for t in text.targets[:n]]  # BOS + pieces: what the decoder is fed
    n_dec = sum(len(prefix_lengths(len(t))) for t in targets)

    root = ctx.build_dir / "calibration"
    enc_dir, dec_dir = root / enc_g.name, root / dec_g.name
    enc_src = _writer(enc_dir, task.source_ids, (n, src_len), "int32")
    mem_spec = dec_g.input(task.memory)
    dec_arrays = {task.target_ids: _writer(dec_dir, task.target_ids, (n_dec, ds.target_len), "int32"),
                  task.memory: _writer(dec_dir, task.memory, (n_dec, *mem_spec.shape[1:]), "float32")}
    if ds.decoder_takes_source:
        dec_arrays[task.source_ids] = _writer(dec_dir, task.source_ids, (n_dec, src_len), "int32")

    encoder = create_runtime("onnxruntime", threads=ctx.target.threads)
    encoder.load(ctx.artifact("onnx_float", enc_g.name))
    j = 0
    for k, (row, target) in enumerate(zip(rows, targets, strict=True)):
        enc_src[k] = row[0]
        memory = encoder.run({task.source_ids: row})[task.memory]
        for length in prefix_lengths(len(target)):
            prefix = np.full(ds.target_len, ds.pad_id, dtype=np.int32)
            prefix[:length] = target[:length]
            dec_arrays[task.target_ids][j] = prefix
            dec_arrays[task.memory][j] = memory[0]
            if ds.decoder_takes_source:
                dec_arrays[task.source_ids][j] = row[0]
            j += 1
    for arr in (enc_src, *dec_arrays.values()):
        arr.flush()
    del enc_src, dec_arrays
    ctx.graph_calibration[enc_g.name] = ArrayDataset.open(enc_dir, enc_g.inputs, "calibration")
    ctx.graph_calibration[dec_g.name] = ArrayDataset.open(dec_dir, dec_g.inputs, "calibration")
    return {enc_g.name: n, dec_g.name: n_dec}
