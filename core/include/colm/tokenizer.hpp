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
  // Exact mapping: id b (0..255) is byte b; its vocabulary string is GPT-2's bytes_to_unicode(b)
  // (printable Latin-1 bytes 33..126, 161..172, 174..255 map to themselves, the other 68 bytes in
  // order to U+0100..U+0143, e.g. space 0x20 -> "Ġ" U+0120, '\n' -> "Ċ" U+010A). 256 <|bos|>,
  // 257 <|eos|>, 258 <|pad|>: added tokens, special, matched literally in text. The JSON has
  // pre_tokenizer and decoder ByteLevel(add_prefix_space=false, use_regex=false), no normalizer,
  // and a TemplateProcessing post-processor, so encode(text, true) prepends <|bos|>.
  // encode() accepts any bytes (invalid UTF-8 too) and decode() returns them exactly (HF's
  // ByteLevel decoder would turn invalid UTF-8 into U+FFFD; a file holding exactly this tokenizer
  // is recognised on load and decodes exactly too).
  static Tokenizer byte_level();

  bool valid() const;
  // add_special_tokens: prepend/append what the post-processor says (e.g. Llama's <s>). Added
  // tokens written literally in the text are matched either way (as HF does).
  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens = false) const;
  // As HF with clean_up_tokenization_spaces=false; ids with no token are skipped, as HF does.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens = false) const;
  // Vocabulary string of one id ("Ġthe", "▁the", "<0x0A>").
  std::string id_to_token(int64_t id) const;
  std::optional<int64_t> token_to_id(const std::string& token) const;

  int64_t vocab_size() const;  // highest id + 1, added tokens included
  // From tokenizer_config.json next to tokenizer.json (bos_token/eos_token/pad_token: a string,
  // {"content": ...}, or null = none) when it has the key; otherwise the post-processor template
  // (first/last special token), then conventional names (<s>, </s>, <|endoftext|>, <|bos|>, ...).
  std::optional<int64_t> bos_id() const;
  std::optional<int64_t> eos_id() const;
  std::optional<int64_t> pad_id() const;
  std::vector<SpecialToken> added_tokens() const;
  // "byte_level_bpe", "sentencepiece_bpe" or "colm_bytes" ("bpe" for a BPE with neither).
  std::string kind() const;
  // A hash of everything that decides ids: vocab, merges, normalizer, pre-tokenizer, added tokens.
  // SHA-1 over the canonical JSON (sorted keys) of the model options, normalizer, pre_tokenizer,
  // post_processor and added tokens, then the vocab by id and the merges by rank. The decoder and
  // tokenizer_config.json (bos/eos/pad) are not included. Formatting of the file does not matter.
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
