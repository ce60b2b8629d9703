// Tokenizer: the HF fixtures (gpt2, mistral, qwen3 from tests/fixtures; llama2 from ../shared only:
// ids and decoded text from an independent reference), colm's byte tokenizer (round trip,
// save/load, specials) and error reporting.
#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "colm/tokenizer.hpp"
#include "support.hpp"

namespace {

struct Case {
  std::string text;
  std::vector<int64_t> ids;
  std::string decoded;
};

std::vector<Case> read_cases(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    cases.push_back({j.at("text").get<std::string>(), j.at("ids").get<std::vector<int64_t>>(),
                     j.at("decoded").get<std::string>()});
  }
  return cases;
}

// Loading is the slow part (150k vocab for qwen3): load each fixture once per process.
// dir: the fixture's folder (tests/fixtures/tokenizers/NAME, or ../shared's for llama2).
const colm::Tokenizer& fixture_at(const std::string& dir) {
  static std::map<std::string, colm::Tokenizer> cache;
  auto it = cache.find(dir);
  if (it == cache.end()) it = cache.emplace(dir, colm::Tokenizer::from_file(dir + "/tokenizer.json")).first;
  return it->second;
}
// A tokenizer the repository ships (gpt2, mistral, qwen3).
const colm::Tokenizer& fixture(const std::string& name) { return fixture_at(colm::test::fixture("tokenizers/" + name)); }

// Every case of cases.jsonl in dir: encode to the expected ids, decode them to the expected text.
void check_cases(const std::string& name, const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  const colm::Tokenizer& tk = fixture_at(dir);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(name << " loaded in " << load_s << " s");
  const auto cases = read_cases(dir + "/cases.jsonl");
  REQUIRE(cases.size() == 60);
  int encoded_ok = 0, decoded_ok = 0;
  for (const auto& c : cases) {
    INFO(name << " text: " << nlohmann::json(c.text).dump());
    const auto ids = tk.encode(c.text, false);
    CHECK(ids == c.ids);
    const std::string decoded = tk.decode(c.ids, false);
    CHECK(decoded == c.decoded);
    encoded_ok += ids == c.ids;
    decoded_ok += decoded == c.decoded;
  }
  CHECK(encoded_ok == 60);
  CHECK(decoded_ok == 60);
}

std::string all_bytes() {
  std::string s;
  for (int b = 0; b < 256; ++b) s += static_cast<char>(b);
  return s;
}

}  // namespace

TEST_CASE("HF tokenizers encode and decode every fixture case exactly", "[core][tokenizer]") {
  const std::string name = GENERATE(as<std::string>{}, "gpt2", "mistral", "qwen3");
  check_cases(name, colm::test::fixture("tokenizers/" + name));
}

TEST_CASE("the Llama 2 tokenizer encodes and decodes every fixture case exactly", "[core][tokenizer][shared]") {
  COLM_REQUIRE_SHARED_FIXTURE(dir, "tokenizers/llama2");
  check_cases("llama2", dir);
}

TEST_CASE("add_special_tokens follows each post-processor", "[core][tokenizer]") {
  const auto& mistral = fixture("mistral");
  CHECK(mistral.encode("Hello", true).front() == 1);
  CHECK(mistral.encode("Hello world", false) == std::vector<int64_t>{22557, 1526});
  CHECK(mistral.encode("Hello world", true) == std::vector<int64_t>{1, 22557, 1526});
  CHECK(mistral.kind() == "sentencepiece_bpe");
  CHECK(mistral.bos_id() == 1);
  CHECK(mistral.eos_id() == 2);
  CHECK(mistral.id_to_token(13) == "<0x0A>");

  const auto& gpt2 = fixture("gpt2");
  CHECK(gpt2.encode("Hello world", true) == gpt2.encode("Hello world", false));
  CHECK(gpt2.kind() == "byte_level_bpe");
  CHECK(gpt2.vocab_size() == 50257);
  CHECK(gpt2.eos_id() == 50256);

  const auto& qwen = fixture("qwen3");
  CHECK(qwen.encode("Hello world", true) == qwen.encode("Hello world", false));
  CHECK(qwen.vocab_size() == 151669);
  CHECK_FALSE(qwen.bos_id().has_value());  // bos_token: null
  CHECK(qwen.eos_id() == 151645);          // <|im_end|>
  CHECK(qwen.pad_id() == 151643);          // <|endoftext|>
  CHECK(qwen.token_to_id("<think>") == 151667);
}

