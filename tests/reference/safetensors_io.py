"""A small reader and writer for the safetensors format, with NumPy arrays.

The reference test cannot use the `safetensors` package (it is not packaged
for Debian and there is no PyPI here), and the format is simple enough to
write out in full:

    8 bytes      N, the header length, unsigned little-endian
    N bytes      JSON: {"__metadata__": {"key": "value", ...},
                        "name": {"dtype": "F32", "shape": [2, 3],
                                 "data_offsets": [begin, end]}, ...}
    the rest     the tensors' raw bytes, little-endian and row-major; the
                 offsets count from the first byte after the header

The writer produces the same bytes as Pipeforge's own writer
(runtime/safetensors.cpp): "__metadata__" first with its keys sorted, then
the tensors sorted by name with contiguous offsets, compact JSON, the header padded with spaces to a
multiple of 8 so the data section starts 8-aligned. The reader accepts any
valid file but rejects the defects Pipeforge rejects (offsets that disagree
with the shape, overlap, leave gaps or run past the end).
"""

import json
import struct

import numpy as np

# safetensors dtype name -> NumPy dtype (explicitly little-endian). Only the
# dtypes the reference fixtures use; a file with another one is reported.
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "BOOL": np.dtype("bool"),
}
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}

METADATA_KEY = "__metadata__"


def encode(tensors, metadata=None):
    """Returns the bytes of a safetensors file holding `tensors`.

    tensors: mapping name -> NumPy array (or anything np.asarray accepts whose
    dtype is in _DTYPES); metadata: optional mapping str -> str.
    """
    arrays = {}
    for name, value in tensors.items():
        if name == METADATA_KEY:
            raise ValueError(f"safetensors: '{METADATA_KEY}' is reserved and cannot name a tensor")
        array = np.asarray(value)
        dtype = array.dtype.newbyteorder("<") if array.dtype.kind in "fiu" else array.dtype
        if dtype not in _NAMES:
            raise ValueError(f"safetensors: tensor '{name}' has dtype {array.dtype}, "
                             f"supported: {', '.join(str(d) for d in _NAMES)}")
        # asarray with order="C", not ascontiguousarray, which turns a 0-d
        # array into shape [1].
        arrays[name] = np.asarray(array, dtype=dtype, order="C")

    header = {}
    if metadata:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"safetensors: metadata must map str to str, got {key!r}: {value!r}")
        header[METADATA_KEY] = dict(sorted(metadata.items()))
    offset = 0
    for name in sorted(arrays):
        array = arrays[name]
        header[name] = {
            "dtype": _NAMES[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes

    # Compact separators and ensure_ascii=False give the text nlohmann::json
    # dump() gives, so both writers agree byte for byte.
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return b"".join([struct.pack("<Q", len(text)), text] + [arrays[name].tobytes() for name in sorted(arrays)])


def decode(data, source="<bytes>"):
    """Parses the bytes of a safetensors file.

    Returns (tensors, metadata): a dict name -> NumPy array (a copy, writable)
    and a dict str -> str. Raises ValueError naming `source` on any defect.
    """
    if len(data) < 8:
        raise ValueError(f"{source}: file is {len(data)} bytes, too short for the 8-byte header length")
    (header_size,) = struct.unpack_from("<Q", data, 0)
    if header_size > len(data) - 8:
        raise ValueError(f"{source}: header length is {header_size} bytes but only {len(data) - 8} follow it")
    try:
        header = json.loads(data[8:8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{source}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{source}: header must be a JSON object")

    body = data[8 + header_size:]
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{source}: {METADATA_KEY} must map strings to strings")

    tensors, spans = {}, []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{source}: tensor '{name}' needs exactly dtype, shape and data_offsets, got {info!r}")
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{source}: tensor '{name}' has unsupported dtype {info['dtype']!r}")
        dtype = _DTYPES[info["dtype"]]
        shape = tuple(info["shape"])
        begin, end = info["data_offsets"]
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end <= len(body) or end - begin != count * dtype.itemsize:
            raise ValueError(f"{source}: tensor '{name}': data_offsets [{begin}, {end}] do not fit "
                             f"{info['dtype']}{list(shape)} in a data section of {len(body)} bytes")
        tensors[name] = np.frombuffer(body, dtype=dtype, count=count, offset=begin).reshape(shape).copy()
        spans.append((begin, end, name))

    # The tensors must tile the data section: no overlap, no gap, nothing after.
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            raise ValueError(f"{source}: tensor '{name}' starts at byte {begin}, expected {covered} "
                             "(overlap or gap in the data section)")
        covered = end
    if covered != len(body):
        raise ValueError(f"{source}: the data section has {len(body)} bytes but the tensors cover {covered}")
    return tensors, metadata


def save(path, tensors, metadata=None):
    """Writes `tensors` (name -> array) and `metadata` (str -> str) to `path`."""
    with open(path, "wb") as f:
        f.write(encode(tensors, metadata))


def load(path):
    """Reads `path`; returns (tensors, metadata) as decode() does."""
    with open(path, "rb") as f:
        return decode(f.read(), source=str(path))
