"""Train the bundled digit classifier and export it to ONNX (run once; its outputs are committed).

A small CNN (Conv-ReLU-MaxPool-Conv-ReLU-MaxPool-Flatten-Gemm) learns scikit-learn's bundled
``load_digits`` set: 1797 real handwritten digits, 8x8 pixels, values 0..16 scaled to [0, 1].
A stratified 20% is held out and saved as ``digits_test.npz`` (``images`` float32 NCHW,
``labels`` int64); the model is saved as ``digits_cnn.onnx`` with input ``image``
(``[batch, 1, 8, 8]``, symbolic batch) and output ``logits`` (``[batch, 10]``).

Needs torch and scikit-learn (both in the ``dev`` extra). Seeds are fixed, so a rerun on the same
torch version reproduces the model up to floating-point summation order.

    python examples/digits/train_export.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 8x8 -> 4x4
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 4x4 -> 2x2
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
    )


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images (float32, [n, 1, 8, 8], in [0, 1]) and labels (int64)."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=SEED
    )
    return x_train, x_test, y_train, y_test


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int) -> None:
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(32):
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(images)).argmax(dim=1).numpy()
    return float((predicted == labels).mean())


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    # The TorchScript exporter gives a plain opset-17 graph with named symbolic batch dims.
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()

    torch.manual_seed(SEED)
    x_train, x_test, y_train, y_test = load_split()
    model = build_model()
    train(model, x_train, y_train, args.epochs)
    print(f"train accuracy {accuracy(model, x_train, y_train):.4f}")
    print(f"test accuracy  {accuracy(model, x_test, y_test):.4f} on {len(y_test)} held-out images")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    export(model, args.out_dir / "digits_cnn.onnx")
    np.savez_compressed(args.out_dir / "digits_test.npz", images=x_test, labels=y_test)
    print(f"wrote {args.out_dir / 'digits_cnn.onnx'} and {args.out_dir / 'digits_test.npz'}")


if __name__ == "__main__":
    main()
