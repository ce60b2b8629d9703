// Internals of colm::Tokenizer: UTF-8 helpers, PCRE2 regexes, the Hugging Face pipeline components
// (normalizers, pre-tokenizers, decoders) and the BPE model. Only core/src/model/tokenizer*.cpp and vocab_check.cpp include it.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace colm::tok {

// ---- UTF-8 -------------------------------------------------------------------------------------
// Input text may hold invalid UTF-8 (colm's byte tokenizer must round-trip any bytes). Everywhere in
// the pipeline an invalid byte is one "character" of its own: regexes never match it, normalizers
// keep it, BPE looks it up as a one-byte symbol (byte-level vocabularies and byte_fallback cover it).

// Byte length of the unit at s[i]: a well-formed UTF-8 sequence (1..4) or 1 for an ill-formed byte.
size_t utf8_unit(std::string_view s, size_t i);
// Code point of the unit at s[i] (length from utf8_unit); kInvalidCp for an ill-formed byte.
constexpr uint32_t kInvalidCp = 0xFFFFFFFFu;
uint32_t utf8_code_point(std::string_view s, size_t i, size_t len);
void utf8_append(std::string& out, uint32_t cp);
bool utf8_valid(std::string_view s);
// Rust's String::from_utf8_lossy: each maximal ill-formed subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);
// Rust's char::is_whitespace / regex \w (Unicode), used by the added-token lstrip/rstrip/single_word rules.
bool is_white_space(uint32_t cp);
bool is_word_char(uint32_t cp);

// GPT-2's bytes_to_unicode(): byte b <-> a printable code point (UTF-8 string form for speed).
const std::array<std::string, 256>& byte_to_unicode();
// The byte a code point stands for, or -1 when it is not in the map.
int unicode_to_byte(uint32_t cp);

// ICU NFC (ill-formed bytes are kept and split the text into separately normalised runs).
std::string nfc(std::string_view s);

// ---- Regex (PCRE2, UTF + UCP, JIT when available) ----------------------------------------------
class Regex {
 public:
  // where: "<file>: pre_tokenizer Split" etc., for the error message on a bad pattern.
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Appends the non-overlapping, non-empty matches [start, end) of s, left to right.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
  std::string pattern_;
};

// An HF "pattern": {"String": "..."} (literal) or {"Regex": "..."}.
class Pattern {
 public:
  Pattern(const nlohmann::json& j, const std::string& where);
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

// ---- Pipeline components -----------------------------------------------------------------------
// One pre-token. at_start: it begins at offset 0 of the original text (Metaspace prepend "first").
struct Piece {
  std::string text;
  bool at_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces pieces by their split (empty pieces dropped, as HF does).
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // HF decode_chain: token strings in, strings out (joined with "" at the end).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// Each throws colm::Error naming the component type and `where` (the file) for unsupported types.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& where);

// True when a (possibly nested) component of that type appears in j ("ByteLevel", "Metaspace"...).
bool uses_component(const nlohmann::json& j, const std::string& type);

// ---- tokenizer.json reading --------------------------------------------------------------------
// model.vocab and model.merges, as read from the file (kept out of the DOM for speed).
struct BpeTables {
  std::vector<std::pair<std::string, int64_t>> vocab;        // file order
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  bool has_vocab = false, has_merges = false;
};
// Parses a tokenizer.json; the returned DOM's "model" has no "vocab"/"merges" (they are in tables).
nlohmann::json parse_tokenizer_json(const std::string& text, const std::string& where, BpeTables& tables);

// ---- BPE model ---------------------------------------------------------------------------------
class Bpe {
 public:
  // model: the options of the model object (vocab and merges come in tables).
  // The tables' strings are moved into the model.
  Bpe(const nlohmann::json& model, BpeTables&& tables, const std::string& where);
  // Appends the ids of one pre-token (cached per word).
  void tokenize(const std::string& word, std::vector<int64_t>& out) const;
  int64_t token_to_id(const std::string& token) const;  // -1 when absent
  const std::string* id_to_token(int64_t id) const;     // nullptr when absent
  int64_t size_bound() const { return static_cast<int64_t>(vocab_r_.size()); }
  size_t vocab_count() const { return vocab_count_; }
  size_t merge_count() const { return merges_.size(); }
  bool byte_fallback() const { return byte_fallback_; }

 private:
  void merge_word(const std::string& word, std::vector<int64_t>& out) const;

  // Open addressing (left id << 32 | right id) -> (rank, merged id): builds and probes several
  // times faster than std::unordered_map for ~150k merges.
  class MergeTable {
   public:
    struct Slot {
      uint64_t key;
      int32_t rank, new_id;
    };
    void reserve(size_t n);
    void put(uint64_t key, int32_t rank, int32_t new_id);
    const Slot* find(uint64_t key) const;
    size_t size() const { return size_; }

   private:
    static constexpr uint64_t kEmpty = ~0ull;
    std::vector<Slot> slots_;
    uint64_t mask_ = 0;
    size_t size_ = 0;
  };

  // Vocabulary as an open-addressing table over tokens_: slot = (hash >> 32) << 32 | (index + 1).
  int32_t vocab_find(std::string_view token) const;  // id, or -1
  std::vector<std::string> tokens_;  // the strings, file order
  std::vector<int32_t> token_ids_;   // id of tokens_[i]
  std::vector<uint64_t> vocab_slots_;
  uint64_t vocab_mask_ = 0;
  size_t vocab_count_ = 0;
  std::vector<int32_t> vocab_r_;  // id -> index in tokens_, -1 for none
  MergeTable merges_;
  int32_t unk_id_ = -1;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // <0xXX> ids for byte_fallback, -1 when absent

  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace colm::tok
