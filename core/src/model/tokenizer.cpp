// colm::Tokenizer: loads a Hugging Face tokenizer.json (BPE + the pipeline components in
// tokenizer_pipeline.cpp), matches added tokens, encodes/decodes, and builds colm's byte tokenizer.
#include "colm/tokenizer.hpp"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include <boost/filesystem.hpp>
#include <spdlog/spdlog.h>

#include "colm/hash.hpp"
#include "model/tokenizer_internal.hpp"

namespace colm {
namespace {

using json = nlohmann::json;

struct AddedToken {
  std::string content;
  int64_t id = 0;
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

// Leftmost-longest literal matching of added tokens (what the crate's Aho-Corasick does). The
// number of added tokens is small, so candidates are bucketed by first byte, longest first.
class AddedMatcher {
 public:
  void add(const std::string& pattern, size_t token) {
    if (pattern.empty()) return;
    auto& bucket = by_first_[static_cast<unsigned char>(pattern[0])];
    bucket.push_back({pattern, token});
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const Entry& a, const Entry& b) { return a.pattern.size() > b.pattern.size(); });
    any_ = true;
  }
  bool empty() const { return !any_; }
  // First match at or after `from`: (start, end, token index); false when none.
  bool find(std::string_view s, size_t from, size_t* start, size_t* end, size_t* token) const {
    for (size_t i = from; i < s.size(); ++i) {
      const auto& bucket = by_first_[static_cast<unsigned char>(s[i])];
      for (const auto& e : bucket) {
        if (s.compare(i, e.pattern.size(), e.pattern) == 0) {
          *start = i;
          *end = i + e.pattern.size();
          *token = e.token;
          return true;
        }
      }
    }
    return false;
  }

 private:
  struct Entry {
    std::string pattern;
    size_t token;
  };
  std::array<std::vector<Entry>, 256> by_first_;
  bool any_ = false;
};

struct Segment {
  size_t begin, end;
  int64_t token;  // index into added tokens, -1 for text
};

// Start of the code point that ends at byte i (ill-formed bytes count as one).
size_t prev_unit_start(std::string_view s, size_t i) {
  for (size_t k = 2; k <= 4 && k <= i; ++k)
    if (tok::utf8_unit(s, i - k) == k) return i - k;
  return i - 1;
}

uint32_t cp_before(std::string_view s, size_t i) {
  const size_t j = prev_unit_start(s, i);
  return tok::utf8_code_point(s, j, i - j);
}

uint32_t cp_at(std::string_view s, size_t i) { return tok::utf8_code_point(s, i, tok::utf8_unit(s, i)); }

}  // namespace

struct Tokenizer::Impl {
  std::string source;     // file path or name, for messages
  std::string json_text;  // what save() writes
  std::string kind;
  std::unique_ptr<tok::Bpe> model;
  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::Decoder> decoder;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, size_t> added_by_content;
  std::unordered_map<int64_t, size_t> added_by_id;
  AddedMatcher raw_matcher, normalized_matcher;
  std::vector<int64_t> post_prefix, post_suffix;  // add_special_tokens=true wraps ids with these
  std::optional<int64_t> bos, eos, pad;
  std::string fingerprint;
  int64_t vocab_size = 0;
  bool exact_bytes = false;  // colm_bytes: decode returns the raw bytes (no U+FFFD substitution)

  // AddedVocabulary::find_matches of the tokenizers crate (single_word, lstrip, rstrip rules).
  std::vector<Segment> split_added(std::string_view s, const AddedMatcher& m) const {
    std::vector<Segment> out;
    if (m.empty()) {
      if (!s.empty()) out.push_back({0, s.size(), -1});
      return out;
    }
    size_t offset = 0, search = 0, start = 0, stop = 0, token = 0;
    while (search < s.size() && m.find(s, search, &start, &stop, &token)) {
      search = stop;
      const AddedToken& t = added[token];
      if (t.single_word) {
        const bool start_space = start == 0 || !tok::is_word_char(cp_before(s, start));
        const bool stop_space = stop == s.size() || !tok::is_word_char(cp_at(s, stop));
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        size_t j = start;
        while (j > offset && tok::is_white_space(cp_before(s, j))) j = prev_unit_start(s, j);
        start = j;
      }
      if (t.rstrip) {
        while (stop < s.size() && tok::is_white_space(cp_at(s, stop))) stop += tok::utf8_unit(s, stop);
        search = stop;
      }
      if (offset < start) out.push_back({offset, start, -1});
      out.push_back({start, stop, static_cast<int64_t>(token)});
      offset = stop;
    }
    if (offset < s.size()) out.push_back({offset, s.size(), -1});
    return out;
  }

