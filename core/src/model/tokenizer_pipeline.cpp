// Hugging Face tokenizer pipeline components, built from tokenizer.json: normalizers, pre-tokenizers
// and decoders, each mirroring the semantics of the `tokenizers` crate. BPE is in tokenizer_bpe.cpp.
#include <algorithm>
#include <cctype>

#include "colm/error.hpp"
#include "model/tokenizer_internal.hpp"

namespace colm::tok {
namespace {

using json = nlohmann::json;
using Spans = std::vector<std::pair<size_t, size_t>>;

std::string type_of(const json& j, const std::string& where, const char* what) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw Error(where + ": " + what + " without a \"type\": " + j.dump().substr(0, 200));
  return j["type"].get<std::string>();
}

template <class T>
T get_or(const json& j, const char* key, T fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return j[key].get<T>();
}

// Single Unicode character of a JSON string field (Metaspace replacement, Strip content).
std::string one_char(const json& j, const char* key, const std::string& fallback, const std::string& where) {
  const std::string s = get_or<std::string>(j, key, fallback);
  if (s.empty() || utf8_unit(s, 0) != s.size())
    throw Error(where + ": \"" + key + "\" must be one character, got \"" + s + "\"");
  return s;
}

// ---- Normalizers -------------------------------------------------------------------------------

class NfcNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = nfc(s); }
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend_);  // HF leaves an empty string empty
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(const json& j, const std::string& where)
      : pattern_(j.at("pattern"), where), content_(get_or<std::string>(j, "content", "")) {}
  void normalize(std::string& s) const override {
    Spans spans;
    pattern_.find_all(s, spans);
    if (spans.empty()) return;
    std::string out;
    out.reserve(s.size() + spans.size() * content_.size());
    size_t prev = 0;
    for (const auto& [a, b] : spans) {
      out.append(s, prev, a - prev);
      out += content_;
      prev = b;
    }
    out.append(s, prev, std::string::npos);
    s.swap(out);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
  void normalize(std::string& s) const override {
    for (const auto& p : parts_) p->normalize(s);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

// ---- Pre-tokenizers ----------------------------------------------------------------------------

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const std::string& b, const std::string& where) {
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  throw Error(where + ": unsupported Split behavior \"" + b + "\"");
}

// NormalizedString::split of the tokenizers crate: matches and the gaps between them, then merged
// according to the behaviour; empty pieces are dropped.
void split_piece(const Piece& piece, const Spans& match_spans, Behavior behavior, bool invert,
                 std::vector<Piece>& out) {
  const std::string& s = piece.text;
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> parts;
  size_t prev = 0;
  for (const auto& [a, b] : match_spans) {
    if (prev != a) parts.push_back({{prev, a}, false});
    parts.push_back({{a, b}, true});
    prev = b;
  }
  if (prev != s.size()) parts.push_back({{prev, s.size()}, false});
  if (invert)
    for (auto& p : parts) p.second = !p.second;

  std::vector<std::pair<size_t, size_t>> kept;
  switch (behavior) {
    case Behavior::kIsolated:
      for (const auto& p : parts) kept.push_back(p.first);
      break;
    case Behavior::kRemoved:
      for (const auto& p : parts)
        if (!p.second) kept.push_back(p.first);
      break;
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& [span, is_match] : parts) {
        if (is_match && !previous_match && !kept.empty())
          kept.back().second = span.second;
        else
          kept.push_back(span);
        previous_match = is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->second && !previous_match && !kept.empty())
          kept.back().first = it->first.first;
        else
          kept.push_back(it->first);
        previous_match = it->second;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (const auto& [span, is_match] : parts) {
        if (is_match == previous_match && !kept.empty())
          kept.back().second = span.second;
        else
          kept.push_back(span);
        previous_match = is_match;
      }
      break;
    }
  }
  for (const auto& [a, b] : kept)
    if (b > a) out.push_back(Piece{s.substr(a, b - a), piece.at_start && a == 0});
}

