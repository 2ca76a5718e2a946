#!/usr/bin/env python3
"""bench/gpu_epoch.py — PyTorch's side of benchmark (c): one full Fashion-MNIST epoch of the
example MLP (examples/mnist_mlp.dtl: 784 -> 128 -> ReLU -> 10, cross-entropy, Adam(lr=1e-3),
batch 32, shuffled), INCLUDING data loading, then the test accuracy — what
`dtlc run examples/mnist_mlp.dtl --backend cuda --epochs 1` does.

Data: the four IDX .gz files under DATA/fashion-mnist (decompressed and decoded here, pixels
scaled by 1/255), a TensorDataset and a torch DataLoader(batch_size=32, shuffle=True) whose
batches are copied to the GPU (pin_memory, non_blocking). fp32, TF32 off. The loss is not
read every step (PyTorch's fastest honest loop; dtlc reads it every step for its progress
line). Prints one JSON object: seconds for loading, training and evaluating, and the total
from the first file read to the accuracy (scripts/gpu-check.sh also times the whole process,
interpreter start and `import torch` included).
Usage: gpu_epoch.py [--data DIR] [--epochs 1] [--batch 32]. Exit 77 without torch/CUDA.
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time


def read_idx(path, np):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("DTL_DATA", "/usr/share/datasets"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    try:
        import numpy as np
        import torch
        import torch.nn.functional as F
        from torch.utils.data import DataLoader, TensorDataset
    except ImportError as e:
        print(f"gpu_epoch.py: no torch/numpy: {e}", file=sys.stderr)
        return 77
    if not torch.cuda.is_available():
        print("gpu_epoch.py: torch sees no CUDA device", file=sys.stderr)
        return 77
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    torch.cuda.init()
    d = os.path.join(a.data, "fashion-mnist")
    t_start = time.perf_counter()
    xs = read_idx(os.path.join(d, "train-images-idx3-ubyte.gz"), np)
    ys = read_idx(os.path.join(d, "train-labels-idx1-ubyte.gz"), np)
    txs = read_idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"), np)
    tys = read_idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"), np)
    x = torch.from_numpy(xs.reshape(len(xs), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(ys.astype(np.int64))
    tx = torch.from_numpy(txs.reshape(len(txs), -1).astype(np.float32) / 255.0)
    ty = torch.from_numpy(tys.astype(np.int64))
    loader = DataLoader(TensorDataset(x, y), batch_size=a.batch, shuffle=True,
                        pin_memory=True)
    t_loaded = time.perf_counter()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = 0
    for _ in range(a.epochs):
        for xb, yb in loader:
            xb = xb.to(dev, non_blocking=True)
            yb = yb.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps += 1
    last = float(loss.detach())
    torch.cuda.synchronize()
    t_trained = time.perf_counter()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(tx), 1000):
            xb = tx[i:i + 1000].to(dev)
            correct += int((model(xb).argmax(1).cpu() == ty[i:i + 1000]).sum())
    t_end = time.perf_counter()
    print(json.dumps({"impl": "torch eager + DataLoader", "mode": "epoch", "epochs": a.epochs,
                      "batch": a.batch, "steps": steps,
                      "load_seconds": round(t_loaded - t_start, 3),
                      "train_seconds": round(t_trained - t_loaded, 3),
                      "eval_seconds": round(t_end - t_trained, 3),
                      "total_seconds": round(t_end - t_start, 3),
                      "samples_per_s": round(steps * a.batch / (t_trained - t_loaded)),
                      "loss": round(last, 5), "test_accuracy": correct / len(tx),
                      "torch": torch.__version__,
                      "device": torch.cuda.get_device_name(0)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
