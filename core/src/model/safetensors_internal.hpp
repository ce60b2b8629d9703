// Internal helpers shared by the safetensors header parser, the reader and the checkpoint loader.
// Torch-free on purpose: the libFuzzer target compiles safetensors_header.cpp with this alone.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace colm::detail {

// The largest header colm accepts (the reference implementation's limit, 100 MB).
constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

// Parses JSON text strictly: a key repeated in one object is an error (nlohmann would silently
// keep the last one, hiding a tensor listed twice), and nesting deeper than max_depth is refused.
// Errors are colm::Error prefixed with `what` (the file).
nlohmann::json parse_json_strict(const char* text, size_t size, const std::string& what,
                                 int max_depth = 64);

// Bytes per element of a safetensors dtype ("F32" -> 4); 0 when colm does not know or support it.
size_t safetensors_dtype_size(const std::string& dtype);

// A JSON value for an error message: compact, at most ~60 characters.
std::string brief_json(const nlohmann::json& value);

}  // namespace colm::detail
