"""Makes and edits safetensors files for the `pipeforge run` tests (stdlib only).

    run_safetensors.py drop IN OUT NAME          OUT is IN without tensor NAME
    run_safetensors.py misshape IN OUT NAME      OUT is IN with NAME one element longer
        IN and OUT are safetensors files, or checkpoint folders (index.json
        and its shards), where every shard holding NAME is edited
    run_safetensors.py batch OUT NAME=DTYPE:D0,D1... [NAME[I]=V ...]
        a batch: f32 values in [-1, 1) from a fixed generator, i32 values
        i % 2; NAME[I]=V then sets element I of NAME (flat) to V.
    run_safetensors.py compare A B TOL
        every f32 tensor of B is in A, with max |a - b| <= TOL * max |b|
        (each tensor against its own largest magnitude): prints "same within
        TOL: N tensors", else one line per tensor that differs, exit 1.

The layout is the one runtime/safetensors.h describes: an 8-byte header
length, a JSON header ("__metadata__" kept), the tensors' bytes in order.
"""

import json
import os
import re
import struct
import sys

SIZES = {"F32": 4, "I32": 4, "F64": 8, "I64": 8, "BOOL": 1}


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    meta = header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], body[begin:end])
    return tensors, meta


def write(path, tensors, meta):
    header = {}
    if meta is not None:
        header["__metadata__"] = meta
    offset = 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(tensors[n][2] for n in sorted(tensors)))


def batch(out, specs):
    tensors = {}
    state = 12345
    for spec in specs:
        setting = re.fullmatch(r"(.+)\[(\d+)\]=(-?[0-9.]+)", spec)
        if setting:
            name, index, value = setting.group(1), int(setting.group(2)), setting.group(3)
            dtype, shape, data = tensors[name]
            fmt = "<f" if dtype == "F32" else "<i"
            packed = struct.pack(fmt, float(value) if dtype == "F32" else int(value))
            tensors[name] = (dtype, shape, data[:4 * index] + packed + data[4 * index + 4:])
            continue
        name, rest = spec.split("=")
        dtype, dims = rest.split(":")
        shape = [int(d) for d in dims.split(",")]
        count = 1
        for d in shape:
            count *= d
        values = []
        for i in range(count):
            if dtype == "f32":
                state = (state * 1664525 + 1013904223) % 2**32
                values.append(struct.pack("<f", (state >> 8) / 2**24 * 2 - 1))
            elif dtype == "i32":
                values.append(struct.pack("<i", i % 2))
            else:
                sys.exit(f"run_safetensors.py: dtype {dtype}: only f32 and i32")
        tensors[name] = (dtype.upper(), shape, b"".join(values))
    write(out, tensors, None)


def floats(dtype, raw):
    if dtype != "F32":
        sys.exit(f"run_safetensors.py: compare reads F32 tensors, not {dtype}")
    return struct.unpack(f"<{len(raw) // 4}f", raw)


def compare(a_path, b_path, tol):
    a, _ = read(a_path)
    b, _ = read(b_path)
    bad = []
    for name, (dtype, shape, raw) in sorted(b.items()):
        if name not in a:
            bad.append(f"{name}: missing from {a_path}")
            continue
        if a[name][1] != shape:
            bad.append(f"{name}: shape {a[name][1]} against {shape}")
            continue
        x, y = floats(a[name][0], a[name][2]), floats(dtype, raw)
        scale = max([abs(v) for v in y] + [1e-6])
        worst = max([abs(p - q) for p, q in zip(x, y)] + [0.0]) / scale
        if worst > tol:
            bad.append(f"{name}: max |a - b| / max |b| = {worst:.3g}")
    for line in bad:
        print(line)
    if bad:
        sys.exit(1)
    print(f"same within {tol:g}: {len(b)} tensors")


def main(argv):
    if len(argv) >= 3 and argv[1] == "batch":
        return batch(argv[2], argv[3:])
    if len(argv) == 5 and argv[1] == "compare":
        return compare(argv[2], argv[3], float(argv[4]))
    if len(argv) != 5 or argv[1] not in ("drop", "misshape"):
        sys.exit(__doc__)
    command, source, out, name = argv[1:]
    if os.path.isdir(source):
        return edit_checkpoint(command, source, out, name)
    tensors, meta = read(source)
    if name not in tensors:
        sys.exit(f"run_safetensors.py: {source} has no tensor {name}")
    edit(command, tensors, name)
    write(out, tensors, meta)


def edit(command, tensors, name):
    if command == "drop":
        del tensors[name]
    else:
        dtype, shape, data = tensors[name]
        size = SIZES[dtype]
        count = len(data) // size
        tensors[name] = (dtype, [count + 1], data + bytes(size))


def edit_checkpoint(command, source, out, name):
    """Copies checkpoint folder SOURCE to OUT with NAME edited in every shard."""
    with open(os.path.join(source, "index.json")) as f:
        index = json.load(f)
    os.makedirs(out, exist_ok=True)
    found = False
    for shard in index["shards"]:
        tensors, meta = read(os.path.join(source, shard["file"]))
        if name in tensors:
            found = True
            edit(command, tensors, name)
            if command == "drop":
                shard["tensors"].remove(name)
        write(os.path.join(out, shard["file"]), tensors, meta)
    if not found:
        sys.exit(f"run_safetensors.py: {source} has no tensor {name}")
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=2)


if __name__ == "__main__":
    main(sys.argv)
