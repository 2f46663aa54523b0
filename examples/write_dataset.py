"""Writes a data set for `pipeforge run --data` with numpy alone.

save_file(arrays, path) writes what safetensors.numpy.save_file writes (the format `pipeforge run --data` reads: an
8-byte header length, a JSON header, the arrays' bytes in order), for a Python without the safetensors package.
Each array holds one model input, its N samples along the first axis:

    import numpy as np
    from write_dataset import save_file     # or: from safetensors.numpy import save_file
    save_file({"x": x.astype(np.float32), "labels": labels.astype(np.int32)}, "train.safetensors")
    np.array(ids, dtype=np.uint16).tofile("train.bin")   # token ids, as nanoGPT writes them

Run as a script, it writes a small classification task for examples/mlp.pf bound to I=32, K=10:
train.safetensors (1,000 samples) and val.safetensors (200).
"""

import json
import struct
import sys

import numpy as np

DTYPES = {"float32": "F32", "float64": "F64", "int32": "I32", "int64": "I64", "bool": "BOOL"}


def save_file(arrays, path):
    """Writes `arrays` ({name: numpy array}) to `path` in the safetensors format."""
    header, offset = {}, 0
    for name, a in arrays.items():
        header[name] = {"dtype": DTYPES[a.dtype.name], "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the data begins 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for a in arrays.values():
            f.write(np.ascontiguousarray(a).tobytes())


def main():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 10))
    for path, n in (("train.safetensors", 1000), ("val.safetensors", 200)):
        x = rng.standard_normal((n, 32)).astype(np.float32)
        save_file({"x": x, "labels": (x @ w).argmax(1).astype(np.int32)}, path)
        print(f"wrote {path}: x f32[{n},32], labels i32[{n}]")


if __name__ == "__main__":
    sys.exit(main())
