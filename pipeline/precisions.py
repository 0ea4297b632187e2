"""The precision ladder as data: what each rung quantizes, its name, and what a model costs at it.

Names follow litert-quantizer's convention (weights ``w``, activations ``a``: ``static_wi8_ai8`` is
int8 weights and int8 activations computed in integer kernels; ``dynamic_wi8_afp32`` int8 weights
with float activations quantized on the fly); each rung also has the short alias a user types.
Bytes per parameter count the quantization parameters too: a blockwise int4 weight carries one
float16 scale per block, so 4-bit weights in blocks of 32 cost 4 + 16/32 = 4.5 bits each. Per-channel
int8 scales (one per output channel) are left out of the per-parameter figure: a few hundred bytes
against millions of weights. Plain Python: ``edgeq precisions`` and ``edgeq inspect --params`` start
without any of the converters.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INT4_BLOCK", "PRECISIONS", "SELECTORS", "Precision", "ladder", "ladder_lines", "precision", "precision_lines",
           "size_text"]

INT4_BLOCK = 32  # weights per float16 scale in the blockwise int4 rung
SCALE_BITS = 16  # a block scale is a float16


@dataclass(frozen=True)
class Precision:
    """One rung: its alias, its litert-quantizer-style name, the bits of a weight (scales included)
    and of an activation, and a sentence for `edgeq precisions`."""

    alias: str
    name: str
    weight_bits: float
    activation_bits: int
    about: str
    full_integer: bool = False  # every compute op runs in integer kernels (the int8_compute_ops gate applies)

    @property
    def key(self) -> str:
        """The build's artifact key for this rung's .tflite (the converter's own for fp32 and int8)."""
        return {"fp32": "tflite_float32", "int8": "tflite_int8"}.get(self.alias, f"tflite_{self.alias}")

    @property
    def bytes_per_param(self) -> float:
        """Bytes one weight takes, its share of the scales included."""
        return self.weight_bits / 8.0


PRECISIONS: tuple[Precision, ...] = (
    Precision("fp32", "wfp32_afp32", 32, 32,
              "the float model as converted: how it was trained, the reference every other rung is measured against"),
    Precision("fp16", "wfp16_afp32", 16, 32,
              "float16 weights, float32 compute (TFLite float16 quantization): half the bytes, almost no accuracy lost"),
    Precision("dynamic-int8", "dynamic_wi8_afp32", 8, 32,
              "int8 weights; float activations quantized on the fly by the kernels (dynamic range): no calibration"),
    Precision("int8", "static_wi8_ai8", 8, 8,
              "int8 weights and activations, integer kernels throughout (full-integer, calibrated): the common "
              "deployment format, 4x smaller than fp32", full_integer=True),
    Precision("int16x8", "static_wi8_ai16", 8, 16,
              "int8 weights, 16-bit activations (LiteRT's 16x8 kernels; XNNPACK has none): int8's size, far less "
              "activation error", full_integer=True),
    Precision("int4", f"dynamic_wi4_afp32_block{INT4_BLOCK}", 4 + SCALE_BITS / INT4_BLOCK, 32,
              f"4-bit weights in blocks of {INT4_BLOCK} with a float16 scale each (convolutions: a scale per output "
              "channel), float activations quantized on the fly: about 7x smaller than fp32, some accuracy lost"),
)


# What --precision takes besides a rung: ``auto`` ships the smallest rung that passes every gate,
# ``all`` validates every rung the target allows and ships the target's default.
SELECTORS = ("auto", "all")


def precision(name: str) -> Precision:
    """The rung named by its alias or its full name (KeyError naming the choices otherwise)."""
    for p in PRECISIONS:
        if name in (p.alias, p.name):
            return p
    raise KeyError(f"no precision {name!r}; one of {', '.join(p.alias for p in PRECISIONS)}")


def size_text(n: float) -> str:
    """Bytes in decimal units, three significant digits: 28.0 GB, 3.94 GB, 512 kB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:#.3g} {unit}" if n / size < 100 else f"{n / size:.0f} {unit}"
    return f"{n:.0f} B"


def ladder(params: float) -> list[dict[str, float | str]]:
    """A model of ``params`` weights at every rung: bits per weight and bytes (the memory its weights
    take when loaded), smallest last."""
    if not 0 < params < float("inf"):
        raise ValueError(f"the parameter count must be positive, got {params!r}")
    return [{"alias": p.alias, "name": p.name, "bits_per_weight": p.weight_bits, "bytes": params * p.bytes_per_param}
            for p in PRECISIONS]


def ladder_lines(params: float) -> list[str]:
    """`edgeq inspect --params`: a heading, then one line per rung: alias, name, bits per weight, bytes."""
    return [f"{params:,.0f} parameters; the weights' bytes at each precision, as loaded (activations and runtime "
            "buffers come on top):",
            *(f"{r['alias']:<13} {r['name']:<27} {r['bits_per_weight']:>4g} bits/weight  {size_text(float(r['bytes']))}"
              for r in ladder(params))]


def precision_lines() -> list[str]:
    """`edgeq precisions`: one line per rung: alias, name, bits per weight, what it is."""
    return [f"{p.alias:<13} {p.name:<27} {p.weight_bits:g} bits/weight  {p.about}" for p in PRECISIONS]
