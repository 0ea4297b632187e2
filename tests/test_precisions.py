"""The precision ladder as data (edgeq.precisions), `edgeq precisions` and `edgeq inspect --params`."""

from __future__ import annotations

import json

import pytest
from conftest import invoke_cli

from edgeq.precisions import INT4_BLOCK, PRECISIONS, ladder, precision, size_text


def test_a_7b_model_at_every_rung() -> None:
    """28 GB in fp32, 14 GB in fp16, 7 GB with int8 weights, under 4 GB in blockwise int4 with its
    float16 block scales (4 + 16/32 = 4.5 bits a weight)."""
    sizes = {r["alias"]: r["bytes"] for r in ladder(7e9)}
    assert sizes == {"fp32": 28e9, "fp16": 14e9, "dynamic-int8": 7e9, "int8": 7e9, "int16x8": 7e9,
                     "int4": 7e9 * (4 + 16 / INT4_BLOCK) / 8}
    assert 3.5e9 < sizes["int4"] < 4e9
    assert [r["bytes"] for r in ladder(1000)] == sorted((r["bytes"] for r in ladder(1000)), reverse=True)


def test_rungs_are_named_by_alias_or_by_what_they_quantize() -> None:
    assert precision("int8") is precision("static_wi8_ai8")
    assert precision("int16x8").name == "static_wi8_ai16" and precision("int16x8").activation_bits == 16
    assert precision("int4").name == f"dynamic_wi4_afp32_block{INT4_BLOCK}"
    assert len({p.alias for p in PRECISIONS}) == len({p.name for p in PRECISIONS}) == len(PRECISIONS)
    with pytest.raises(KeyError, match="one of fp32, fp16, dynamic-int8, int8, int16x8, int4"):
        precision("q5_k_m")
    with pytest.raises(ValueError):
        ladder(0)


@pytest.mark.parametrize(("n", "text"), [(28e9, "28.0 GB"), (3.9375e9, "3.94 GB"), (512e3, "512 kB"), (999, "999 B"),
                                         (1.5e12, "1.50 TB")])
def test_sizes_read_in_decimal_units(n: float, text: str) -> None:
    assert size_text(n) == text


def test_inspect_params_prints_the_ladder() -> None:
    r = invoke_cli(["inspect", "--params", "7e9"])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("7,000,000,000 parameters")
    assert lines[1].split()[:2] == ["fp32", "wfp32_afp32"] and lines[1].endswith("28.0 GB")
    assert lines[-1].split()[:2] == ["int4", f"dynamic_wi4_afp32_block{INT4_BLOCK}"] and lines[-1].endswith("3.94 GB")
    data = json.loads(invoke_cli(["inspect", "--params", "7e9", "--json"]).stdout)
    assert data["params"] == 7e9 and [r["alias"] for r in data["ladder"]] == [p.alias for p in PRECISIONS]


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan"])
def test_inspect_params_refuses_what_is_no_count(value: str) -> None:
    r = invoke_cli(["inspect", "--params", value])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert "--params must be a parameter count of 1 or more" in r.stderr


def test_precisions_lists_every_rung_with_what_it_quantizes() -> None:
    r = invoke_cli(["precisions"])
    assert r.exit_code == 0
    assert [line.split()[:2] for line in r.stdout.splitlines()] == [[p.alias, p.name] for p in PRECISIONS]
