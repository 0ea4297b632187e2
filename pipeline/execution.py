"""The contract between validation and the runtimes: what a runtime is asked to run, and how.

A runtime runs a whole artifact (one file per graph) as a batch. Before the first ``run``, the
work of a validation is announced to every runtime with ``start(work)``: the feeds of every sample
of every graph (``FeedSet``, re-iterable, in order) and the sentences to decode (``DecodeJob``).
``run(graph, feeds)`` then returns the outputs of each announced sample in turn and ``decoded()``
the decoded token rows. How a runtime meets that is its own business: one on the host runs each
sample when asked and decodes in ``start``; one under an emulator records every feed to files in
``start``, runs them all in one background process, and replays the outputs. A runtime that runs in
the background runs only ``Work.subset`` when it is set (a seeded subset of the samples, the same for
every graph and the decode job; edgeq.runtimes.subsets): the task asks it for those samples only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgeq.artifacts import Artifact
from edgeq.decode import DecodeSpec

__all__ = ["DecodeJob", "Decoded", "FeedRecorder", "FeedSet", "Feeds", "Runtime", "Work"]

Feeds = dict[str, np.ndarray]


class FeedRecorder:
    """Every sample's feeds of one graph, stacked per input into .npy files (streamed, not held)."""

    def __init__(self, folder: Path, samples: int) -> None:
        self.folder = folder
        self.samples = samples
        self.files: dict[str, Path] = {}
        self._arrays: dict[str, np.memmap] = {}
        self.count = 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, feeds: Feeds) -> None:
        """Append one sample (every input of the graph)."""
        if self.count >= self.samples:
            raise IndexError(f"more than the {self.samples} samples announced")
        if not self._arrays:
            for k, (name, value) in enumerate(sorted(feeds.items())):
                value = np.asarray(value)
                path = self.folder / f"{k}.npy"
                self.files[name] = path
                self._arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=value.dtype,
                                                               shape=(self.samples, *value.shape))
        for name, arr in self._arrays.items():
            arr[self.count] = feeds[name]
        self.count += 1

    def close(self) -> None:
        """Flush the files; every announced sample must have been added."""
        if self.count != self.samples:
            raise ValueError(f"recorded {self.count} samples, {self.samples} announced")
        for arr in self._arrays.values():
            arr.flush()
        self._arrays = {}


@dataclass
class FeedSet:
    """Every sample's feeds of one graph, in order. Iterating calls ``make`` again: the feeds are
    computed when needed (a host runtime needs none in advance), and recorded to files at most once."""

    graph: str
    samples: int
    make: Callable[[], Iterator[Feeds]]
    _files: dict[str, Path] | None = field(default=None, repr=False)
    _subset_files: dict[str, Path] | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[Feeds]:
        return self.make()

    def record(self, folder: Path, subset: tuple[int, ...] | None = None) -> dict[str, Path]:
        """The feeds stacked per input into ``folder/<k>.npy``, only the samples of ``subset`` (sorted
        indices) if given; written on the first call only (a subset is recorded on its own)."""
        if subset is not None:
            if self._subset_files is None:
                chosen = set(subset)
                rec = FeedRecorder(folder / "subset", len(subset))
                for k, feeds in enumerate(self):
                    if k in chosen:
                        rec.add(feeds)
                rec.close()
                self._subset_files = dict(rec.files)
            return self._subset_files
        if self._files is None:
            rec = FeedRecorder(folder, self.samples)
            for feeds in self:
                rec.add(feeds)
            rec.close()
            self._files = dict(rec.files)
        return self._files


@dataclass(frozen=True)
class DecodeJob:
    """Greedy decoding (edgeq.decode) of every source row of ``sources`` (the encoder's feeds)."""

    encoder: str
    decoder: str
    spec: DecodeSpec
    sources: FeedSet


@dataclass(frozen=True)
class Decoded:
    """Token ids of every decoded sentence, and the decoding speed (None where it means nothing
    for a device: under an emulator)."""

    tokens: list[list[int]]
    speed: dict[str, float] | None


@dataclass(frozen=True)
class Work:
    """Everything one validation asks of a runtime."""

    feeds: dict[str, FeedSet]  # graph -> its samples
    decode: DecodeJob | None
    folder: Path  # where a runtime that needs files of the feeds records them (once, shared)
    subset: tuple[int, ...] | None = None  # the samples a background runtime runs (sorted); None: every one

    def record(self, graph: str) -> dict[str, Path]:
        """The recorded feed files of ``graph`` (input name -> .npy of every sample, or of the subset's)."""
        return self.feeds[graph].record(self.folder / graph, self.subset)


class Runtime(Protocol):
    """Runs one artifact - every graph of it - for a validation.

    ``run`` takes feeds and returns outputs in the ONNX model's terms - the names, layout and
    float32 dtype of the float reference - whatever the artifact's own layout and I/O dtype. The
    runtime owns the conversions (quantizing float feeds with the artifact's scale/zero-point,
    dequantizing outputs, NCHW <-> NHWC), so metrics always compare like with like.
    """

    name: str
    background: bool  # runs in its own process: started after every foreground runtime has started

    def start(self, work: Work) -> None:
        """Announce the whole work before the first ``run`` (a foreground runtime decodes here)."""
        ...

    def run(self, graph: str, feeds: Feeds) -> Feeds:
        """The outputs of the next announced sample of ``graph``, which is ``feeds``."""
        ...

    def decoded(self) -> Decoded:
        """The token rows of the work's decode job (after ``start``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Runtime, version, kernels, threads, where it ran - for the report."""
        ...

    def stop(self) -> None:
        """Release what is still running (a background process); safe to call twice."""
        ...


ArtifactSet = dict[str, Artifact]  # graph -> the artifact's file for that graph
