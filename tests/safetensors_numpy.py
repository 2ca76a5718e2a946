#!/usr/bin/env python3
"""tests/safetensors_numpy.py — dtl's safetensors files against an independent reader and
writer made of nothing but python3's json and numpy (no dtl code, no safetensors package).

1. `ckpt_writer fixture F` (dtl writes): read F here; check the layout (8-byte length, header
   padded with spaces to an 8-byte data start, offsets contiguous in header order and covering
   the buffer) and every value against the same formulas ckpt_writer.c uses.
2. This script writes a file the way other writers do (its own tensor order, an unpadded
   header, an F64 at an odd offset, \\uXXXX escapes with surrogate pairs) and `ckpt_writer
   dump F` (dtl reads) must give back every name, dtype, shape, byte and metadata entry.
3. A truncated copy must be refused by dtl with a "truncated" message.

Usage: safetensors_numpy.py [CKPT_WRITER]; otherwise $CKPT_WRITER, else
$DTL_BUILDDIR/tests/unit/ckpt_writer. Exit 0 pass, 1 fail, 77 skip (no numpy), 99 setup error.
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

failures = 0


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


def writer_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.environ.get("CKPT_WRITER"):
        return os.environ["CKPT_WRITER"]
    return os.path.join(os.environ.get("DTL_BUILDDIR", "."), "tests", "unit", "ckpt_writer")


def bf16_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


# safetensors dtype -> numpy dtype (BF16 read as raw uint16, converted by hand)
NP = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "BF16": "<u2", "I32": "<i4", "I64": "<i8",
      "U8": "u1", "BOOL": "?"}


def read_safetensors(path):
    """An independent reader: returns (header dict in file order, data bytes, header bytes)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    hbytes = raw[8:8 + n]
    header = json.loads(hbytes.decode("utf-8"))
    return header, raw[8 + n:], hbytes


def tensor(entry, data):
    b, e = entry["data_offsets"]
    arr = np.frombuffer(data[b:e], dtype=NP[entry["dtype"]])
    return arr.reshape(entry["shape"])


def test_dtl_writes(w, tmp):
    path = os.path.join(tmp, "fixture.safetensors")
    r = subprocess.run([w, "fixture", path], capture_output=True, text=True)
    check(r.returncode == 0, f"ckpt_writer fixture failed: {r.stderr}")
    if r.returncode != 0:
        return
    header, data, hbytes = read_safetensors(path)

    # Layout: the data starts 8-aligned; the padding is spaces only, less than 8 of them.
    check((8 + len(hbytes)) % 8 == 0, "data does not start at a multiple of 8")
    stripped = hbytes.rstrip(b" ")
    check(len(hbytes) - len(stripped) < 8, "more than 7 bytes of padding")
    check(stripped.endswith(b"}"), "header padding is not spaces after the JSON")
    # __metadata__ first, then tensors in the order written, offsets contiguous from 0.
    keys = list(header)
    check(keys[0] == "__metadata__", "__metadata__ is not first")
    names = keys[1:]
    want_names = ["f32", "u8", "f64", "f16", "bf16", "i32", "i64", "bool", "scalar", "empty",
                  'weird "name" \\ é 😀']
    check(names == want_names, f"tensor names/order: {names}")
    pos = 0
    for name in names:
        b, e = header[name]["data_offsets"]
        check(b == pos, f"{name}: begins at {b}, expected {pos}")
        pos = e
    check(pos == len(data), f"tensors cover {pos} of {len(data)} data bytes")

    meta = header["__metadata__"]
    check(meta == {"format": "pt", "iteration": "7",
                   "note": 'line1\nline2\ttab "q" \\ é 日本 😀', "ctrl": "\x01\x1f", "pad": "x"},
          f"metadata: {meta!r}")

    i = np.arange
    want = {
        "f32": ("F32", [2, 3], (i(6) * 0.5 - 1.25).reshape(2, 3)),
        "u8": ("U8", [5], (i(5) * 61 + 3) % 256),
        "f64": ("F64", [5], i(5) / 3.0),
        "f16": ("F16", [4], 1 + i(4) / 1024),
        "i32": ("I32", [2, 2], (i(4) * 7 - 10).reshape(2, 2)),
        "i64": ("I64", [3], (i(3) - 1) * 5000000000),
        "bool": ("BOOL", [2, 3], (i(6) % 3 == 0).reshape(2, 3)),
        "scalar": ("F32", [], np.array(42.5)),
        "empty": ("F32", [0, 3], np.zeros((0, 3))),
        'weird "name" \\ é 😀': ("F64", [1], np.array([2.5])),
    }
    for name, (dt, shape, values) in want.items():
        e = header[name]
        check(e["dtype"] == dt and e["shape"] == shape, f"{name}: {e}")
        got = tensor(e, data)
        check(got.shape == tuple(shape) and np.array_equal(got.astype(np.float64),
                                                            np.asarray(values, np.float64)),
              f"{name}: values {got!r}, expected {values!r}")
    e = header["bf16"]
    check(e["dtype"] == "BF16" and e["shape"] == [3], f"bf16: {e}")
    check(np.array_equal(bf16_to_f32(tensor(e, data)), 1 + np.arange(3) / 128),
          "bf16 values")
    check(tensor(header["bool"], data).dtype == np.bool_, "bool dtype")


