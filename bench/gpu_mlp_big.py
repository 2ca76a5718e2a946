#!/usr/bin/env python3
"""bench/gpu_mlp_big.py — PyTorch's side of benchmark (b) (bench/mlp4096.dtl and
bench/gpu_train_dtl are dtl's): an MLP 4096 -> 4096 -> 4096 -> 10 with ReLU, cross-entropy,
Adam(lr=1e-3, fused=True), batch 4096, one fixed random batch copied from pinned host memory
at every step (non_blocking), timed between two torch.cuda.synchronize() calls, the loss
read only at the end. Precisions, as dtl's `precision =`:
  f32   fp32 matrix products, TF32 off (torch.backends.cuda.matmul.allow_tf32 = False)
  tf32  fp32 tensors, TF32 matrix products (allow_tf32 = True)
  bf16  torch.autocast(dtype=torch.bfloat16): bf16 matrix products, f32 master weights
Prints one JSON object per precision. Usage:
  gpu_mlp_big.py [--precision f32,tf32,bf16] [--steps N] [--warmup W] [--batch B]
Exit 77 without torch or a CUDA device.
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="f32,tf32,bf16")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--width", type=int, default=4096)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        print(f"gpu_mlp_big.py: no torch: {e}", file=sys.stderr)
        return 77
    if not torch.cuda.is_available():
        print("gpu_mlp_big.py: torch sees no CUDA device", file=sys.stderr)
        return 77
    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    xh = torch.rand(a.batch, a.width, generator=gen).pin_memory()
    yh = (torch.arange(a.batch) % 10).pin_memory()
    for prec in a.precision.split(","):
        torch.backends.cuda.matmul.allow_tf32 = prec == "tf32"
        torch.backends.cudnn.allow_tf32 = prec == "tf32"
        torch.manual_seed(0)
        w = a.width
        model = torch.nn.Sequential(torch.nn.Linear(w, w), torch.nn.ReLU(),
                                    torch.nn.Linear(w, w), torch.nn.ReLU(),
                                    torch.nn.Linear(w, 10)).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

        def step():
            x = xh.to(dev, non_blocking=True)
            y = yh.to(dev, non_blocking=True)
            if prec == "bf16":
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(x), y)
            else:
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

        for _ in range(a.warmup):
            loss = step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = step()
        last = float(loss.detach())
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(json.dumps({"impl": "torch eager", "mode": "async", "label": "mlp4096",
                          "precision": prec,
                          "batch": a.batch, "steps": a.steps, "seconds": round(dt, 4),
                          "steps_per_s": round(a.steps / dt, 2),
                          "samples_per_s": round(a.steps * a.batch / dt),
                          "ms_per_step": round(1e3 * dt / a.steps, 3), "loss": round(last, 5),
                          "torch": torch.__version__,
                          "device": torch.cuda.get_device_name(0)}), flush=True)
        del model, opt
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
