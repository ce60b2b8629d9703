#include "rope.hpp"

#include <cmath>

#include "colm/error.hpp"

namespace colm::transformer {

namespace {

double number(const nlohmann::json& v, const char* key, double def, bool required, const std::string& where) {
  const auto it = v.find(key);
  if (it == v.end() || it->is_null()) {
    COLM_CHECK(!required, where << ": rope_scaling." << key << " is required for this rope_type");
    return def;
  }
  COLM_CHECK(it->is_number(), where << ": rope_scaling." << key << " must be a number, got " << it->dump());
  return it->get<double>();
}

}  // namespace

RopeScaling rope_scaling_from_hf(const nlohmann::json& v, const std::string& where) {
  RopeScaling s;
  if (v.is_null()) return s;
  COLM_CHECK(v.is_object(), where << ": rope_scaling must be an object or null, got " << v.dump());
  // Newer configs say "rope_type", older ones "type"; both may be present and then agree.
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    const auto it = v.find(key);
    if (it == v.end()) continue;
    COLM_CHECK(it->is_string(), where << ": rope_scaling." << key << " must be a string, got " << it->dump());
    COLM_CHECK(type.empty() || type == it->get<std::string>(),
               where << ": rope_scaling.rope_type and rope_scaling.type disagree (" << v.dump() << ")");
    type = it->get<std::string>();
  }
  COLM_CHECK(!type.empty(), where << ": rope_scaling has no rope_type (" << v.dump() << ")");
  if (type == "default") return s;
  COLM_CHECK(type == "linear" || type == "llama3",
             where << ": rope_scaling type '" << type << "' is not supported (linear, llama3, or none)");
  s.type = type;
  s.factor = number(v, "factor", 1.0, true, where);
  COLM_CHECK(s.factor >= 1.0, where << ": rope_scaling.factor must be >= 1, got " << s.factor);
  if (type == "llama3") {
    s.low_freq_factor = number(v, "low_freq_factor", 1.0, true, where);
    s.high_freq_factor = number(v, "high_freq_factor", 4.0, true, where);
    const double original = number(v, "original_max_position_embeddings", 0, true, where);
    COLM_CHECK(original >= 1 && std::floor(original) == original,
               where << ": rope_scaling.original_max_position_embeddings must be a positive integer, got " << original);
    s.original_max_positions = int64_t(original);
    COLM_CHECK(s.low_freq_factor > 0 && s.high_freq_factor > s.low_freq_factor,
               where << ": rope_scaling needs 0 < low_freq_factor < high_freq_factor, got " << s.low_freq_factor
                     << " and " << s.high_freq_factor);
  }
  return s;
}

nlohmann::json rope_scaling_to_hf(const RopeScaling& s) {
  if (s.type == "default") return nullptr;
  nlohmann::json j{{"rope_type", s.type}, {"factor", s.factor}};
  if (s.type == "llama3") {
    j["low_freq_factor"] = s.low_freq_factor;
    j["high_freq_factor"] = s.high_freq_factor;
    j["original_max_position_embeddings"] = s.original_max_positions;
  }
  return j;
}

torch::Tensor rope_inv_freq(double theta, int64_t head_dim, const RopeScaling& s) {
  auto inv = 1.0 / torch::pow(theta, torch::arange(0, head_dim, 2, torch::kFloat64) / double(head_dim));
  if (s.type == "linear") return inv / s.factor;
  if (s.type != "llama3") return inv;
  // Wavelengths longer than the original context / low_freq_factor are divided by `factor`, those
  // shorter than original / high_freq_factor kept; in between, a linear blend in original / wavelength.
  const double original = double(s.original_max_positions);
  const double low_wavelen = original / s.low_freq_factor, high_wavelen = original / s.high_freq_factor;
  const auto wavelen = 2 * M_PI / inv;
  const auto smooth = (original / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  const auto blended = (1 - smooth) * inv / s.factor + smooth * inv;
  auto out = torch::where(wavelen > low_wavelen, inv / s.factor, inv);
  const auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
  return torch::where(medium, blended, out);
}

}  // namespace colm::transformer
