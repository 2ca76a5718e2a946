#!/usr/bin/env python3
"""bench/mnist_mlp_torch.py — the PyTorch baseline for examples/mnist_mlp.dtl.

The same model (784 -> 128 -> ReLU -> 10), initialization family (Glorot-uniform weights,
zero biases), loss (cross-entropy from logits, mean over the batch), optimizer (Adam,
lr 1e-3) and batch (32, shuffled each epoch, the last partial batch dropped) on the same
Fashion-MNIST files, scaled by 1/255. Prints one JSON line per epoch with the epoch's
training time and the test accuracy, like `dtlc run --metrics`.

    python3 bench/mnist_mlp_torch.py [--epochs N] [--threads N] [--data DIR]
        [--hidden 128 | --hidden 2048,2048] [--batch 32] [--limit-train N] [--limit-test N]

--hidden lists the hidden layers' widths (each followed by a ReLU); --limit-train and
--limit-test take the first N rows, like `dtlc run`'s options of the same names.
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(d, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    sys.exit(f"mnist_mlp_torch: {stem} not found in {d}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=os.environ.get("DTL_DATA", "/usr/share/datasets"))
    ap.add_argument("--hidden", default="128")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--limit-train", type=int, default=0)
    ap.add_argument("--limit-test", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    d = os.path.join(a.data, "fashion-mnist")
    xtr = torch.tensor(read_idx(find(d, "train-images-idx3-ubyte")).reshape(-1, 784) / 255.0,
                       dtype=torch.float32)
    ytr = torch.tensor(read_idx(find(d, "train-labels-idx1-ubyte")), dtype=torch.int64)
    xte = torch.tensor(read_idx(find(d, "t10k-images-idx3-ubyte")).reshape(-1, 784) / 255.0,
                       dtype=torch.float32)
    yte = torch.tensor(read_idx(find(d, "t10k-labels-idx1-ubyte")), dtype=torch.int64)

    if a.limit_train > 0:
        xtr, ytr = xtr[:a.limit_train], ytr[:a.limit_train]
    if a.limit_test > 0:
        xte, yte = xte[:a.limit_test], yte[:a.limit_test]
    layers, width = [], 784
    for h in (int(w) for w in a.hidden.split(",")):
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    for m in model:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    bs = a.batch
    steps = xtr.shape[0] // bs
    for epoch in range(1, a.epochs + 1):
        perm = torch.randperm(xtr.shape[0])
        t0 = time.perf_counter()
        total = 0.0
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            opt.zero_grad()
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            logits = model(xte)
            acc = (logits.argmax(1) == yte).float().mean().item()
            test_loss = loss_fn(logits, yte).item()
        print(json.dumps({"epoch": epoch, "train_loss": total / steps, "test_loss": test_loss,
                          "test_accuracy": acc, "seconds": seconds,
                          "samples_per_s": steps * bs / seconds, "threads": a.threads}),
              flush=True)


if __name__ == "__main__":
    main()