// GPT-2's pre-tokenisation pattern, as the ByteLevel pre-tokenizer of the tokenizers crate uses it.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(const json& j, const std::string& where)
      : add_prefix_space_(get_or<bool>(j, "add_prefix_space", true)), use_regex_(get_or<bool>(j, "use_regex", true)) {
    if (use_regex_) regex_ = std::make_unique<Regex>(kGpt2Pattern, where + ": pre_tokenizer ByteLevel");
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size());
    Spans spans;
    for (auto& p : pieces) {
      if (add_prefix_space_ && !p.text.empty() && p.text[0] != ' ') p.text.insert(0, " ");
      if (use_regex_) {
        spans.clear();
        regex_->find_all(p.text, spans);
        split_piece(p, spans, Behavior::kIsolated, false, out);
      } else if (!p.text.empty()) {
        out.push_back(std::move(p));
      }
    }
    const auto& map = byte_to_unicode();
    for (auto& p : out) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += map[static_cast<unsigned char>(c)];
      p.text.swap(mapped);
    }
    pieces.swap(out);
  }

 private:
  bool add_prefix_space_, use_regex_;
  std::unique_ptr<Regex> regex_;
};

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(const json& j, const std::string& where)
      : pattern_(j.at("pattern"), where + ": pre_tokenizer Split"),
        behavior_(parse_behavior(get_or<std::string>(j, "behavior", "Isolated"), where)),
        invert_(get_or<bool>(j, "invert", false)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    Spans spans;
    for (const auto& p : pieces) {
      spans.clear();
      pattern_.find_all(p.text, spans);
      split_piece(p, spans, behavior_, invert_, out);
    }
    pieces.swap(out);
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

PrependScheme parse_prepend_scheme(const json& j, const std::string& where) {
  if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
    const std::string s = j["prepend_scheme"].get<std::string>();
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    throw Error(where + ": unsupported Metaspace prepend_scheme \"" + s + "\"");
  }
  // Files written before prepend_scheme existed carry add_prefix_space instead.
  return get_or<bool>(j, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
}

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(const json& j, const std::string& where)
      : replacement_(one_char(j, "replacement", "\xE2\x96\x81", where)),
        scheme_(parse_prepend_scheme(j, where)),
        split_(get_or<bool>(j, "split", true)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    Spans spans;
    for (auto& p : pieces) {
      std::string s;
      s.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ')
          s += replacement_;
        else
          s += c;
      }
      const bool starts = s.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways || (scheme_ == PrependScheme::kFirst && p.at_start)))
        s.insert(0, replacement_);
      Piece q{std::move(s), p.at_start};
      if (!split_) {
        if (!q.text.empty()) out.push_back(std::move(q));
        continue;
      }
      spans.clear();
      size_t pos = 0;
      while ((pos = q.text.find(replacement_, pos)) != std::string::npos) {
        spans.emplace_back(pos, pos + replacement_.size());
        pos += replacement_.size();
      }
      split_piece(q, spans, Behavior::kMergedWithNext, false, out);
    }
    pieces.swap(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

// ---- Decoders ----------------------------------------------------------------------------------

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      const size_t mark = bytes.size();
      bool mapped = true;
      for (size_t i = 0; i < t.size();) {
        const size_t len = utf8_unit(t, i);
        const int b = unicode_to_byte(utf8_code_point(t, i, len));
        if (b < 0) {
          mapped = false;
          break;
        }
        bytes += static_cast<char>(b);
        i += len;
      }
      if (!mapped) {  // a token outside the byte alphabet (e.g. an added token) passes through as is
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(const json& j, const std::string& where) : normalizer_(j, where + ": decoder Replace") {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) normalizer_.normalize(t);
  }

 private:
  ReplaceNormalizer normalizer_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t pending_count = 0;
    auto flush = [&] {
      if (pending_count == 0) return;
      if (utf8_valid(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending_count; ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
      pending_count = 0;
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4])))
        byte = std::stoi(t.substr(3, 2), nullptr, 16);
      if (byte >= 0) {
        pending += static_cast<char>(byte);
        ++pending_count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string joined;
    for (const auto& t : tokens) joined += t;
    tokens.assign(1, std::move(joined));
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(const json& j, const std::string& where)
      : content_(one_char(j, "content", " ", where)),
        start_(get_or<size_t>(j, "start", 0)),
        stop_(get_or<size_t>(j, "stop", 0)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    const size_t w = content_.size();
    for (auto& t : tokens) {
      size_t begin = 0;
      for (size_t k = 0; k < start_ && t.compare(begin, w, content_) == 0; ++k) begin += w;
      size_t end = t.size();
      for (size_t k = 0; k < stop_ && end >= begin + w && t.compare(end - w, w, content_) == 0; ++k) end -= w;
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(const json& j, const std::string& where)
      : replacement_(one_char(j, "replacement", "\xE2\x96\x81", where)), scheme_(parse_prepend_scheme(j, where)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    // As the tokenizers crate: every replacement char of the first token is dropped (not only a
    // leading one) unless the scheme is "never"; elsewhere it becomes a space.
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      std::string out;
      out.reserve(t.size());
      for (size_t p = 0; p < t.size();) {
        if (t.compare(p, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && scheme_ != PrependScheme::kNever)) out += ' ';
          p += replacement_.size();
        } else {
          out += t[p++];
        }
      }
      tokens[i].swap(out);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts) : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

const json& array_field(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key) || !j[key].is_array())
    throw Error(where + ": Sequence without an array \"" + key + "\"");
  return j[key];
}

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "normalizer");
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(j.at("prepend").get<std::string>());
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(j, where + ": normalizer Replace");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const auto& p : array_field(j, "normalizers", where + ": normalizer Sequence"))
      if (auto n = make_normalizer(p, where)) parts.push_back(std::move(n));
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  throw Error(where + ": unsupported normalizer \"" + type + "\" (supported: NFC, Prepend, Replace, Sequence)");
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "pre_tokenizer");
  if (type == "ByteLevel") return std::make_unique<ByteLevelPreTokenizer>(j, where);
  if (type == "Split") return std::make_unique<SplitPreTokenizer>(j, where);
  if (type == "Metaspace") return std::make_unique<MetaspacePreTokenizer>(j, where + ": pre_tokenizer Metaspace");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (const auto& p : array_field(j, "pretokenizers", where + ": pre_tokenizer Sequence"))
      if (auto n = make_pre_tokenizer(p, where)) parts.push_back(std::move(n));
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  throw Error(where + ": unsupported pre_tokenizer \"" + type +
              "\" (supported: ByteLevel, Split, Metaspace, Sequence)");
}

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = type_of(j, where, "decoder");
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(j, where);
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") return std::make_unique<StripDecoder>(j, where + ": decoder Strip");
  if (type == "Metaspace") return std::make_unique<MetaspaceDecoder>(j, where + ": decoder Metaspace");
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> parts;
    for (const auto& p : array_field(j, "decoders", where + ": decoder Sequence"))
      if (auto n = make_decoder(p, where)) parts.push_back(std::move(n));
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  throw Error(where + ": unsupported decoder \"" + type +
              "\" (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence)");
}

bool uses_component(const json& j, const std::string& type) {
  if (j.is_object()) {
    if (j.contains("type") && j["type"].is_string() && j["type"].get<std::string>() == type) return true;
    for (const auto& [k, v] : j.items())
      if ((v.is_array() || v.is_object()) && uses_component(v, type)) return true;
  } else if (j.is_array()) {
    for (const auto& v : j)
      if (uses_component(v, type)) return true;
  }
  return false;
}

}  // namespace colm::tok
