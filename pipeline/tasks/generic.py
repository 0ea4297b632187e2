"""generic: a one-graph model fed arrays (or images); measured by its outputs against the float reference.

Every output of the model is compared with the float reference's (edgeq.tasks.metrics); the task
metrics of a subclass (classification) are accumulated in the same pass. The eval set streams
sample by sample through every runtime in lockstep: memory does not grow with the eval set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgeq.bundle.layout import LABELS
from edgeq.cache import memo
from edgeq.config import ModelSpec
from edgeq.context import BuildContext, Column, Evaluation, TaskValidation
from edgeq.data import ArrayDataset, check_token_ids
from edgeq.execution import Feeds, FeedSet, Runtime
from edgeq.inputs.files import read_labels
from edgeq.onnx_files import embedding_rows
from edgeq.tasks.metrics import Parity, TensorMetrics

__all__ = ["Generic"]


class Generic:
    """Arrays in, tensors out: no task metric, every output gated by its tensor metrics."""

    kind = "generic"
    columns: tuple[Column, ...] = (Column("top-1", "top1_accuracy", 4), Column("agreement", "top1_agreement", 4))
    summary_columns: tuple[Column, ...] = (Column("accuracy", "top1_accuracy", 4),
                                           Column("agreement", "top1_agreement", 4, reference=False))
    parity_columns: tuple[Column, ...] = (Column("top-1", "top1_accuracy", 4),
                                          Column("agreement with float", "top1_agreement", 4),
                                          Column("top-1 agreement", "top1_agreement", 4))

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._labels: list[str] | None = None

    # -- data -----------------------------------------------------------------------------------

    def labels(self) -> list[str] | None:
        """The class names of [task].labels (read once), or None without a labels file."""
        if self.spec.task.labels is None:
            return None
        if self._labels is None:
            self._labels = read_labels(self.spec.task.labels)
        return self._labels

    def class_names(self) -> list[str] | None:
        """The class names eval images are sorted by (None: the eval data carries no labels)."""
        return None

    def open_data(self) -> tuple[Any, Any]:
        """Arrays, .npz archives or image folders; checked against the model's inputs."""
        from edgeq.images import open_source

        spec, d = self.spec, self.spec.data
        names = self.class_names()
        bounds = {"max_bytes": d.max_unpacked_bytes, "max_ratio": d.max_unpack_ratio}
        sources = {
            "calibration": open_source(d.calibration, spec.inputs, "calibration", class_names=None,
                                       limit=d.calibration_samples, seed=d.subset_seed, **bounds),
            "eval": open_source(d.eval, spec.inputs, "eval", class_names=names, limit=None, seed=None, **bounds),
        }
        if sources["eval"] is not None:
            self._check_image_eval(names)
        calibration = sources["calibration"] or ArrayDataset.open(d.calibration, spec.inputs, "calibration",
                                                                  limit=d.calibration_samples)
        evaluation = sources["eval"] or ArrayDataset.open(d.eval, spec.inputs, "eval", want_labels=self.wants_labels,
                                                          also=self.eval_files)
        if isinstance(evaluation, ArrayDataset):
            self.check_labels(evaluation)
        return calibration, evaluation

    wants_labels = False  # the eval arrays must hold labels.npy
    eval_files: tuple[str, ...] = ()  # other .npy files the task reads from the eval folder
    top1_parity = False  # parity across runtimes also counts the top-1 class of the task's output

    def _check_image_eval(self, names: list[str] | None) -> None:
        """Eval images of this task need nothing more."""

    def check_labels(self, evaluation: ArrayDataset) -> None:
        """The eval set's labels against the task (nothing to check without labels)."""

    def materialize(self, data: Any, role: str, folder: Path) -> Any:
        """Image folders and .npz archives become arrays in the build folder (streamed, one image at
        a time), then are read like any array data; array folders are used in place."""
        if isinstance(data, ArrayDataset) or not hasattr(data, "materialize"):
            return data
        where = data.materialize(folder / role)
        if role == "calibration":
            limit = self.spec.data.calibration_samples if self.spec.data.subset_seed is None else None
            return ArrayDataset.open(where, self.spec.inputs, role, limit=limit)
        ds = ArrayDataset.open(where, self.spec.inputs, role, want_labels=self.wants_labels)
        self.check_labels(ds)
        return ds

    def calibration_sets(self, ctx: BuildContext, reference: Callable[[], Runtime]) -> dict[str, Any]:
        """The user's arrays as they are (nothing is copied), token ids checked against the vocabulary."""
        graph = self.spec.single
        path = ctx.artifact("onnx_float").path  # the rows kept in the stage cache by the file's hash (onnx loads slowly)
        rows = memo(ctx.cache, "embedding_rows", lambda: (ctx.cache.file_sha256(path) if ctx.cache else "", graph.inputs),
                    lambda: embedding_rows(path, graph.inputs))
        for ds in (ctx.calibration, ctx.eval):
            check_token_ids(ds, rows)
        return {graph.name: ctx.calibration}

    # -- evaluation -----------------------------------------------------------------------------

    def eval_labels(self, evaluation: Any) -> Any:
        """What the task's metrics compare with, one entry per row of the batch (None: nothing)."""
        return evaluation.sample_labels() if self.wants_labels else None

    def task_view(self, outputs: dict[str, Any]) -> Any:
        """What the task's metrics read of a sample's outputs: [task].output."""
        return outputs[self.spec.task.output] if self.spec.task.output is not None else None

    def task_metrics(self) -> Any:
        """An accumulator of this task's metrics (``update(ref, out, labels)``, ``result()``), or None."""
        return None

    def evaluate(self, ev: Evaluation) -> TaskValidation:
        """One pass over the eval arrays, every runtime in lockstep."""
        ctx = ev.ctx
        g = self.spec.single.name
        batch = self.spec.inputs[0].shape[0] if self.spec.inputs[0].shape else 1

        def samples() -> Iterator[Feeds]:
            return iter(ctx.eval)

        ev.start({g: FeedSet(g, len(ctx.eval), samples)}, None)
        task_out = self.spec.task.output
        ref_task = self.task_metrics()
        labels = self.eval_labels(ctx.eval) if ref_task is not None else None
        task_acc = {p: self.task_metrics() for p in ev.runners} if ref_task is not None else {}
        outputs = ctx.artifact("onnx_float").meta["outputs"]
        specs = {o.name: o for o in self.spec.single.outputs}
        declared = {o: (specs[o].axis, specs[o].slices) if o in specs else (None, ()) for o in outputs}
        tensor_acc = {p: {o: TensorMetrics(o, declared[o]) for o in outputs} for p in ev.runners}
        parity = Parity(ctx.target.runtimes, ctx.artifacts[ev.shipped], ev.runners)
        # a pair that runs a subset of the samples: the reference's task metrics over the same ones
        sub_ref = {p: self.task_metrics() for p in ev.runners if ev.subsets.get(p) is not None} if ref_task is not None else {}
        for k, feeds in enumerate(samples()):
            ref_out = ev.reference.run(g, feeds)
            y = labels[k * batch : (k + 1) * batch] if labels is not None else None
            ref_view = self.task_view(ref_out)
            if ref_task is not None:
                ref_task.update(ref_view, ref_view, y)
            outs = {}
            for p, rt in ev.runners.items():
                if not ev.sees(p, k):
                    continue
                outs[p] = out = rt.run(g, feeds)
                for o in outputs:
                    tensor_acc[p][o].update(ref_out[o], out[o])
                if ref_task is not None:
                    task_acc[p].update(ref_view, self.task_view(out), y)
                if p in sub_ref:
                    sub_ref[p].update(ref_view, ref_view, y)
            parity.update(g, outs, classify_output=task_out if self.top1_parity else None)
        tensors = {p: {g: {o: m.result() for o, m in accs.items()}} for p, accs in tensor_acc.items()}
        tasks = {p: m.result() for p, m in task_acc.items()}
        for p, m in sub_ref.items():
            tasks[p]["reference"] = m.result()
        return TaskValidation(ref_task.result() if ref_task is not None else {}, tasks, tensors, parity.result())

    # -- the bundle -----------------------------------------------------------------------------

    def bundle_files(self, ctx: BuildContext, out: Path) -> dict[str, Any]:
        """labels.txt (the class names, one per line) when [task].labels names a file; model.json's
        task entry names the task, its output and the labels file."""
        names = self.labels()
        if names is not None:
            (out / LABELS).write_text("\n".join(names) + "\n", encoding="utf-8")
        return {"kind": self.kind, "output": self.spec.task.output, "labels": LABELS if names is not None else None}