TEST_CASE("the Llama 2 tokenizer adds <s> and has no pad token", "[core][tokenizer][shared]") {
  COLM_REQUIRE_SHARED_FIXTURE(dir, "tokenizers/llama2");
  const auto& llama = fixture_at(dir);
  CHECK(llama.encode("Hello world", true) == std::vector<int64_t>{1, 15043, 3186});
  CHECK(llama.encode("Hello world", false) == std::vector<int64_t>{15043, 3186});
  CHECK(llama.kind() == "sentencepiece_bpe");
  CHECK(llama.bos_id() == 1);
  CHECK(llama.eos_id() == 2);
  CHECK_FALSE(llama.pad_id().has_value());  // tokenizer_config.json says null
  CHECK(llama.id_to_token(13) == "<0x0A>");
  CHECK(llama.decode(llama.encode("Hi there", true), true) == "Hi there");
  CHECK(llama.fingerprint() != fixture("mistral").fingerprint());
}

TEST_CASE("skip_special_tokens drops only tokens marked special", "[core][tokenizer]") {
  const auto& qwen = fixture("qwen3");
  const auto ids = qwen.encode("<|im_start|>user\nHi<|im_end|><think>x</think>");
  CHECK(qwen.decode(ids, false) == "<|im_start|>user\nHi<|im_end|><think>x</think>");
  CHECK(qwen.decode(ids, true) == "user\nHi<think>x</think>");  // <think> is added but not special
  const auto& mistral = fixture("mistral");
  CHECK(mistral.decode(mistral.encode("Hi there", true), true) == "Hi there");
  CHECK(mistral.decode(mistral.encode("Hi there", true), false) == "<s> Hi there");
}

TEST_CASE("save writes the original JSON of a loaded tokenizer", "[core][tokenizer]") {
  const auto src = colm::test::fixture("tokenizers/mistral");
  const auto& mistral = fixture_at(src);
  const std::string dir = colm::test::temp_dir("colm-tok");
  mistral.save(dir + "/tokenizer.json");
  std::ifstream a(src + "/tokenizer.json", std::ios::binary), b(dir + "/tokenizer.json", std::ios::binary);
  const std::string original((std::istreambuf_iterator<char>(a)), {}), saved((std::istreambuf_iterator<char>(b)), {});
  CHECK(saved == original);
  const auto reloaded = colm::Tokenizer::from_file(dir + "/tokenizer.json");
  CHECK(reloaded.fingerprint() == mistral.fingerprint());
  CHECK(reloaded.encode("<s> Hello </s>") == mistral.encode("<s> Hello </s>"));
  CHECK(reloaded.encode("<s> Hello </s>").front() == 1);
  // Without tokenizer_config.json the template's <s> and the conventional </s> are used.
  CHECK(reloaded.bos_id() == 1);
  CHECK(reloaded.eos_id() == 2);
}

TEST_CASE("fingerprints tell tokenizers apart and ignore formatting", "[core][tokenizer]") {
  CHECK(fixture("gpt2").fingerprint() != fixture("qwen3").fingerprint());
  CHECK(fixture("gpt2").fingerprint() != fixture("mistral").fingerprint());
  const std::string json = colm::Tokenizer::byte_level().to_json_string();
  const auto compact = colm::Tokenizer::from_json_string(nlohmann::json::parse(json).dump(), "compact");
  CHECK(compact.fingerprint() == colm::Tokenizer::byte_level().fingerprint());
  auto changed = nlohmann::json::parse(json);
  changed["added_tokens"][2]["content"] = "<|padding|>";
  CHECK(colm::Tokenizer::from_json_string(changed.dump(), "changed").fingerprint() !=
        colm::Tokenizer::byte_level().fingerprint());
}

TEST_CASE("byte_level maps every byte to its own id and back, invalid UTF-8 included", "[core][tokenizer]") {
  const auto tk = colm::Tokenizer::byte_level();
  CHECK(tk.kind() == "colm_bytes");
  CHECK(tk.vocab_size() == 259);
  const std::string bytes = all_bytes() + "\xff\xfe\xc3(\xe2\x82" + "caf\xc3\xa9";
  const auto ids = tk.encode(bytes);
  REQUIRE(ids.size() == bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) CHECK(ids[i] == static_cast<unsigned char>(bytes[i]));
  CHECK(tk.decode(ids) == bytes);
  CHECK(tk.id_to_token(32) == "\xc4\xa0");  // space is "Ġ" in the ByteLevel alphabet
  CHECK(tk.id_to_token(65) == "A");
  CHECK(tk.encode("").empty());
}

