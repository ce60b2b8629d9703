// check_vocab_compatible: experts must share tokenizers and special ids; output layers may only be
// padded. Uses small fake experts (only info() and tokenizer() matter to the check).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "support.hpp"
#include "model/vocab_check.hpp"

using Catch::Contains;

namespace {

class FakeExpert : public colm::Expert {
 public:
  FakeExpert(colm::Tokenizer tokenizer, int64_t output_rows)
      : tokenizer_(std::move(tokenizer)), rows_(output_rows) {}
  colm::ExpertInfo info() const override {
    colm::ExpertInfo i;
    i.family = "fake";
    i.vocab_size = rows_;
    return i;
  }
  const colm::Tokenizer& tokenizer() const override { return tokenizer_; }
  torch::Device device() const override { return torch::kCPU; }
  colm::ExpertOutput forward(const torch::Tensor&, const torch::Tensor&) override { throw colm::Error("fake"); }
  std::unique_ptr<colm::DecodeState> new_state(int64_t) const override { throw colm::Error("fake"); }
  colm::ExpertOutput extend(colm::DecodeState&, const std::vector<int64_t>&,
                            const std::vector<std::vector<int64_t>>&) override {
    throw colm::Error("fake");
  }
  std::vector<torch::Tensor> parameters() override { return {}; }
  void set_training(bool) override {}
  void save(const std::string&) const override { throw colm::Error("fake"); }
  std::string fingerprint() const override { return "fake"; }

 private:
  colm::Tokenizer tokenizer_;
  int64_t rows_;
};

// colm's byte tokenizer JSON, edited by `edit`.
colm::Tokenizer edited_byte_level(const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(colm::Tokenizer::byte_level().to_json_string());
  edit(j);
  return colm::Tokenizer::from_json_string(j.dump(), "edited byte_level");
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace

TEST_CASE("experts with one tokenizer and padded output layers are compatible", "[core][vocab]") {
  const auto tok = colm::Tokenizer::byte_level();
  REQUIRE(tok.vocab_size() == 259);
  FakeExpert base(tok, 259), padded(tok, 320), reloaded(colm::Tokenizer::from_json_string(tok.to_json_string(), "copy"), 384);
  CHECK_NOTHROW(colm::check_vocab_compatible({{"base", &base}, {"assistant", &padded}, {"third", &reloaded}}));
  CHECK_NOTHROW(colm::check_vocab_compatible({{"alone", &base}}));
  CHECK_NOTHROW(colm::check_vocab_compatible({}));
}

TEST_CASE("an output layer smaller than the tokenizer is refused", "[core][vocab]") {
  const auto tok = colm::Tokenizer::byte_level();
  FakeExpert ok(tok, 259), small(tok, 200);
  CHECK_THROWS_WITH(colm::check_vocab_compatible({{"base", &ok}, {"tiny", &small}}),
                    Contains("expert \"tiny\": its output layer has 200 rows but its tokenizer has 259 ids"));
  CHECK_THROWS_WITH(colm::check_vocab_compatible({{"tiny", &small}}), Contains("200 rows"));
  CHECK_THROWS_WITH(colm::check_vocab_compatible({{"null", nullptr}}), Contains("expert \"null\" is null"));
}

TEST_CASE("a renamed special token is reported with both experts and the differing tokens", "[core][vocab]") {
  const auto tok = colm::Tokenizer::byte_level();
  const auto renamed = edited_byte_level([](nlohmann::json& j) {
    for (auto& t : j["added_tokens"])
      if (t["content"] == "<|eos|>") t["content"] = "<|end|>";
  });
  REQUIRE(renamed.vocab_size() == 259);
  FakeExpert a(tok, 259), b(renamed, 259);
  CHECK_THROWS_WITH(colm::check_vocab_compatible({{"base", &a}, {"helper", &b}}),
                    Contains("experts \"base\" and \"helper\" have different tokenizers") &&
                        Contains("1 of the 259 shared ids map to different tokens") &&
                        Contains("id 257: \"<|eos|>\" vs \"<|end|>\"") &&
                        Contains("\"<|eos|>\" (id 257) only in base") &&
                        Contains("\"<|end|>\" (id 257) only in helper"));
}

TEST_CASE("a different vocabulary size is reported", "[core][vocab]") {
  const auto tok = colm::Tokenizer::byte_level();
  const auto bytes_only = edited_byte_level([](nlohmann::json& j) {
    j["added_tokens"] = nlohmann::json::array();
    j["post_processor"] = nullptr;
  });
  REQUIRE(bytes_only.vocab_size() == 256);
  // The 256-id expert has a 259-row output layer: allowed padding for it, but the vocabularies differ.
  FakeExpert a(tok, 259), b(bytes_only, 259);
  CHECK_THROWS_WITH(colm::check_vocab_compatible({{"a", &a}, {"b", &b}}),
                    Contains("vocab size: a 259, b 256") && Contains("\"<|pad|>\" (id 258) only in a"));
}

TEST_CASE("same tokenizer but different special-token ids is refused", "[core][vocab]") {
  // tokenizer_config.json can redefine eos without changing tokenizer.json (and so the fingerprint).
  const std::string dir = colm::test::temp_dir("vocab-special");
  const auto tok = colm::Tokenizer::byte_level();
  std::filesystem::create_directories(dir + "/a");
  std::filesystem::create_directories(dir + "/b");
  tok.save(dir + "/a/tokenizer.json");
  tok.save(dir + "/b/tokenizer.json");
  write_text(dir + "/b/tokenizer_config.json", R"({"eos_token": "<|pad|>"})");
  const auto ta = colm::Tokenizer::from_file(dir + "/a/tokenizer.json");
  const auto tb = colm::Tokenizer::from_file(dir + "/b/tokenizer.json");
  REQUIRE(ta.fingerprint() == tb.fingerprint());
  REQUIRE(ta.eos_id() != tb.eos_id());
  FakeExpert a(ta, 259), b(tb, 259);
  CHECK_THROWS_WITH(colm::check_vocab_compatible({{"a", &a}, {"b", &b}}),
                    Contains("eos token ids differ: " + std::to_string(*ta.eos_id()) + " vs 258"));
}

TEST_CASE("Llama 2 and Mistral tokenizers (same kind and size) are told apart by their tokens",
          "[core][vocab][fixtures][shared]") {
  COLM_REQUIRE_SHARED_FIXTURE(llama_dir, "tokenizers/llama2");
  const auto llama = colm::Tokenizer::from_file(llama_dir + "/tokenizer.json");
  const auto mistral = colm::Tokenizer::from_file(colm::test::fixture("tokenizers/mistral/tokenizer.json"));
  REQUIRE(llama.vocab_size() == mistral.vocab_size());
  FakeExpert a(llama, 32000), b(mistral, 32000);
  CHECK_THROWS_WITH(colm::check_vocab_compatible({{"llama", &a}, {"mistral", &b}}),
                    Contains("experts \"llama\" and \"mistral\" have different tokenizers") &&
                        Contains("shared ids map to different tokens, e.g.") && !Contains("kind:") &&
                        !Contains("vocab size:"));
  FakeExpert c(llama, 32000);
  CHECK_NOTHROW(colm::check_vocab_compatible({{"llama", &a}, {"llama again", &c}}));
}