  void encode_text(std::string_view segment, bool at_start, std::vector<int64_t>& ids) const {
    std::string s(segment);
    if (normalizer) normalizer->normalize(s);
    if (s.empty()) return;
    std::vector<tok::Piece> pieces;
    for (const Segment& sub : split_added(s, normalized_matcher)) {
      if (sub.token >= 0) {
        ids.push_back(added[sub.token].id);
        continue;
      }
      pieces.clear();
      pieces.push_back(tok::Piece{s.substr(sub.begin, sub.end - sub.begin), at_start && sub.begin == 0});
      if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);
      for (const auto& p : pieces) model->tokenize(p.text, ids);
    }
  }
};

namespace {

using Impl = Tokenizer::Impl;

void parse_added_tokens(const json& root, Impl& impl) {
  if (!root.contains("added_tokens") || root["added_tokens"].is_null()) return;
  const json& arr = root["added_tokens"];
  if (!arr.is_array()) throw Error(impl.source + ": added_tokens must be an array");
  for (size_t i = 0; i < arr.size(); ++i) {
    const json& t = arr[i];
    const std::string where = impl.source + ": added_tokens[" + std::to_string(i) + "]";
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
        !t["content"].is_string())
      throw Error(where + " needs an integer \"id\" and a string \"content\"");
    AddedToken a;
    a.id = t["id"].get<int64_t>();
    if (a.id < 0) throw Error(where + " has a negative id");
    a.content = t["content"].get<std::string>();
    a.special = t.value("special", false);
    a.lstrip = t.value("lstrip", false);
    a.rstrip = t.value("rstrip", false);
    a.single_word = t.value("single_word", false);
    a.normalized = t.value("normalized", !a.special);  // the crate's default
    impl.added_by_content[a.content] = impl.added.size();
    impl.added_by_id[a.id] = impl.added.size();
    impl.added.push_back(std::move(a));
  }
  for (size_t i = 0; i < impl.added.size(); ++i) {
    const AddedToken& a = impl.added[i];
    if (!a.normalized) {
      impl.raw_matcher.add(a.content, i);
    } else {
      // Normalized tokens are matched in normalized text, so their pattern is normalized too.
      std::string pattern = a.content;
      if (impl.normalizer) impl.normalizer->normalize(pattern);
      impl.normalized_matcher.add(pattern, i);
    }
  }
}

int64_t id_of(const Impl& impl, const std::string& token) {
  auto it = impl.added_by_content.find(token);
  if (it != impl.added_by_content.end()) return impl.added[it->second].id;
  return impl.model->token_to_id(token);
}

// add_special_tokens: what ids go before and after the sequence ("single" template).
void parse_post_processor(const json& j, Impl& impl, std::vector<int64_t>& prefix, std::vector<int64_t>& suffix) {
  if (j.is_null()) return;
  const std::string where = impl.source + ": post_processor";
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) throw Error(where + " without a \"type\"");
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array()) throw Error(where + " Sequence without \"processors\"");
    for (const auto& p : j["processors"]) {
      std::vector<int64_t> pre, suf;
      parse_post_processor(p, impl, pre, suf);
      prefix.insert(prefix.begin(), pre.begin(), pre.end());  // a later processor wraps the earlier result
      suffix.insert(suffix.end(), suf.begin(), suf.end());
    }
    return;
  }
  if (type == "TemplateProcessing") {
    if (!j.contains("single") || !j["single"].is_array())
      throw Error(where + " TemplateProcessing: \"single\" must be a list of pieces");
    const json& specials = j.value("special_tokens", json::object());
    bool seen_sequence = false;
    for (const auto& item : j["single"]) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = item["SpecialToken"].at("id").get<std::string>();
        if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array())
          throw Error(where + " TemplateProcessing: special token \"" + name + "\" has no entry in special_tokens");
        for (const auto& id : specials[name]["ids"]) (seen_sequence ? suffix : prefix).push_back(id.get<int64_t>());
      } else {
        throw Error(where + " TemplateProcessing: unknown template piece " + item.dump());
      }
    }
    return;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    prefix.push_back(j.at("cls").at(1).get<int64_t>());
    suffix.push_back(j.at("sep").at(1).get<int64_t>());
    return;
  }
  throw Error(where + ": unsupported post_processor \"" + type +
              "\" (supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)");
}

