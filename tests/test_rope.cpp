// rope_scaling (linear, llama3): inverse frequencies against values computed here, one frequency at a
// time, from the published formulas (Hugging Face's _compute_linear_scaling_rope_parameters and
// _compute_llama3_parameters, as described in the Llama 3.1 release); config parsing and errors; and
// a checkpoint with rope_scaling loading and decoding with its own frequencies.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "colm/plugin.hpp"
#include "plugin/registry.hpp"
#include "rope.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using colm::transformer::RopeScaling;
using colm::transformer::rope_inv_freq;
using colm::transformer::rope_scaling_from_hf;
using colm::transformer::rope_scaling_to_hf;

namespace {

// The published llama3 rule for one frequency f = theta^(-2i/d): wavelength w = 2 pi / f; w below
// original/high_freq_factor: f; above original/low_freq_factor: f / factor; else
// (1 - s) f / factor + s f with s = (original / w - low) / (high - low).
double llama3_expected(double f, double factor, double low, double high, double original) {
  const double w = 2 * 3.14159265358979323846 / f;
  if (w < original / high) return f;
  if (w > original / low) return f / factor;
  const double s = (original / w - low) / (high - low);
  return (1 - s) * f / factor + s * f;
}

void check_all(const torch::Tensor& got, const std::vector<double>& want) {
  REQUIRE(got.dim() == 1);
  REQUIRE(got.size(0) == int64_t(want.size()));
  REQUIRE(got.scalar_type() == torch::kFloat64);
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("frequency " << i);
    CHECK(got[int64_t(i)].item<double>() == Approx(want[i]).epsilon(1e-12));
  }
}

}  // namespace

TEST_CASE("rope inverse frequencies: none, linear and llama3 follow the published formulas", "[rope]") {
  const int64_t d = 128;
  const double theta = 500000.0;
  std::vector<double> plain;
  for (int64_t i = 0; i < d / 2; ++i) plain.push_back(std::pow(theta, -2.0 * double(i) / double(d)));
  check_all(rope_inv_freq(theta, d, RopeScaling{}), plain);

  RopeScaling linear;
  linear.type = "linear";
  linear.factor = 4.0;
  std::vector<double> lin;
  for (double f : plain) lin.push_back(f / 4.0);
  check_all(rope_inv_freq(theta, d, linear), lin);

  // Llama 3.1 (factor 8) and Llama 3.2 (factor 32): low 1, high 4, original context 8192.
  for (const double factor : {8.0, 32.0}) {
    const auto s = rope_scaling_from_hf(
        nlohmann::json{{"rope_type", "llama3"}, {"factor", factor}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}},
        "config.json");
    std::vector<double> want;
    int kept = 0, divided = 0, blended = 0;
    for (double f : plain) {
      want.push_back(llama3_expected(f, factor, 1.0, 4.0, 8192.0));
      const double w = 2 * 3.14159265358979323846 / f;
      (w < 8192.0 / 4 ? kept : w > 8192.0 ? divided : blended)++;
    }
    // The three regimes all occur at this head size, so each branch is exercised.
    CHECK(kept > 0);
    CHECK(divided > 0);
    CHECK(blended > 0);
    INFO("factor " << factor);
    check_all(rope_inv_freq(theta, d, s), want);
  }
}

TEST_CASE("rope_scaling in config.json: accepted types, round trip and clear errors", "[rope]") {
  CHECK(rope_scaling_from_hf(nullptr, "c").type == "default");
  CHECK(rope_scaling_from_hf(nlohmann::json{{"rope_type", "default"}}, "c").type == "default");
  CHECK(rope_scaling_to_hf(RopeScaling{}).is_null());
  const auto lin = rope_scaling_from_hf(nlohmann::json{{"type", "linear"}, {"factor", 2.0}}, "c");
  CHECK(lin.type == "linear");
  CHECK(lin.factor == 2.0);
  CHECK(rope_scaling_from_hf(rope_scaling_to_hf(lin), "c") == lin);
  const nlohmann::json l3{{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const auto s = rope_scaling_from_hf(l3, "c");
  CHECK(rope_scaling_from_hf(rope_scaling_to_hf(s), "c") == s);
  using Catch::Matchers::Contains;
  auto error = [](const nlohmann::json& v) {
    try {
      rope_scaling_from_hf(v, "model/config.json");
    } catch (const colm::Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(error({{"rope_type", "yarn"}, {"factor", 4.0}}),
             Contains("model/config.json") && Contains("'yarn' is not supported"));
  CHECK_THAT(error({{"type", "dynamic"}, {"factor", 2.0}}), Contains("'dynamic' is not supported"));
  CHECK_THAT(error({{"rope_type", "linear"}}), Contains("rope_scaling.factor is required"));
  CHECK_THAT(error({{"rope_type", "linear"}, {"type", "llama3"}, {"factor", 2.0}}), Contains("disagree"));
  CHECK_THAT(error({{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0}}),
             Contains("original_max_position_embeddings is required"));
  CHECK_THAT(error({{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0}, {"high_freq_factor", 1.0},
                    {"original_max_position_embeddings", 8192}}),
             Contains("low_freq_factor < high_freq_factor"));
  CHECK_THAT(error({{"rope_type", "linear"}, {"factor", "2"}}), Contains("must be a number"));
  CHECK_THAT(error(nlohmann::json::array()), Contains("must be an object or null"));
}

TEST_CASE("a Llama checkpoint with rope_scaling loads and decodes with the scaled frequencies", "[rope][transformer]") {
  const auto src = colm::test::fixture("models/llama-tiny-gqa");
  auto with_scaling = [&](const nlohmann::json& scaling) {
    const auto dir = colm::test::temp_dir("rope-scaling");
    for (const char* f : {"model.safetensors", "config.json"}) fs::copy_file(src + "/" + f, dir + "/" + f);
    nlohmann::json config;
    std::ifstream(dir + "/config.json") >> config;
    config["rope_scaling"] = scaling;
    std::ofstream(dir + "/config.json", std::ios::trunc) << config.dump(2);
    colm::PluginContext ctx;
    ctx.instance = "m";
    auto e = colm::default_registry().create_expert(
        "transformer", colm::ConfigView::from_string("checkpoint = \"" + dir + "\"\n", "t"), ctx);
    torch::NoGradGuard g;
    const auto ids = torch::arange(3, 40, torch::kLong).unsqueeze(0);
    return std::make_pair(e->forward(ids, torch::Tensor()).logits, e->fingerprint());
  };
  const auto [plain, fp_plain] = with_scaling(nullptr);
  const auto [unit, fp_unit] = with_scaling({{"rope_type", "linear"}, {"factor", 1.0}});
  const auto [lin, fp_lin] = with_scaling({{"rope_type", "linear"}, {"factor", 4.0}});
  const auto [l3, fp_l3] = with_scaling({{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}});
  CHECK(torch::allclose(plain, unit));  // factor 1 changes nothing
  // Position 0 does not rotate, so the first position's logits agree; later ones differ.
  CHECK(torch::allclose(plain.select(1, 0), lin.select(1, 0), 1e-5, 1e-5));
  CHECK_FALSE(torch::allclose(plain, lin, 1e-3, 1e-3));
  CHECK_FALSE(torch::allclose(plain, l3, 1e-3, 1e-3));
  CHECK_FALSE(torch::allclose(lin, l3, 1e-3, 1e-3));
  // The scaling is part of the model's identity.
  CHECK(fp_plain != fp_lin);
  CHECK(fp_lin != fp_l3);
}
