"""Writes data sets for `pipeforge run --data` and `pipeforge eval` as README.md shows (examples/write_dataset.py).

    data_sets.py samples OUT N I K SEED     x f32[N,I] ~ N(0, 1), labels i32[N] = argmax(x @ W) over K
                                            classes (W fixed by SEED): a task a classifier can learn
    data_sets.py tokens OUT COUNT VOCAB     COUNT uint16 ids 7 i % VOCAB, as nanoGPT's prepare.py writes them
    data_sets.py llmc OUT COUNT VOCAB       the same ids behind llm.c's 256 x int32 header (magic 20240520,
                                            version 1, the count)
    data_sets.py same-eval A B TOL          the "eval  loss X" lines of outputs A and B agree within TOL
                                            (relative), their accuracies exactly: prints "same within TOL: N
                                            evaluations", else exits 1
    data_sets.py constant W OUT NAME C      OUT is weights W with every value 0 but NAME[C] = 1: an MLP whose
                                            logits are its output bias then predicts class C for every sample
    data_sets.py share DATA C B             "accuracy P%": the share of the labels of DATA's whole batches of
                                            B that are C
"""

import json
import os
import re
import struct
import sys

import numpy as np

# The writer README.md shows, from examples/.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "examples"))
from write_dataset import save_file  # noqa: E402


def main(argv):
    if len(argv) == 7 and argv[1] == "samples":
        out, n, i, k, seed = argv[2], int(argv[3]), int(argv[4]), int(argv[5]), int(argv[6])
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((i, k))
        x = rng.standard_normal((n, i)).astype(np.float32)
        save_file({"x": x, "labels": (x @ w).argmax(1).astype(np.int32)}, out)
    elif len(argv) == 5 and argv[1] in ("tokens", "llmc"):
        out, count, vocab = argv[2], int(argv[3]), int(argv[4])
        ids = np.arange(count) * 7 % vocab
        if argv[1] == "tokens":
            np.array(ids, dtype=np.uint16).tofile(out)
        else:
            header = np.zeros(256, dtype=np.int32)
            header[:3] = [20240520, 1, count]
            with open(out, "wb") as f:
                f.write(header.tobytes())
                f.write(np.array(ids, dtype=np.uint16).tobytes())
    elif len(argv) == 5 and argv[1] == "same-eval":
        a, b = (evaluations(path) for path in argv[2:4])
        tol = float(argv[4])
        if not a or len(a) != len(b) or any(abs(x[0] - y[0]) > tol * max(abs(y[0]), 1e-6) or x[1] != y[1]
                                            for x, y in zip(a, b)):
            sys.exit(f"evaluations differ: {a} against {b}")
        print(f"same within {tol:g}: {len(a)} evaluations")
    elif len(argv) == 6 and argv[1] == "constant":
        weights, out, name, c = argv[2], argv[3], argv[4], int(argv[5])
        arrays = {key: np.zeros_like(a) for key, a in read_file(weights).items()}
        arrays[name][c] = 1
        save_file(arrays, out)
    elif len(argv) == 5 and argv[1] == "share":
        labels = read_file(argv[2])["labels"]
        b = int(argv[4])
        labels = labels[: len(labels) // b * b]
        print(f"accuracy {100 * np.mean(labels == int(argv[3])):.2f}%")
    else:
        sys.exit(__doc__)


def read_file(path):
    """The arrays of a safetensors file of F32 and I32 tensors, by name."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    dtypes = {"F32": np.float32, "I32": np.int32}
    return {name: np.frombuffer(data[8 + n + info["data_offsets"][0]:8 + n + info["data_offsets"][1]],
                                dtype=dtypes[info["dtype"]]).reshape(info["shape"]).copy()
            for name, info in header.items()}


def evaluations(path):
    with open(path) as f:
        return [(float(m.group(1)), m.group(2)) for m in
                (re.match(r"eval  .*loss ([0-9.]+)(  accuracy [0-9.]+%)?", line) for line in f) if m]


if __name__ == "__main__":
    main(sys.argv)
