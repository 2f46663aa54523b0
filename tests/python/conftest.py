"""What the Python module's tests share: the command to compare with, the
small mlp, and safetensors files written and read with numpy alone.

ctest runs them with PYTHONPATH at the build's python/ folder and
PF_PIPEFORGE naming the pipeforge executable built beside the module.
"""

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

SOURCE_DIR = Path(__file__).resolve().parents[2]
MLP = str(SOURCE_DIR / "examples" / "mlp.pf")
# Small dimensions, so that a step takes milliseconds.
MLP_BIND = "B=32,I=64,H=64,L=1,K=10"

_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64}


@pytest.fixture(scope="session")
def pipeforge_exe():
    exe = os.environ.get("PF_PIPEFORGE")
    if not exe:
        pytest.fail("set PF_PIPEFORGE to the pipeforge executable (ctest sets it)")
    return exe


def run_command(exe, *args, ok=True):
    """Runs `pipeforge args...`; returns the finished process (text output)."""
    done = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    if ok and done.returncode != 0:
        raise AssertionError(f"pipeforge {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done


def write_safetensors(path, tensors):
    """Writes `tensors` ({name: array}) as a safetensors file."""
    names = {np.dtype(v): k for k, v in _DTYPES.items()}
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    """The tensors of a safetensors file, {name: array}."""
    raw = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    body = raw[8 + length:]
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(entry["shape"])
    return out


def mlp_batch(seed, batch=32, features=64, classes=10):
    """A batch for the small mlp: x (batch, features) float32 and int64 labels."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, features)).astype(np.float32),
            "labels": rng.integers(0, classes, size=batch)}