def write_safetensors(path, tensors, metadata, pad=False):
    """An independent writer. tensors: list of (name, dtype, shape, bytes) in data order;
    the header lists them in reverse (offsets need not follow header order)."""
    header = {}
    pos = 0
    entries = []
    for name, dt, shape, raw in tensors:
        entries.append((name, {"dtype": dt, "shape": shape, "data_offsets": [pos, pos + len(raw)]}))
        pos += len(raw)
    for name, entry in reversed(entries):
        header[name] = entry
    header["__metadata__"] = metadata
    text = json.dumps(header, ensure_ascii=True).encode()  # \\uXXXX and surrogate pairs
    if pad:
        text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors))
    return [name for name, _ in reversed(entries)]


def test_dtl_reads(w, tmp):
    rng = np.random.default_rng(1234)
    tensors = [
        ("odd bytes", "U8", [3], bytes([1, 2, 250])),
        ("f64 at offset 3", "F64", [2, 2], rng.standard_normal(4).astype("<f8").tobytes()),
        ("f32", "F32", [3, 1, 2], rng.standard_normal(6).astype("<f4").tobytes()),
        ("f16", "F16", [5], rng.standard_normal(5).astype("<f2").tobytes()),
        ("bf16", "BF16", [2], np.array([0x3f80, 0xc000], "<u2").tobytes()),
        ("i32", "I32", [4], np.array([-(2**31), -1, 0, 2**31 - 1], "<i4").tobytes()),
        ("i64", "I64", [2], np.array([-(2**63), 2**63 - 1], "<i8").tobytes()),
        ("bool", "BOOL", [3], np.array([True, False, True]).tobytes()),
        ("scalar", "I64", [], np.array(-5, "<i8").tobytes()),
        ("zero", "F32", [2, 0], b""),
        ("名前 😀 \"q\" \\ \t", "U8", [1], b"\x7f"),
    ]
    metadata = {"smile 😀": "日本 \U0001f600 \"x\" \\ \n", "ascii": "plain", "empty": ""}
    path = os.path.join(tmp, "python.safetensors")
    order = write_safetensors(path, tensors, metadata)
    r = subprocess.run([w, "dump", path], capture_output=True, text=True, encoding="utf-8")
    check(r.returncode == 0, f"ckpt_writer dump failed: {r.stderr}")
    if r.returncode != 0:
        return
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    got_t = [x for x in lines if "name" in x]
    got_m = [x for x in lines if "meta" in x]
    check([x["name"] for x in got_t] == order, f"dtl's tensor order: {[x['name'] for x in got_t]}")
    by_name = {t[0]: t for t in tensors}
    for x in got_t:
        name, dt, shape, raw = by_name[x["name"]]
        check(x["dtype"] == dt, f"{name}: dtype {x['dtype']}, expected {dt}")
        check(x["shape"] == shape, f"{name}: shape {x['shape']}, expected {shape}")
        check(bytes.fromhex(x["hex"]) == raw, f"{name}: bytes differ")
    check({x["meta"]: x["value"] for x in got_m} == metadata, f"dtl's metadata: {got_m!r}")
    check([x["meta"] for x in got_m] == list(metadata), "metadata order")

    # The same, with a padded header: the usual layout.
    write_safetensors(path, tensors, metadata, pad=True)
    r = subprocess.run([w, "dump", path], capture_output=True, text=True, encoding="utf-8")
    check(r.returncode == 0 and len(r.stdout.splitlines()) == len(tensors) + len(metadata),
          f"padded header: {r.stderr}")

    # Truncated by one byte: refused, and the message says so and names the file.
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[:-1])
    r = subprocess.run([w, "dump", path], capture_output=True, text=True)
    check(r.returncode == 1 and path in r.stderr and "truncated" in r.stderr,
          f"truncated file: rc {r.returncode}, stderr {r.stderr!r}")


def main():
    w = writer_path()
    if not os.access(w, os.X_OK):
        print(f"safetensors_numpy.py: no ckpt_writer at {w} (pass it or set CKPT_WRITER)")
        return 99
    with tempfile.TemporaryDirectory(prefix="dtl-st-np.") as tmp:
        test_dtl_writes(w, tmp)
        test_dtl_reads(w, tmp)
    print(f"safetensors_numpy.py: {'FAIL' if failures else 'PASS'} ({failures} failed)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