// SHA-1 over everything that decides ids: the canonical JSON (sorted keys, compact) of the model's
// options, normalizer, pre_tokenizer, post_processor and added tokens (sorted by id), then the
// vocabulary in id order and the merges in rank order. The decoder is left out on purpose: it
// changes text, not ids. Key order, whitespace and vocab order in the file do not matter.
std::string canonical_fingerprint(const json& root, const tok::BpeTables& tables, const Impl& impl) {
  json canon = json::object();
  for (const char* key : {"model", "normalizer", "pre_tokenizer", "post_processor"})
    canon[key] = root.contains(key) ? root[key] : json(nullptr);
  json added = json::array();
  std::vector<const AddedToken*> sorted;
  for (const auto& a : impl.added) sorted.push_back(&a);
  std::sort(sorted.begin(), sorted.end(), [](const AddedToken* a, const AddedToken* b) { return a->id < b->id; });
  for (const AddedToken* a : sorted)
    added.push_back({{"id", a->id},
                     {"content", a->content},
                     {"special", a->special},
                     {"lstrip", a->lstrip},
                     {"rstrip", a->rstrip},
                     {"single_word", a->single_word},
                     {"normalized", a->normalized}});
  canon["added_tokens"] = std::move(added);
  Hasher h;
  h.add(canon.dump());
  std::vector<const std::pair<std::string, int64_t>*> vocab;
  vocab.reserve(tables.vocab.size());
  for (const auto& v : tables.vocab) vocab.push_back(&v);
  std::sort(vocab.begin(), vocab.end(), [](const auto* a, const auto* b) {
    return a->second != b->second ? a->second < b->second : a->first < b->first;
  });
  h.add(static_cast<int64_t>(vocab.size()));
  for (const auto* v : vocab) h.add(v->second).add(v->first);
  h.add(static_cast<int64_t>(tables.merges.size()));
  for (const auto& [a, b] : tables.merges) h.add(a).add(b);
  return h.hex();
}

std::optional<int64_t> first_present(const Impl& impl, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    const int64_t id = id_of(impl, n);
    if (id >= 0) return id;
  }
  return std::nullopt;
}

// bos/eos/pad without tokenizer_config.json: the post-processor's template, then conventional names.
void default_special_ids(Impl& impl) {
  impl.bos = impl.post_prefix.empty() ? first_present(impl, {"<s>", "<|bos|>", "<|begin_of_text|>", "<|endoftext|>"})
                                      : std::optional<int64_t>(impl.post_prefix.front());
  impl.eos = impl.post_suffix.empty() ? first_present(impl, {"</s>", "<|eos|>", "<|end_of_text|>", "<|endoftext|>"})
                                      : std::optional<int64_t>(impl.post_suffix.back());
  impl.pad = first_present(impl, {"<|pad|>", "<pad>"});
}

std::shared_ptr<Impl> load(const std::string& text, const std::string& source) {
  const auto t0 = std::chrono::steady_clock::now();
  tok::BpeTables tables;
  const json root = tok::parse_tokenizer_json(text, source, tables);
  if (!root.is_object()) throw Error(source + ": a tokenizer.json must be a JSON object");
  auto impl = std::make_shared<Impl>();
  impl->source = source;
  impl->json_text = text;
  if (!root.contains("model") || !root["model"].is_object()) throw Error(source + ": no \"model\" object");
  const json& model = root["model"];
  const std::string model_type = model.value("type", std::string("BPE"));  // old files omit it
  if (model_type != "BPE")
    throw Error(source + ": unsupported model \"" + model_type + "\" (supported: BPE)");
  try {
    impl->normalizer = tok::make_normalizer(root.value("normalizer", json(nullptr)), source);
    impl->pre_tokenizer = tok::make_pre_tokenizer(root.value("pre_tokenizer", json(nullptr)), source);
    impl->decoder = tok::make_decoder(root.value("decoder", json(nullptr)), source);
    parse_added_tokens(root, *impl);
    impl->fingerprint = canonical_fingerprint(root, tables, *impl);  // before the model takes the tables
    impl->model = std::make_unique<tok::Bpe>(model, std::move(tables), source);
    parse_post_processor(root.value("post_processor", json(nullptr)), *impl, impl->post_prefix, impl->post_suffix);
  } catch (const json::exception& e) {  // a field of the wrong JSON type
    throw Error(source + ": malformed component: " + e.what());
  }
  impl->vocab_size = impl->model->size_bound();
  for (const auto& a : impl->added) impl->vocab_size = std::max(impl->vocab_size, a.id + 1);

  const json null_json(nullptr);
  const auto& pre = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : null_json;
  const auto& dec = root.contains("decoder") ? root["decoder"] : null_json;
  if (tok::uses_component(pre, "ByteLevel") || tok::uses_component(dec, "ByteLevel"))
    impl->kind = "byte_level_bpe";
  else if (impl->model->byte_fallback() || tok::uses_component(pre, "Metaspace") || tok::uses_component(dec, "Metaspace"))
    impl->kind = "sentencepiece_bpe";
  else
    impl->kind = "bpe";
  default_special_ids(*impl);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  spdlog::debug("[tokenizer] loaded {}: {} vocab {} merges {} added {} in {:.0f} ms", source, impl->kind,
                impl->model->vocab_count(), impl->model->merge_count(), impl->added.size(), ms);
  return impl;
}

