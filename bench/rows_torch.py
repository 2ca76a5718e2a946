#!/usr/bin/env python3
"""bench/rows_torch.py — PyTorch's side of bench/rows.sh: softmax or layer norm over the last
axis of x f32[ROWS, COLS], forward and backward, as bench/rows.c builds it in dtl:
y = softmax(x, -1) or layer_norm(x, (COLS,), gamma, beta, 1e-5), loss = (y * w).sum(),
loss.backward() (gradients of x, and of gamma and beta). Warm-up run, then rounds of runs for
at least --min-ms of wall time; the fastest round's time per run is reported, in the format
of bench/rows.c:  "torch OP ROWSxCOLS ms=… GB/s=…" (GB/s: one read of x and w, one write of
dx).

    bench/rows_torch.py OP ROWS COLS [--threads N] [--min-ms MS]
"""
import argparse
import sys
import time

try:
    import torch
except ImportError:
    print("rows_torch: no PyTorch (Debian: python3-torch)", file=sys.stderr)
    sys.exit(77)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=["softmax", "layer_norm"])
    ap.add_argument("rows", type=int)
    ap.add_argument("cols", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-ms", type=float, default=300)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    x = (torch.rand(a.rows, a.cols) * 6 - 3).requires_grad_()
    w = torch.rand(a.rows, a.cols) - 0.5
    gamma = (torch.rand(a.cols) + 0.5).requires_grad_()
    beta = (torch.rand(a.cols) * 2 - 1).requires_grad_()

    def step():
        x.grad = None
        gamma.grad = None
        beta.grad = None
        if a.op == "softmax":
            y = torch.softmax(x, -1)
        else:
            y = torch.nn.functional.layer_norm(x, (a.cols,), gamma, beta, 1e-5)
        loss = (y * w).sum()
        loss.backward()
        return loss

    loss = step()
    best, per, start = 1e30, 1, time.perf_counter()
    while (time.perf_counter() - start) * 1e3 < a.min_ms:
        t0 = time.perf_counter()
        for _ in range(per):
            loss = step()
        el = time.perf_counter() - t0
        best = min(best, el / per)
        if el < 0.02:
            per *= 2
    nbytes = 3.0 * a.rows * a.cols * 4
    print("torch %s %dx%d ms=%.4f GB/s=%.2f loss=%.6g" %
          (a.op, a.rows, a.cols, best * 1e3, nbytes / best * 1e-9, float(loss)))


if __name__ == "__main__":
    main()
