#!/usr/bin/env python3
# Writes the fuzz seed corpus: a few tiny, valid safetensors files (and two edge cases) in the
# layout the reference serializer uses. Standard library only. Usage: make_corpus.py [out_dir]
import json
import os
import struct
import sys

SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape); data bytes are a deterministic counter."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    data = b""
    for name, dtype, shape in sorted(tensors):
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        data += bytes((offset + i) % 2 if dtype == "BOOL" else (offset + i) % 251 for i in range(n))
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    os.makedirs(out, exist_ok=True)
    seeds = {
        "empty_header.safetensors": safetensors([], None),
        "metadata_only.safetensors": safetensors([], {"format": "pt", "note": "x"}),
        "one_f32.safetensors": safetensors([("w", "F32", [2, 3])], {"format": "pt"}),
        "mixed_dtypes.safetensors": safetensors(
            [("a.weight", "BF16", [4, 2]), ("b.bias", "F16", [3]), ("c", "I64", [2]),
             ("d", "I32", [1, 1]), ("e", "U8", [5]), ("f", "BOOL", [2]), ("g", "F64", [1]),
             ("h", "I8", [2]), ("i", "I16", [2])], {"format": "pt"}),
        "scalar_and_empty.safetensors": safetensors([("s", "F32", []), ("z", "F32", [0, 4])], None),
        "unpadded.safetensors": safetensors([("x", "F16", [3])], None, pad=False),
    }
    for name, blob in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    main()
