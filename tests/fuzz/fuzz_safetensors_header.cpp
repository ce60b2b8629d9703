// libFuzzer target for colm::parse_safetensors_header: any bytes must give a header or a colm::Error,
// never a crash, UB or a header that breaks the parser's own guarantees (checked below).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "colm/safetensors_header.hpp"

// colm::Error's out-of-line members normally live in core/src/interfaces.cpp, which needs LibTorch;
// the fuzzer links only the header parser, so it carries the same two definitions.
namespace colm {
Error::Error(const std::string& what) : std::runtime_error(what) {}
Error::~Error() = default;
}  // namespace colm

namespace {

// The guarantees callers rely on: every tensor lies inside the data section, its byte count
// matches shape x dtype, and no two tensors share a byte. Violations abort (a finding).
void check_invariants(const colm::SafetensorsHeader& h, uint64_t file_size) {
  const uint64_t data_size = file_size - 8 - h.header_size;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, e] : h.tensors) {
    if (e.begin > e.end || e.end > data_size) __builtin_trap();
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0) __builtin_trap();
      numel *= static_cast<uint64_t>(d);  // cannot overflow: the parser checked the product
    }
    const uint64_t elem = (e.end - e.begin) / (numel == 0 ? 1 : numel);
    if (numel == 0 ? e.end != e.begin : elem * numel != e.end - e.begin) __builtin_trap();
    if (e.end > e.begin) ranges.emplace_back(e.begin, e.end);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) __builtin_trap();
}

void parse(const uint8_t* data, size_t size) {
  try {
    const colm::SafetensorsHeader h = colm::parse_safetensors_header(data, size, size, "fuzz input");
    check_invariants(h, size);
  } catch (const colm::Error&) {
    // Expected for malformed input.
  }
}

// Where the JSON object starting at text[0] ends (one past its closing brace), or 0 if it does not
// close. String-aware, so braces inside names do not count.
size_t json_object_end(const uint8_t* text, size_t n) {
  if (n == 0 || text[0] != '{') return 0;
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // 1. The bytes as a whole file: exercises the length prefix and everything after it.
  parse(data, size);

  // 2. The same file with its length prefix recomputed from where the JSON really ends. Mutations
  //    that grow or shrink the JSON would otherwise almost always fail at the prefix check, and the
  //    fuzzer would spend its time there instead of in the header validation.
  if (size >= 8) {
    const size_t end = json_object_end(data + 8, size - 8);
    if (end > 0) {
      std::vector<uint8_t> fixed(data, data + size);
      const uint64_t len = end;
      for (int b = 0; b < 8; ++b) fixed[b] = static_cast<uint8_t>(len >> (8 * b));
      if (std::memcmp(fixed.data(), data, 8) != 0) parse(fixed.data(), fixed.size());
    }
  }
  return 0;
}
