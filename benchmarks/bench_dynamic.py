"""The cost of run-time extents: one library for every batch size vs a library compiled for the
size, on the same inputs, in one run.

    python benchmarks/bench_dynamic.py [--runs 200] [--threads 1] [--batches 1 32]

Each model is compiled from one ONNX file with free axes into three libraries:
``build(graph, opt_level=3, specialize=[])`` (general: every free extent read from the input
shapes at run time, no static plan inside), ``build(graph, opt_level=3, specialize=[batch-1
shapes])`` (the dynamic library with a static plan for batch 1 beside the general one: what
``kiln compile`` builds by default for a model whose only free axis is the batch, and with
``--specialize`` for one with a free sequence too) and ``build(graph, opt_level=3,
input_shapes=...)`` for each batch size (static). Latency is the median of ``--runs`` runs, the
libraries (and onnxruntime, for scale) taking turns in blocks of runs
(``bench_models.interleaved_times``), so load from other processes falls on all alike.

Models: a scikit-learn pipeline (scaler + logistic regression) and a random forest, exported by
skl2onnx with an unnamed batch dim; a self-attention encoder (width 64, sequence 128) and a
two-layer LSTM (sequence 32) exported from PyTorch with a dynamic batch and sequence; a small
ResNet-style CNN with a dynamic batch.

Columns: milliseconds of the general, specialized and static libraries and of onnxruntime,
``gen/static`` and ``spec/static`` (the cost of run-time extents; 1.00 = none; at batch 32 the
specialized library runs its general plan) and ``ort/spec`` (above 1: the dynamic library is
faster than onnxruntime). The bar (issue 11): spec/static <= 1.10 at batch 1 for every model; a
missed bar prints FAIL and the exit status is 1.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "frameworks"),
                str(ROOT / "tests" / "models")]
from bench_models import interleaved_times  # noqa: E402

BAR = 1.10


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    inputs: Callable[[int], dict[str, np.ndarray]]  # batch -> inputs


def sklearn_models(folder: Path) -> list[Model]:
    from e2e import sklearn_onnx
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 20)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1)
    models = {
        "sklearn logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
        "sklearn forest": RandomForestClassifier(n_estimators=50, max_depth=8, random_state=0),
    }
    found = []
    for name, estimator in models.items():
        path = folder / f"{name.replace(' ', '_')}.onnx"
        path.write_bytes(sklearn_onnx(estimator.fit(x, y), x[:1]).SerializeToString())
        found.append(Model(name, path, lambda batch: {
            "X": np.random.default_rng(batch).standard_normal((batch, 20)).astype(np.float32)}))
    return found


def torch_models(folder: Path) -> list[Model]:
    import torch
    from torch_export import export
    from zoo import AttentionEncoder, SmallResNet, TwoLayerLSTM

    torch.manual_seed(0)
    found = []
    encoder = AttentionEncoder(1000, 128, hidden=64, heads=4).eval()
    path = export(encoder, [torch.randint(0, 1000, (2, 16))], folder / "encoder.onnx",
                  "torchscript", ["ids"], ["logits"], {"ids": {0: "batch", 1: "seq"}})
    found.append(Model("attention encoder s128", path, lambda batch: {
        "ids": np.random.default_rng(batch).integers(0, 1000, (batch, 128)).astype(np.int64)}))
    lstm = TwoLayerLSTM()
    path = export(lstm, [torch.zeros(2, 5, 8)], folder / "lstm.onnx", "torchscript",
                  ["sequence"], ["output", "hidden", "cell"],
                  {"sequence": {0: "batch", 1: "seq"}})
    found.append(Model("LSTM s32", path, lambda batch: {
        "sequence": np.random.default_rng(batch).standard_normal((batch, 32, 8)
                                                                ).astype(np.float32)}))
    cnn = SmallResNet().eval()
    path = export(cnn, [torch.zeros(2, 3, 32, 32)], folder / "cnn.onnx", "torchscript",
                  ["image"], ["logits"], {"image": {0: "batch"}})
    found.append(Model("ResNet-style CNN 32x32", path, lambda batch: {
        "image": np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)
                                                             ).astype(np.float32)}))
    return found


def median_ms(engines: dict[str, Callable[[dict[str, np.ndarray]], object]],
              feeds: dict[str, np.ndarray], runs: int) -> dict[str, float]:
    """Median milliseconds per engine on ``feeds``, the engines taking turns."""
    times = interleaved_times({name: functools.partial(run, feeds)
                               for name, run in engines.items()}, runs)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args(argv)

    import onnxruntime

    from kiln import runtime
    from kiln.compiler import build
    from kiln.frontends.onnx import load_onnx

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = args.threads
    print(f"{'model':26} {'batch':>5} {'gen ms':>8} {'spec ms':>8} {'static ms':>9} "
          f"{'ort ms':>8} {'gen/static':>10} {'spec/static':>11} {'ort/spec':>8}")
    failed = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = Path(tmp)
        for model in sklearn_models(folder) + torch_models(folder):
            graph = load_onnx(model.path)
            first = {n: a.shape for n, a in model.inputs(1).items()}
            dynamic = {
                kind: runtime.load(build(graph, opt_level=3, specialize=shapes).export(
                    folder / f"{model.path.stem}_{kind}.so"), threads=args.threads)
                for kind, shapes in (("general", []), ("specialized", [first]))}
            session = onnxruntime.InferenceSession(str(model.path), options,
                                                   providers=["CPUExecutionProvider"])
            for batch in args.batches:
                feeds = model.inputs(batch)
                static_lib = folder / f"{model.path.stem}_{batch}.so"
                build(graph, opt_level=3, input_shapes={n: a.shape for n, a in feeds.items()}
                      ).export(static_lib)
                static = runtime.load(static_lib, threads=args.threads)
                for library in dynamic.values():
                    for got, want in zip(library.run(feeds), static.run(feeds), strict=True):
                        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
                ms = median_ms({"general": dynamic["general"].run,
                                "specialized": dynamic["specialized"].run, "static": static.run,
                                "ort": lambda f, s=session: s.run(None, f)}, feeds, args.runs)
                general, special = ms["general"] / ms["static"], ms["specialized"] / ms["static"]
                verdict = "FAIL" if batch == 1 and special > BAR else ""
                if verdict:
                    failed.append(f"{model.name} batch {batch}")
                print(f"{model.name:26} {batch:5} {ms['general']:8.3f} {ms['specialized']:8.3f} "
                      f"{ms['static']:9.3f} {ms['ort']:8.3f} {general:10.2f} {special:11.2f} "
                      f"{ms['ort'] / ms['specialized']:8.2f} {verdict}", flush=True)
    print(f"bar: spec/static <= {BAR:.2f} at batch 1: "
          + ("all pass" if not failed else f"FAIL {failed}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
