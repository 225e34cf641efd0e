"""Kiln vs onnxruntime on a 100-tree random forest, at batch 1 and batch 1000, in one run.

    python benchmarks/bench_trees.py [--runs 200] [--threads 1 2] [--trees 100] [--depth 12]
                                     [--features 25] [--batches 1 1000]

Models: scikit-learn RandomForestClassifier (3 classes) and RandomForestRegressor with
``--trees`` trees of depth at most ``--depth`` on ``--features`` features, fitted on synthetic
data and exported by skl2onnx (zipmap off). Each model is compiled with ``build(graph,
opt_level=3)`` per batch size; for each thread count the library is loaded with
``kiln.runtime.load(lib, threads=n)`` and an onnxruntime session gets ``intra_op_num_threads =
n``. Latency is the median of ``--runs`` runs, the engines taking turns in blocks of runs
(``bench_models.interleaved_times``), so load from other processes falls on both alike.

Columns: milliseconds of Kiln and onnxruntime, ``ort/kiln`` (above 1: Kiln is faster), and
``rel err``: the largest |kiln - ort| over the scores, over the largest |ort| (labels must be
equal; onnxruntime's threads sum the trees in another order). The bar (issue 10):
ort/kiln > 1 at batch 1 and batch 1000, every model and thread count; a missed bar prints FAIL
and the exit status is 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "frameworks")]
from bench_models import Timing, interleaved_times  # noqa: E402
from bench_models import relative_error as float_error  # noqa: E402
from e2e import sklearn_onnx  # noqa: E402

BAR = 1.0
HEADER = f"{'model':24} {'batch':>5} {'thr':>3} {'kiln ms':>9} {'ort ms':>9} {'ort/kiln':>8} " \
         f"{'rel err':>8}"


@dataclass
class Row(Timing):
    batch: int
    error: float


def forests(trees: int, depth: int, features: int) -> dict[str, Any]:
    """The fitted classifier and regressor, by name."""
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    x, y = make_classification(5000, features, n_informative=features // 2, n_classes=3,
                               random_state=0)
    xr, yr = make_regression(5000, features, n_informative=features // 2, noise=1.0,
                             random_state=0)
    common = {"n_estimators": trees, "max_depth": depth, "random_state": 0, "n_jobs": 2}
    return {
        "rf_classifier": RandomForestClassifier(**common).fit(x.astype(np.float32), y),
        "rf_regressor": RandomForestRegressor(**common).fit(xr.astype(np.float32), yr),
    }


def export(model: Any, features: int, folder: Path, name: str) -> Path:
    onx = sklearn_onnx(model, np.zeros((1, features), np.float32))
    path = folder / f"{name}.onnx"
    path.write_bytes(onx.SerializeToString())
    return path


def relative_error(got: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """``bench_models.relative_error`` over the float outputs; inf when labels differ."""
    pairs = list(zip(got, expected, strict=True))
    if any(g.dtype.kind in "iu" and not np.array_equal(g, e) for g, e in pairs):
        return float("inf")
    floats = [(g, e) for g, e in pairs if g.dtype.kind not in "iu"]
    return float_error([g for g, _ in floats], [e for _, e in floats])


def bench(name: str, path: Path, batch: int, threads: list[int], runs: int,
          folder: Path) -> list[Row]:
    import onnxruntime as ort

    from kiln.compiler.driver import build
    from kiln.frontends.onnx import load_onnx
    from kiln.runtime import load

    graph = load_onnx(str(path))
    x_name = graph.inputs[0].name
    features = graph.inputs[0].type.shape[1]
    x = np.random.default_rng(batch).normal(size=(batch, features)).astype(np.float32) * 2
    library = build(graph, input_shapes={x_name: (batch, features)}, opt_level=3).export(
        folder / f"{name}_{batch}.so")
    feed = {x_name: x}
    rows = []
    for n in threads:
        model = load(library, threads=n)
        options = ort.SessionOptions()
        options.intra_op_num_threads = n
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        error = relative_error(model.run(feed), session.run(None, feed))
        times = interleaved_times({"kiln": lambda m=model: m.run(feed),
                                   "ort": lambda s=session: s.run(None, feed)}, runs)
        rows.append(Row(name, n, statistics.median(times["kiln"]) * 1e3,
                        statistics.median(times["ort"]) * 1e3, batch=batch, error=error))
        model.close()
    return rows


def format_row(row: Row) -> str:
    return (f"{row.model:24} {row.batch:>5} {row.threads:>3} {row.kiln_ms:>9.4f} "
            f"{row.ort_ms:>9.4f} {row.ratio:>8.2f} {row.error:>8.1e}")


def verdicts(rows: list[Row]) -> list[str]:
    """PASS / FAIL per row against the bar (and the outputs agreeing)."""
    lines = []
    for row in rows:
        ok = row.ratio > BAR and row.error < 1e-3
        lines.append(f"{'PASS' if ok else 'FAIL'}: {row.model} batch {row.batch} threads "
                     f"{row.threads}: ort/kiln {row.ratio:.2f} (bar > {BAR})"
                     + ("" if row.error < 1e-3 else f", outputs differ by {row.error:.1e}"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--features", type=int, default=25)
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = forests(args.trees, args.depth, args.features)
        for name, model in models.items():
            nodes = sum(e.tree_.node_count for e in model.estimators_)
            print(f"{name}: {len(model.estimators_)} trees, {nodes} nodes, depth "
                  f"{max(e.tree_.max_depth for e in model.estimators_)}")
        print(HEADER, flush=True)
        for name, model in models.items():
            path = export(model, args.features, folder, name)
            for batch in args.batches:
                for row in bench(name, path, batch, args.threads, args.runs, folder):
                    print(format_row(row), flush=True)
                    rows.append(row)
    lines = verdicts(rows)
    print(*lines, sep="\n")
    return 0 if all(line.startswith("PASS") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
