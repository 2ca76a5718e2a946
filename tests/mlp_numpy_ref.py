#!/usr/bin/env python3
"""tests/mlp_numpy_ref.py — dtl's training step against an independent NumPy one.

A two-layer MLP (12 -> 10 -> ReLU -> 3), softmax cross-entropy from the logits averaged over
the batch, and Adam with PyTorch's formulas (torch.optim.Adam, no weight decay), written here
in float64 NumPy and nothing else. Both sides start from the same weights: dtl draws them and
saves them after 0 steps (`dtlc run --dtype f64 --steps 0 --save init.safetensors`); this
script reads that file with its own safetensors reader (json + numpy). Both take the same
batches: a CSV of 96 rows written here with every value printed exactly (%.17g), read in file
order (--no-shuffle), 8 rows a step, so the 20 steps cross an epoch boundary. Then dtl runs
the 20 steps in f64 (`--dtype f64 --steps 20 --save final.safetensors --metrics m.jsonl`) and
every parameter and Adam moment (fc1.w, fc1.w.m, fc1.w.v, …) must agree with this script's to
1e-5 relative (max |a - b| / max |b| per tensor; in practice ~1e-15), and so must the mean
training losses of the two epochs in the metrics file.

Usage: mlp_numpy_ref.py [DTLC]; otherwise $DTLC, else $DTL_BUILDDIR/dtlc, else ./dtlc.
Exit 0 pass, 1 fail, 77 skip (no numpy), 99 setup error.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("SKIP: numpy is not installed (python3 -m pip install numpy, or apt python3-numpy)")
    sys.exit(77)

ROWS, FEATURES, HIDDEN, CLASSES, BATCH, STEPS = 96, 12, 10, 3, 8, 20
LR, BETA1, BETA2, EPS = 1e-2, 0.9, 0.999, 1e-8
TOL = 1e-5

MODEL = """# written by tests/mlp_numpy_ref.py
use nn

model Net() {
    fc1 = nn.Dense(%d, %d)
    fc2 = nn.Dense(%d, %d)
    fn forward(x: f32[B, %d]) -> f32[B, %d] = fc2(relu(fc1(x)))
}

dataset toy = csv("train.csv", label = "label")

train Net() {
    data      = toy.train
    batch     = %d
    loss      = cross_entropy(forward(x), y)
    optimizer = adam(lr = %r)
    epochs    = 5
}
""" % (FEATURES, HIDDEN, HIDDEN, CLASSES, FEATURES, CLASSES, BATCH, LR)


def dtlc_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.environ.get("DTLC"):
        return os.environ["DTLC"]
    return os.path.join(os.environ.get("DTL_BUILDDIR", "."), "dtlc")


def read_safetensors(path):
    """{name: ndarray} and the metadata, from the format's definition alone."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    kinds = {"F64": "<f8", "F32": "<f4", "I64": "<i8", "I32": "<i4"}
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=kinds[t["dtype"]]).reshape(t["shape"])
    return out, meta


