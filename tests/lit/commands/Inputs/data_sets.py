"""Writes data sets for `pipeforge run --data` and `pipeforge eval` as README.md shows (examples/write_dataset.py).

    data_sets.py samples OUT N I K SEED     x f32[N,I] ~ N(0, 1), labels i32[N] = argmax(x @ W) over K
                                            classes (W fixed by SEED): a task a classifier can learn
    data_sets.py tokens OUT COUNT VOCAB     COUNT uint16 ids 7 i % VOCAB, as nanoGPT's prepare.py writes them
    data_sets.py llmc OUT COUNT VOCAB       the same ids behind llm.c's 256 x int32 header (magic 20240520,
                                            version 1, the count)
    data_sets.py same-eval A B TOL          the "eval  loss X" lines of outputs A and B agree within TOL
                                            (relative): prints "same within TOL: N evaluations", else exits 1
"""

import os
import re
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
        if not a or len(a) != len(b) or any(abs(x - y) > tol * max(abs(y), 1e-6) for x, y in zip(a, b)):
            sys.exit(f"evaluations differ: {a} against {b}")
        print(f"same within {tol:g}: {len(a)} evaluations")
    else:
        sys.exit(__doc__)


def evaluations(path):
    with open(path) as f:
        return [float(m.group(1)) for m in (re.match(r"eval  .*loss ([0-9.]+)", line) for line in f) if m]


if __name__ == "__main__":
    main(sys.argv)
