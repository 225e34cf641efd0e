"""Kiln vs onnxruntime on onnxruntime-quantized models, at batch 1.

    python benchmarks/bench_quant.py [--runs 30] [--threads 1 2] [--json PATH]

Models (tests/frameworks/test_quantized_models.py's builders, at benchmark sizes):
``cnn_qdq`` and ``cnn_qdq_channel``: the small CNN at width 32 on a 1x3x64x64 image, quantized by
``quantize_static`` in QDQ format (int8, per-tensor / per-channel weights); ``cnn_qoperator``:
the same in QOperator format (QLinearConv, uint8 activations); ``encoder_dynamic``: the
transformer encoder layer (hidden 256, 4 heads, sequence 128) quantized by ``quantize_dynamic``
(DynamicQuantizeLinear + MatMulInteger). Each is compiled once (``build(graph, opt_level=3)``);
per thread count the library is loaded with ``threads=n`` and onnxruntime gets
``intra_op_num_threads = n``; the engines take turns (bench_models.interleaved_times) and the
median of ``--runs`` runs is reported.

Columns: Kiln and onnxruntime milliseconds, ``ort/kiln`` (above 1: Kiln is faster), and
``diff``: the largest |kiln - ort| over the outputs in units of the output's quantization step
for the static models (0: bit-exact), relative to max |ort| for the dynamic one (float output).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "frameworks")]


from bench_models import Timing, interleaved_times  # noqa: E402


@dataclass
class Row(Timing):
    diff: float

@dataclass
class Case:
    name: str
    path: Path
    inputs: dict[str, np.ndarray]
    step: float | None  # the output's quantization step (None: a float output)


def cases(folder: Path) -> list[Case]:
    import onnx
    from test_quantized_models import dynamic_encoder, static_cnn

    rng = np.random.default_rng(0)
    image = {"image": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}
    tokens = {"tokens": rng.standard_normal((1, 128, 256)).astype(np.float32)}
    found = []
    for name, fmt, per_channel in (("cnn_qdq", "qdq", False), ("cnn_qdq_channel", "qdq", True),
                                   ("cnn_qoperator", "qoperator", False)):
        sub = folder / name
        sub.mkdir()
        path = static_cnn(sub, fmt, per_channel, width=32, size=64)
        found.append(Case(name, path, image, _output_step(onnx.load(str(path)))))
    path = dynamic_encoder(folder, hidden=256, heads=4, sequence=128)
    found.append(Case("encoder_dynamic", path, tokens, None))
    return found


def _output_step(model) -> float | None:  # type: ignore[no-untyped-def]
    """The scale of the DequantizeLinear producing the graph's output, if it ends in one."""
    from onnx import numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.output[0] == model.graph.output[0].name:
            return float(numpy_helper.to_array(initializers[node.input[1]]).reshape(-1)[0])
    return None


def bench(case: Case, threads: Sequence[int], runs: int) -> list[Row]:
    from test_quantized_models import load_quantized, onnxruntime_session

    from kiln.compiler import build
    from kiln.runtime import load

    exe = build(load_quantized(case.path), opt_level=3)
    rows = []
    for count in threads:
        session = onnxruntime_session(case.path, count)
        with load(str(exe.library), threads=count) as model:
            got, expected = model.run(case.inputs)[0], session.run(None, case.inputs)[0]
            worst = float(np.abs(got.astype(np.float64) - expected).max())
            diff = worst / case.step if case.step else worst / float(np.abs(expected).max())
            engines: dict[str, Callable[[], object]] = {
                "kiln": lambda: model.run(case.inputs),
                "ort": lambda s=session: s.run(None, case.inputs),
            }
            times = interleaved_times(engines, runs)
        rows.append(Row(case.name, count, statistics.median(times["kiln"]) * 1e3,
                        statistics.median(times["ort"]) * 1e3, diff))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'model':<18}{'threads':>8}{'kiln ms':>10}{'ort ms':>10}{'ort/kiln':>10}"
              f"{'diff':>10}")
        for case in cases(Path(folder)):
            for row in bench(case, args.threads, args.runs):
                rows.append(row)
                print(f"{row.model:<18}{row.threads:>8}{row.kiln_ms:>10.3f}{row.ort_ms:>10.3f}"
                      f"{row.ratio:>10.2f}{row.diff:>10.3g}", flush=True)
    for count in args.threads:
        ratios = [r.ratio for r in rows if r.threads == count]
        geomean = float(np.exp(np.mean(np.log(ratios))))
        print(f"threads {count}: geomean ort/kiln {geomean:.2f}, lowest {min(ratios):.2f}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
