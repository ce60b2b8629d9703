// The torch-free part of the safetensors API: header structures and the pure header parser.
// colm/safetensors.hpp includes it; the fuzz target uses it alone (no LibTorch needed).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "colm/error.hpp"

namespace colm {

struct TensorEntry {
  std::string name;
  std::string dtype;             // "F32", "F16", "BF16", "I64", "I32", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;   // byte offsets relative to the data section
};

struct SafetensorsHeader {
  uint64_t header_size = 0;                         // JSON length (the 8-byte prefix excluded)
  std::map<std::string, std::string> metadata;      // "__metadata__"
  std::map<std::string, TensorEntry> tensors;
};

// Parses and validates a safetensors header from the first bytes of a file of file_size bytes:
// length prefix, JSON, dtypes, shapes, offsets (in range, no overlap, shape x dtype == bytes).
// `what` names the file in errors. Pure function: the fuzz target drives it.
// Rules: header length <= 100 MB and <= file_size - 8; a JSON object; optional "__metadata__"
// (object of strings); dtypes F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL (F8_*, U16..U64 are
// refused as unsupported); a key repeated in the JSON is an error; gaps between tensors are allowed.
COLM_VISIBLE SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                                        uint64_t file_size, const std::string& what);

}  // namespace colm