constexpr const char* kByteLevelSpecials[3] = {"<|bos|>", "<|eos|>", "<|pad|>"};

std::string byte_level_json() {
  // ordered_json keeps the vocabulary in id order, so the file reads naturally.
  using ojson = nlohmann::ordered_json;
  ojson vocab = ojson::object();
  const auto& map = tok::byte_to_unicode();
  for (int b = 0; b < 256; ++b) vocab[map[b]] = b;
  ojson added = ojson::array();
  for (int k = 0; k < 3; ++k)
    added.push_back({{"id", 256 + k},
                     {"content", kByteLevelSpecials[k]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const ojson byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  ojson root = ojson::object();
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  root["added_tokens"] = added;
  root["normalizer"] = nullptr;
  root["pre_tokenizer"] = byte_level;
  root["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", ojson::array({{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                               {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", ojson::array({{{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 0}}}},
                             {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                             {{"SpecialToken", {{"id", "<|bos|>"}, {"type_id", 1}}}},
                             {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
      {"special_tokens", {{"<|bos|>", {{"id", "<|bos|>"}, {"ids", {256}}, {"tokens", {"<|bos|>"}}}}}}};
  root["decoder"] = byte_level;
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", nullptr},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", false},
                   {"byte_fallback", false},
                   {"ignore_merges", false},
                   {"vocab", vocab},
                   {"merges", ojson::array()}};
  return root.dump(2) + "\n";
}

const std::string& byte_level_fingerprint() {
  static const std::string fp = load(byte_level_json(), "colm byte_level")->fingerprint;
  return fp;
}

// A file holding exactly colm's byte tokenizer gets its exact-bytes decoding back.
void detect_colm_bytes(Impl& impl) {
  if (impl.model->vocab_count() == 256 && impl.model->merge_count() == 0 && impl.added.size() == 3 &&
      impl.fingerprint == byte_level_fingerprint()) {
    impl.kind = "colm_bytes";
    impl.exact_bytes = true;
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open the file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(path + ": read error");
  return ss.str();
}

// tokenizer_config.json's bos_token/eos_token/pad_token: a string, {"content": ...} or null.
void apply_tokenizer_config(const std::string& path, Impl& impl) {
  json cfg;
  try {
    cfg = json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
  if (!cfg.is_object()) throw Error(path + ": must be a JSON object");
  const std::pair<const char*, std::optional<int64_t>*> keys[] = {
      {"bos_token", &impl.bos}, {"eos_token", &impl.eos}, {"pad_token", &impl.pad}};
  for (const auto& [key, slot] : keys) {
    if (!cfg.contains(key)) continue;  // absent: keep the default from tokenizer.json
    const json& v = cfg[key];
    if (v.is_null()) {
      *slot = std::nullopt;  // the model declares it has none
      continue;
    }
    std::string content;
    if (v.is_string())
      content = v.get<std::string>();
    else if (v.is_object() && v.contains("content") && v["content"].is_string())
      content = v["content"].get<std::string>();
    else
      throw Error(path + ": \"" + key + "\" must be a string, {\"content\": ...} or null");
    const int64_t id = id_of(impl, content);
    if (id < 0) throw Error(path + ": \"" + key + "\" is \"" + content + "\", which is not in the vocabulary");
    *slot = id;
  }
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(const Tokenizer&) = default;
Tokenizer& Tokenizer::operator=(const Tokenizer&) = default;
Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json_path) {
  auto impl = load(read_file(tokenizer_json_path), tokenizer_json_path);
  detect_colm_bytes(*impl);
  const auto config = boost::filesystem::path(tokenizer_json_path).parent_path() / "tokenizer_config.json";
  if (boost::filesystem::exists(config)) apply_tokenizer_config(config.string(), *impl);
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_json_string(const std::string& json_text, const std::string& source_name) {
  auto impl = load(json_text, source_name);
  detect_colm_bytes(*impl);
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::byte_level() {
  auto impl = load(byte_level_json(), "colm byte_level");
  impl->kind = "colm_bytes";
  impl->exact_bytes = true;
  return Tokenizer(std::move(impl));
}

bool Tokenizer::valid() const { return impl_ != nullptr; }

#define COLM_TOKENIZER_VALID() COLM_CHECK(impl_, "[tokenizer] " << __func__ << " on an empty Tokenizer")

std::vector<int64_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  COLM_TOKENIZER_VALID();
  std::vector<int64_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = impl_->post_prefix;
  // Added tokens are cut out of the raw text first; each text segment in between is normalized,
  // pre-tokenized and BPE-encoded on its own (so Llama's Prepend applies per segment).
  for (const Segment& seg : impl_->split_added(text, impl_->raw_matcher)) {
    if (seg.token >= 0)
      ids.push_back(impl_->added[seg.token].id);
    else
      impl_->encode_text(std::string_view(text).substr(seg.begin, seg.end - seg.begin), seg.begin == 0, ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), impl_->post_suffix.begin(), impl_->post_suffix.end());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  COLM_TOKENIZER_VALID();
  const Impl& impl = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  std::string raw;  // exact_bytes
  for (int64_t id : ids) {
    const std::string* tok_str = nullptr;
    auto it = impl.added_by_id.find(id);
    if (it != impl.added_by_id.end()) {
      const AddedToken& a = impl.added[it->second];
      if (skip_special_tokens && a.special) continue;
      tok_str = &a.content;
    } else {
      tok_str = impl.model->id_to_token(id);
    }
    if (!tok_str) continue;  // ids without a token (e.g. padded output rows) are skipped, as HF does
    if (impl.exact_bytes) {
      if (it == impl.added_by_id.end() && id >= 0 && id < 256)
        raw += static_cast<char>(id);
      else
        raw += *tok_str;
    } else {
      tokens.push_back(*tok_str);
    }
  }
  if (impl.exact_bytes) return raw;
  if (!impl.decoder) {  // the crate joins with spaces when there is no decoder
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  impl.decoder->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

std::string Tokenizer::id_to_token(int64_t id) const {
  COLM_TOKENIZER_VALID();
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  const std::string* s = impl_->model->id_to_token(id);
  COLM_CHECK(s, "[tokenizer] " << impl_->source << ": id " << id << " is not in the vocabulary (size "
                               << impl_->vocab_size << ")");
  return *s;
}

std::optional<int64_t> Tokenizer::token_to_id(const std::string& token) const {
  COLM_TOKENIZER_VALID();
  const int64_t id = id_of(*impl_, token);
  return id >= 0 ? std::optional<int64_t>(id) : std::nullopt;
}

int64_t Tokenizer::vocab_size() const {
  COLM_TOKENIZER_VALID();
  return impl_->vocab_size;
}

std::optional<int64_t> Tokenizer::bos_id() const {
  COLM_TOKENIZER_VALID();
  return impl_->bos;
}

std::optional<int64_t> Tokenizer::eos_id() const {
  COLM_TOKENIZER_VALID();
  return impl_->eos;
}

std::optional<int64_t> Tokenizer::pad_id() const {
  COLM_TOKENIZER_VALID();
  return impl_->pad;
}

std::vector<SpecialToken> Tokenizer::added_tokens() const {
  COLM_TOKENIZER_VALID();
  std::vector<SpecialToken> out;
  for (const auto& a : impl_->added) out.push_back(SpecialToken{a.content, a.id, a.special});
  return out;
}

std::string Tokenizer::kind() const {
  COLM_TOKENIZER_VALID();
  return impl_->kind;
}

std::string Tokenizer::fingerprint() const {
  COLM_TOKENIZER_VALID();
  return impl_->fingerprint;
}

void Tokenizer::save(const std::string& path) const {
  COLM_TOKENIZER_VALID();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(path + ": cannot open for writing the tokenizer");
  out << impl_->json_text;
  out.close();
  if (!out) throw Error(path + ": write error while saving the tokenizer");
}

std::string Tokenizer::to_json_string() const {
  COLM_TOKENIZER_VALID();
  return impl_->json_text;
}

}  // namespace colm
