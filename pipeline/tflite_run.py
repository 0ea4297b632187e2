"""Running a .tflite on the host: every tensor, sample by sample; the latency of one sample.

``every_tensor``: LiteRT's builtin kernels with every tensor kept.

``experimental_preserve_all_tensors`` keeps each intermediate tensor after ``invoke`` (LiteRT reuses
their memory otherwise); XNNPACK is left out (BUILTIN_WITHOUT_DEFAULT_DELEGATES) because its fused
subgraphs keep no intermediates. Used by the attribution (quantized against float tensors) and by
the per-tensor range choice of edgeq.mixed_precision (the float tensors' values).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from edgeq._fds import redirect_output

__all__ = ["every_tensor", "latency_ms"]


def every_tensor(model: bytes, signature: str, feeds: Iterable[dict[str, np.ndarray]]) -> Iterator[tuple[Any, ...]]:
    """(interpreter, tensor details, ops) once, then per feed (interpreter,) after running it; read a
    tensor with ``interpreter.get_tensor(index)`` (ValueError "Tensor data is null" for one LiteRT
    did not keep, as in an unrolled loop)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with redirect_output(stdout=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": it is, here
        interp = Interpreter(model_content=model, experimental_preserve_all_tensors=True, num_threads=1,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        runner = interp.get_signature_runner(signature)
    yield interp, interp.get_tensor_details(), interp._get_ops_details()
    for feed in feeds:
        with redirect_output(stdout=False):
            runner(**feed)
        yield (interp,)


def latency_ms(model: bytes, signature: str, feed: dict[str, np.ndarray], threads: int, runs: int) -> float:
    """Median host latency of one sample (LiteRT, default kernels: XNNPACK), in milliseconds, over
    ``runs`` invokes after one warm-up."""
    from ai_edge_litert.interpreter import Interpreter

    with redirect_output(stdout=False):
        interp = Interpreter(model_content=model, num_threads=threads)
        interp.allocate_tensors()
        runner = interp.get_signature_runner(signature)
        runner(**feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner(**feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)