TEST_CASE("byte_level special tokens", "[core][tokenizer]") {
  const auto tk = colm::Tokenizer::byte_level();
  CHECK(tk.bos_id() == 256);
  CHECK(tk.eos_id() == 257);
  CHECK(tk.pad_id() == 258);
  const auto added = tk.added_tokens();
  REQUIRE(added.size() == 3);
  CHECK(added[0].content == "<|bos|>");
  CHECK(added[2].id == 258);
  CHECK(added[1].special);
  CHECK(tk.encode("hi", true) == std::vector<int64_t>{256, 'h', 'i'});
  CHECK(tk.encode("a<|eos|>b") == std::vector<int64_t>{'a', 257, 'b'});
  CHECK(tk.decode({256, 'o', 'k', 257, 258}, false) == "<|bos|>ok<|eos|><|pad|>");
  CHECK(tk.decode({256, 'o', 'k', 257, 258}, true) == "ok");
  CHECK(tk.token_to_id("<|pad|>") == 258);
}

TEST_CASE("byte_level saves a tokenizer.json that loads back identically", "[core][tokenizer]") {
  const auto tk = colm::Tokenizer::byte_level();
  const std::string dir = colm::test::temp_dir("colm-tok");
  tk.save(dir + "/tokenizer.json");
  const auto back = colm::Tokenizer::from_file(dir + "/tokenizer.json");
  CHECK(back.fingerprint() == tk.fingerprint());
  CHECK(back.kind() == "colm_bytes");
  const std::string text = std::string("mixed \xff bytes\n<|bos|> and ") + all_bytes();
  CHECK(back.encode(text, true) == tk.encode(text, true));
  CHECK(back.decode(back.encode(text)) == text);
  CHECK(back.bos_id() == 256);
  CHECK(back.to_json_string() == tk.to_json_string());
  // The file is a standard HF tokenizer.json: the fields HF's loader requires are there.
  const auto j = nlohmann::json::parse(tk.to_json_string());
  CHECK(j["model"]["type"] == "BPE");
  CHECK(j["model"]["vocab"].size() == 256);
  CHECK(j["model"]["merges"].empty());
  CHECK(j["pre_tokenizer"]["type"] == "ByteLevel");
  CHECK(j["pre_tokenizer"]["use_regex"] == false);
  CHECK(j["decoder"]["type"] == "ByteLevel");
  CHECK(j["added_tokens"].size() == 3);
}

TEST_CASE("unsupported components and bad files are errors naming the file and component", "[core][tokenizer]") {
  auto j = nlohmann::json::parse(colm::Tokenizer::byte_level().to_json_string());
  auto expect_error = [](const nlohmann::json& doc, const std::string& needle) {
    try {
      colm::Tokenizer::from_json_string(doc.dump(), "my/tokenizer.json");
      FAIL("no error for " << needle);
    } catch (const colm::Error& e) {
      const std::string what = e.what();
      INFO(what);
      CHECK(what.find("my/tokenizer.json") != std::string::npos);
      CHECK(what.find(needle) != std::string::npos);
    }
  };
  auto bad = j;
  bad["normalizer"] = {{"type", "BertNormalizer"}};
  expect_error(bad, "BertNormalizer");
  bad = j;
  bad["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_error(bad, "Whitespace");
  bad = j;
  bad["decoder"] = {{"type", "WordPiece"}};
  expect_error(bad, "WordPiece");
  bad = j;
  bad["model"]["type"] = "Unigram";
  expect_error(bad, "Unigram");
  bad = j;
  bad["model"]["merges"] = {"\xc4\xa0 zz"};
  expect_error(bad, "merges[0]");
  bad = j;
  bad["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_error(bad, "regex");
  bad = j;
  bad["model"]["vocab"] = {1, 2};
  expect_error(bad, "model.vocab");
  expect_error(nlohmann::json("not an object"), "object");
  CHECK_THROWS_AS(colm::Tokenizer::from_json_string("{", "my/tokenizer.json"), colm::Error);
  CHECK_THROWS_AS(colm::Tokenizer::from_file("/nonexistent/tokenizer.json"), colm::Error);
  CHECK_THROWS_AS(colm::Tokenizer().encode("x"), colm::Error);
}
