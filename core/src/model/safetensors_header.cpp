// The safetensors header parser: length prefix, JSON, dtypes, shapes and offsets, all validated.
// Depends only on nlohmann-json and colm/error.hpp (no torch) so the fuzz target can build it alone.
#include <algorithm>
#include <cstring>
#include <set>
#include <vector>

#include "colm/error.hpp"
#include "colm/safetensors_header.hpp"
#include "model/safetensors_internal.hpp"

namespace colm {
namespace detail {

nlohmann::json parse_json_strict(const char* text, size_t size, const std::string& what,
                                 int max_depth) {
  using json = nlohmann::json;
  // One set of keys per open object; arrays push nothing but count towards the depth.
  std::vector<std::set<std::string>> open_objects;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    switch (event) {
      case json::parse_event_t::object_start:
        COLM_CHECK(depth < max_depth, what << ": JSON nests deeper than " << max_depth << " levels");
        open_objects.emplace_back();
        break;
      case json::parse_event_t::array_start:
        COLM_CHECK(depth < max_depth, what << ": JSON nests deeper than " << max_depth << " levels");
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && parsed.is_string()) {
          const auto& key = parsed.get_ref<const std::string&>();
          COLM_CHECK(open_objects.back().insert(key).second,
                     what << ": key \"" << key << "\" appears twice in one JSON object");
        }
        break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(text, text + size, callback, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    throw Error(what + ": invalid JSON: " + e.what());
  }
}

size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::pair<const char*, size_t> kSizes[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
      {"I16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}};
  for (const auto& [name, bytes] : kSizes)
    if (dtype == name) return bytes;
  return 0;
}

std::string brief_json(const nlohmann::json& value) {
  // error_handler replace: dumping must never throw while we are building an error message.
  std::string s = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

}  // namespace detail

namespace {

using nlohmann::json;

// Dtypes of the safetensors format that colm recognises but cannot load (no torch equivalent in
// LibTorch 1.13 or no use here). Everything else not in safetensors_dtype_size is unknown.
bool is_unsupported_known_dtype(const std::string& dtype) {
  static const char* kUnsupported[] = {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2",
                                       "F4",      "U16",     "U32",     "U64",     "C64"};
  for (const char* name : kUnsupported)
    if (dtype == name) return true;
  return false;
}

// A JSON integer as an unsigned 64-bit value; false for negatives, floats and non-numbers.
bool as_uint64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    *out = static_cast<uint64_t>(x);
    return true;
  }
  return false;
}

TensorEntry parse_entry(const std::string& name, const json& info, uint64_t data_size,
                        const std::string& what) {
  const std::string where = what + ": tensor \"" + name + "\": ";
  COLM_CHECK(info.is_object(), where << "expected an object with dtype, shape and data_offsets, got "
                                     << detail::brief_json(info));
  TensorEntry e;
  e.name = name;

  auto dtype_it = info.find("dtype");
  COLM_CHECK(dtype_it != info.end(), where << "missing \"dtype\"");
  COLM_CHECK(dtype_it->is_string(), where << "\"dtype\" must be a string, got " << detail::brief_json(*dtype_it));
  e.dtype = dtype_it->get<std::string>();
  const size_t elem = detail::safetensors_dtype_size(e.dtype);
  if (elem == 0) {
    COLM_CHECK(!is_unsupported_known_dtype(e.dtype),
               where << "dtype " << e.dtype << " is not supported by colm "
                     << "(supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    throw Error(where + "unknown dtype " + detail::brief_json(*dtype_it) +
                " (known: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
  }

  auto shape_it = info.find("shape");
  COLM_CHECK(shape_it != info.end(), where << "missing \"shape\"");
  COLM_CHECK(shape_it->is_array(), where << "\"shape\" must be an array, got " << detail::brief_json(*shape_it));
  // numel and bytes are computed in uint64 with overflow checks; both must also fit int64 (torch).
  uint64_t numel = 1;
  for (size_t i = 0; i < shape_it->size(); ++i) {
    const json& d = (*shape_it)[i];
    uint64_t dim = 0;
    COLM_CHECK(as_uint64(d, &dim), where << "shape[" << i << "] must be a non-negative integer, got "
                                         << detail::brief_json(d));
    COLM_CHECK(dim <= static_cast<uint64_t>(INT64_MAX),
               where << "shape[" << i << "] = " << dim << " is too large");
    COLM_CHECK(!__builtin_mul_overflow(numel, dim, &numel) && numel <= static_cast<uint64_t>(INT64_MAX),
               where << "shape " << detail::brief_json(*shape_it) << " overflows the element count");
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t nbytes = 0;
  COLM_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(elem), &nbytes),
             where << "shape " << detail::brief_json(*shape_it) << " x " << elem
                   << " bytes overflows the byte count");

  auto off_it = info.find("data_offsets");
  COLM_CHECK(off_it != info.end(), where << "missing \"data_offsets\"");
  COLM_CHECK(off_it->is_array() && off_it->size() == 2,
             where << "\"data_offsets\" must be [begin, end], got " << detail::brief_json(*off_it));
  COLM_CHECK(as_uint64((*off_it)[0], &e.begin) && as_uint64((*off_it)[1], &e.end),
             where << "data_offsets must be non-negative integers, got " << detail::brief_json(*off_it));
  COLM_CHECK(e.begin <= e.end, where << "data_offsets begin " << e.begin << " > end " << e.end);
  COLM_CHECK(e.end <= data_size, where << "data_offsets end " << e.end
                                       << " is past the end of the data section (" << data_size
                                       << " bytes): the file is truncated or the header is wrong");
  COLM_CHECK(e.end - e.begin == nbytes,
             where << "data_offsets cover " << (e.end - e.begin) << " bytes but dtype " << e.dtype
                   << " with shape " << detail::brief_json(*shape_it) << " needs " << nbytes);
  return e;
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size, uint64_t file_size,
                                           const std::string& what) {
  COLM_CHECK(size <= file_size, what << ": " << size << " bytes given but the file has only " << file_size);
  COLM_CHECK(size >= 8, what << ": not a safetensors file: " << file_size
                             << " bytes, too short for the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];  // little-endian
  COLM_CHECK(header_len <= detail::kMaxSafetensorsHeader,
             what << ": header length " << header_len << " exceeds the " << detail::kMaxSafetensorsHeader
                  << "-byte limit (not a safetensors file, or corrupt)");
  COLM_CHECK(header_len <= file_size - 8,
             what << ": header length " << header_len << " is larger than the file (" << file_size
                  << " bytes): truncated or not a safetensors file");
  COLM_CHECK(header_len <= size - 8, what << ": only " << size - 8 << " of the " << header_len
                                          << " header bytes were given to the parser");

  SafetensorsHeader h;
  h.header_size = header_len;
  const uint64_t data_size = file_size - 8 - header_len;
  const json root = detail::parse_json_strict(reinterpret_cast<const char*>(data + 8),
                                              static_cast<size_t>(header_len), what + " (header)");
  COLM_CHECK(root.is_object(), what << ": the header must be a JSON object, got " << detail::brief_json(root));

  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      COLM_CHECK(value.is_object(), what << ": \"__metadata__\" must be an object of strings, got "
                                         << detail::brief_json(value));
      for (const auto& [mk, mv] : value.items()) {
        COLM_CHECK(mv.is_string(), what << ": \"__metadata__\" value of \"" << mk
                                        << "\" must be a string, got " << detail::brief_json(mv));
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    h.tensors.emplace(key, parse_entry(key, value, data_size, what));
  }

  // Overlap: sort the byte ranges by begin; each must start at or after the previous end.
  // Empty tensors occupy no bytes and cannot overlap anything.
  std::vector<const TensorEntry*> ranges;
  for (const auto& [name, e] : h.tensors)
    if (e.end > e.begin) ranges.push_back(&e);
  std::sort(ranges.begin(), ranges.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const TensorEntry& prev = *ranges[i - 1];
    const TensorEntry& cur = *ranges[i];
    COLM_CHECK(cur.begin >= prev.end, what << ": tensors \"" << prev.name << "\" [" << prev.begin << ", "
                                           << prev.end << ") and \"" << cur.name << "\" [" << cur.begin
                                           << ", " << cur.end << ") overlap");
  }
  return h;
}

}  // namespace colm
