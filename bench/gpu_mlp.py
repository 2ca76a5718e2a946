#!/usr/bin/env python3
"""bench/gpu_mlp.py — PyTorch's side of the GPU benchmark (bench/gpu_mlp_dtl.c is dtl's).

The same model and step as examples/mnist_mlp.dtl: 784 -> 128 -> ReLU -> 10, cross-entropy,
Adam(lr=1e-3), batch 32, one fixed random batch copied from pinned host memory at every step
(non_blocking), fp32 with TF32 off. Train steps per second, timed between two
torch.cuda.synchronize() calls, the loss read only at the end ("async", as dtl's async
figure). Modes:
  eager     plain PyTorch; Adam with its default CUDA implementation (foreach)
  compile   torch.compile(mode="reduce-overhead") on forward+loss (CUDA Graphs for the
            forward and AOT-compiled backward), Adam(fused=True) (one kernel): PyTorch's
            fastest standard recipe for a small model
Prints one JSON object per mode. Usage: gpu_mlp.py [--mode eager|compile|all] [--steps N]
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="all", choices=["eager", "compile", "all"])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"gpu_mlp.py: no torch: {e}", file=sys.stderr)
        return 77
    if not torch.cuda.is_available():
        print("gpu_mlp.py: torch sees no CUDA device", file=sys.stderr)
        return 77
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    xh = torch.rand(a.batch, 784, generator=gen).pin_memory()
    yh = (torch.arange(a.batch) % 10).pin_memory()
    modes = ["eager", "compile"] if a.mode == "all" else [a.mode]
    for mode in modes:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                    torch.nn.Linear(128, 10)).to(dev)
        if mode == "eager":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def fwd(x, y):
                return F.cross_entropy(model(x), y)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

            def loss_fn(x, y):
                return F.cross_entropy(model(x), y)
            fwd = torch.compile(loss_fn, mode="reduce-overhead")

        def step():
            x = xh.to(dev, non_blocking=True)
            y = yh.to(dev, non_blocking=True)
            loss = fwd(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        t0 = time.perf_counter()
        for _ in range(a.warmup):
            if mode == "compile":
                torch.compiler.cudagraph_mark_step_begin()
            loss = step()
        torch.cuda.synchronize()
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(a.steps):
            if mode == "compile":
                torch.compiler.cudagraph_mark_step_begin()
            loss = step()
        last = float(loss.detach())
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(json.dumps({"impl": f"torch {mode}", "mode": "async", "batch": a.batch,
                          "steps": a.steps, "seconds": round(dt, 4),
                          "steps_per_s": round(a.steps / dt, 1), "loss": round(last, 5),
                          "warmup_seconds": round(warm, 1),
                          "torch": torch.__version__,
                          "device": torch.cuda.get_device_name(0)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
