// Tokenizer: Hugging Face tokenizer.json (byte-level BPE: GPT-2, Llama-3, Qwen; SentencePiece-style
// BPE with byte fallback: Llama-2, Mistral; added/special tokens) and colm's own byte-level tokenizer.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "colm/error.hpp"

namespace colm {

struct SpecialToken {
  std::string content;
  int64_t id;
  bool special;  // HF "special": skipped by decode(skip_special_tokens=true)
};

class COLM_VISIBLE Tokenizer {
 public:
  Tokenizer();  // empty; valid() is false
  ~Tokenizer();
  Tokenizer(const Tokenizer&);
  Tokenizer& operator=(const Tokenizer&);

  // Loads a Hugging Face tokenizer.json. Unsupported components are a colm::Error naming them.
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  static Tokenizer from_json_string(const std::string& json, const std::string& source_name);
  // colm's own tokenizer for models it trains: ids 0..255 are the bytes, then <|bos|>, <|eos|>,
  // <|pad|> (ids 256, 257, 258). Serialisable as a valid HF tokenizer.json (BPE with no merges).
  static Tokenizer byte_level();

  bool valid() const;
  // add_special_tokens: prepend/append what the post-processor says (e.g. Llama's <s>).
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens = false) const;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;
  // Vocabulary string of one id ("Ġthe", "▁the", "<0x0A>").
  std::string id_to_token(int64_t id) const;
  std::optional<int64_t> token_to_id(const std::string& token) const;

  int64_t vocab_size() const;  // highest id + 1, added tokens included
  std::optional<int64_t> bos_id() const;
  std::optional<int64_t> eos_id() const;
  std::optional<int64_t> pad_id() const;
  std::vector<SpecialToken> added_tokens() const;
  // "byte_level_bpe", "sentencepiece_bpe" or "colm_bytes".
  std::string kind() const;
  // A hash of everything that decides ids: vocab, merges, normalizer, pre-tokenizer, added tokens.
  std::string fingerprint() const;

  // Writes tokenizer.json (the original JSON for loaded tokenizers; a generated one for byte_level).
  void save(const std::string& path) const;
  std::string to_json_string() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

}  // namespace colm
