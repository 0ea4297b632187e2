"""The worker that runs inside the emulator: one process per artifact and CPU profile.

It imports numpy, the runtime (LiteRT) and two numpy-only edgeq modules given to it as files:
``tflite_io.py`` (the ONNX <-> .tflite mapping) and ``decode.py`` (the greedy decode loop) - the
same code the host runtimes use, not a copy of it. Nothing else of edgeq runs in the guest.

Protocol (files in the working folder, paths in job.json relative to it):

job.json::

    {"protocol": 1, "threads": 1,
     "lib": {"tflite_io": "lib/tflite_io.py", "decode": "lib/decode.py"},
     "graphs": {GRAPH: {"model": "models/GRAPH.tflite", "meta": {...the artifact's meta...}}},
     "runs": [{"graph": GRAPH, "samples": N, "feeds": {INPUT: "feeds/GRAPH/K.npy"},
               "outputs": "out/GRAPH"}],
     "decode": null | {"encoder": GRAPH, "decoder": GRAPH, "spec": {...DecodeSpec fields...},
                       "sources": "feeds/sources.npy", "tokens": "out/tokens.npy",
                       "steps": "out/steps.npy"}}

* feeds: one .npy per input holding every sample stacked on a new first axis, in the ONNX
  model's terms (what the host runtimes are fed);
* outputs: ``out/GRAPH/I.npy`` for the signature's I-th output (artifact meta order), every
  sample stacked, exactly as the runtime produced it (int8 stays int8; the host dequantizes);
* decode: every source row decoded with the shared loop; tokens [N, T] int32 padded with -1,
  steps [N] int32;
* result.json, written last: {"ok": true, "guest": {...}, "seconds": {...}} or
  {"ok": false, "error": "..."}. A process that dies without result.json crashed (a signal).
"""

import importlib.util
import json
import os
import platform
import struct
import sys
import time
import traceback

T0 = time.monotonic()

import numpy as np  # noqa: E402

PROTOCOL = 1
AT_HWCAP = 16
HWCAP_ASIMDDP = 1 << 20


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _hwcap():
    """AT_HWCAP from the auxiliary vector (qemu-user gives the emulated CPU's)."""
    try:
        with open("/proc/self/auxv", "rb") as f:
            data = f.read()
    except OSError:
        return None
    for i in range(0, len(data) - 15, 16):
        key, value = struct.unpack("QQ", data[i : i + 16])
        if key == AT_HWCAP:
            return value
    return None


def _cpu_part():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("CPU part"):
                    return line.split(":")[1].strip()
    except OSError:
        pass
    return None


def _interpreter(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    return interp


def main():
    """Run job.json: each graph's samples on LiteRT, the decode loop if asked, then write result.json."""
    with open("job.json") as f:
        job = json.load(f)
    if job.get("protocol") != PROTOCOL:
        raise ValueError(f"job protocol {job.get('protocol')} is not {PROTOCOL}")
    io = _load("edgeq_tflite_io", job["lib"]["tflite_io"])
    import ai_edge_litert.interpreter  # noqa: F401  (its import is part of the start-up cost)

    hwcap = _hwcap()
    guest = {
        "python": platform.python_version(), "machine": platform.machine(), "numpy": np.__version__,
        "litert": _version("ai-edge-litert"), "hwcap": hwcap,
        "dot_product": None if hwcap is None else bool(hwcap & HWCAP_ASIMDDP), "cpu_part": _cpu_part(),
    }
    seconds = {"start": time.monotonic() - T0}
    threads = int(job.get("threads", 1))
    runners, metas = {}, {}
    for g, entry in job["graphs"].items():
        t = time.monotonic()
        interp = _interpreter(entry["model"], threads)
        metas[g] = entry["meta"]
        runners[g] = interp.get_signature_runner(entry["meta"]["signature"])
        seconds[f"load_{g}"] = time.monotonic() - t

    for run in job["runs"]:
        g = run["graph"]
        meta, runner = metas[g], runners[g]
        feeds = {name: np.load(path, mmap_mode="r") for name, path in run["feeds"].items()}
        os.makedirs(run["outputs"], exist_ok=True)
        outs = None
        t = time.monotonic()
        for k in range(run["samples"]):
            raw = runner(**io.to_tflite({n: np.asarray(a[k]) for n, a in feeds.items()}, meta))
            if outs is None:
                outs = [
                    np.lib.format.open_memmap(os.path.join(run["outputs"], f"{i}.npy"), mode="w+",
                                              dtype=raw[m["tflite_name"]].dtype,
                                              shape=(run["samples"], *raw[m["tflite_name"]].shape))
                    for i, m in enumerate(meta["outputs"])
                ]
            for i, m in enumerate(meta["outputs"]):
                outs[i][k] = raw[m["tflite_name"]]
        for o in outs or []:
            o.flush()
        seconds[f"run_{g}"] = time.monotonic() - t

    dec = job.get("decode")
    if dec:
        decode = _load("edgeq_decode", job["lib"]["decode"])
        spec = decode.DecodeSpec(**dec["spec"])
        enc_meta, dec_meta = metas[dec["encoder"]], metas[dec["decoder"]]
        enc_run, dec_run = runners[dec["encoder"]], runners[dec["decoder"]]

        def encode(feeds):
            return io.from_tflite(enc_run(**io.to_tflite(feeds, enc_meta)), enc_meta)

        def decode_step(feeds):
            return io.from_tflite(dec_run(**io.to_tflite(feeds, dec_meta)), dec_meta)

        sources = np.load(dec["sources"])
        tokens = np.full((len(sources), spec.target_len), -1, dtype=np.int32)
        steps = np.zeros(len(sources), dtype=np.int32)
        t = time.monotonic()
        for k in range(len(sources)):
            ids, n = decode.greedy_decode(encode, decode_step, sources[k], spec)
            tokens[k, : len(ids)] = ids
            steps[k] = n
        seconds["decode"] = time.monotonic() - t
        np.save(dec["tokens"], tokens)
        np.save(dec["steps"], steps)

    seconds["total"] = time.monotonic() - T0
    _result({"ok": True, "protocol": PROTOCOL, "guest": guest, "seconds": seconds})


def _version(dist):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _result(data):
    with open("result.json.part", "w") as f:
        json.dump(data, f)
    os.replace("result.json.part", "result.json")


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:
        _result({"ok": False, "protocol": PROTOCOL, "error": f"{type(e).__name__}: {e}",
                 "traceback": traceback.format_exc()})
        sys.exit(1)