def run(dtlc, cwd, *args):
    r = subprocess.run([dtlc, "run", "model.dtl", "--progress", "none"] + list(args), cwd=cwd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if r.returncode != 0:
        print("FAIL: dtlc run %s exited %d:\n%s" % (" ".join(args), r.returncode, r.stderr))
        sys.exit(1)
    return r.stdout


def reference(p, x, y):
    """STEPS Adam steps from params p; returns the params, moments and each step's loss."""
    p = {k: v.astype(np.float64).copy() for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    losses = []
    per_epoch = ROWS // BATCH
    for t in range(1, STEPS + 1):
        s = (t - 1) % per_epoch
        xb, yb = x[s * BATCH:(s + 1) * BATCH], y[s * BATCH:(s + 1) * BATCH]
        h = xb @ p["fc1.w"] + p["fc1.b"]
        a = np.maximum(h, 0)
        z = a @ p["fc2.w"] + p["fc2.b"]
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        losses.append(np.mean(lse - z[np.arange(BATCH), yb]))
        soft = np.exp(z - lse[:, None])
        dz = soft.copy()
        dz[np.arange(BATCH), yb] -= 1
        dz /= BATCH
        g = {"fc2.w": a.T @ dz, "fc2.b": dz.sum(axis=0)}
        dh = (dz @ p["fc2.w"].T) * (h > 0)
        g["fc1.w"] = xb.T @ dh
        g["fc1.b"] = dh.sum(axis=0)
        for k in p:
            m[k] = BETA1 * m[k] + (1 - BETA1) * g[k]
            v[k] = BETA2 * v[k] + (1 - BETA2) * g[k] * g[k]
            bc1 = 1 - BETA1 ** t
            bc2 = 1 - BETA2 ** t
            denom = np.sqrt(v[k]) / np.sqrt(bc2) + EPS
            p[k] = p[k] - (LR / bc1) * m[k] / denom
    return p, m, v, losses


def main():
    dtlc = os.path.abspath(dtlc_path())
    if not os.access(dtlc, os.X_OK):
        print("mlp_numpy_ref.py: no dtlc at %s (set DTLC or DTL_BUILDDIR)" % dtlc)
        return 99
    rng = np.random.RandomState(1234)
    x = rng.uniform(-1, 1, size=(ROWS, FEATURES))
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="dtl-npref.") as d:
        with open(os.path.join(d, "model.dtl"), "w") as f:
            f.write(MODEL)
        with open(os.path.join(d, "train.csv"), "w") as f:
            f.write("label," + ",".join("f%d" % j for j in range(FEATURES)) + "\n")
            for i in range(ROWS):
                f.write("%d," % y[i] + ",".join("%.17g" % val for val in x[i]) + "\n")
        run(dtlc, d, "--dtype", "f64", "--no-shuffle", "--steps", "0", "--save", "init.st")
        init, _ = read_safetensors(os.path.join(d, "init.st"))
        names = ["fc1.w", "fc1.b", "fc2.w", "fc2.b"]
        for k in names:
            if k not in init or init[k].dtype != np.float64:
                print("FAIL: init.st lacks %s in f64 (has %s)" % (k, sorted(init)))
                return 1
        run(dtlc, d, "--dtype", "f64", "--no-shuffle", "--steps", str(STEPS), "--save",
            "final.st", "--metrics", "m.jsonl")
        final, meta = read_safetensors(os.path.join(d, "final.st"))
        with open(os.path.join(d, "m.jsonl")) as f:
            metrics = [json.loads(line) for line in f]
    p, m, v, losses = reference({k: init[k] for k in names}, x, y)
    if meta.get("step") != str(STEPS):
        print("FAIL: final.st is at step %r, expected %d" % (meta.get("step"), STEPS))
        failures += 1
    worst = 0.0
    for k in names:
        for name, want in ((k, p[k]), (k + ".m", m[k]), (k + ".v", v[k])):
            got = final.get(name)
            if got is None or got.shape != want.shape:
                print("FAIL: %s: dtl has %s, expected shape %s" %
                      (name, None if got is None else got.shape, want.shape))
                failures += 1
                continue
            rel = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300)
            worst = max(worst, rel)
            if not rel <= TOL:
                print("FAIL: %s differs from NumPy's by %.3g relative (limit %g)" % (name, rel, TOL))
                failures += 1
        if np.array_equal(p[k], init[k]):
            print("FAIL: %s did not change in %d steps" % (k, STEPS))
            failures += 1
    per_epoch = ROWS // BATCH
    want_losses = [np.mean(losses[:per_epoch]), np.mean(losses[per_epoch:])]
    got_losses = [e.get("train_loss") for e in metrics]
    if len(got_losses) != 2:
        print("FAIL: expected 2 metrics lines (a full epoch and a partial one), got %d" %
              len(got_losses))
        failures += 1
    else:
        for i in range(2):
            rel = abs(got_losses[i] - want_losses[i]) / abs(want_losses[i])
            if not rel <= TOL:
                print("FAIL: epoch %d train_loss %r, NumPy's %r" % (i + 1, got_losses[i],
                                                                     want_losses[i]))
                failures += 1
    if failures:
        return 1
    print("PASS: %d Adam steps of a 12-10-3 MLP in f64 agree with NumPy (worst %.2g relative)"
          % (STEPS, worst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
