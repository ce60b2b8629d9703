// Text primitives of the tokenizer: UTF-8 scanning and lossy decoding, GPT-2's byte<->unicode map,
// ICU NFC and PCRE2 regexes. The pipeline components that use them live in tokenizer_pipeline.cpp.
#include <cstring>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include "colm/error.hpp"
#include "model/tokenizer_internal.hpp"

namespace colm::tok {

// ---- UTF-8 -------------------------------------------------------------------------------------

namespace {

// Number of bytes of the longest prefix of s[i..] that can start a well-formed sequence, and the
// length that sequence needs (Unicode "maximal subpart" rules, as Rust's from_utf8_lossy uses).
void utf8_scan(std::string_view s, size_t i, size_t* valid_prefix, size_t* needed) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    *valid_prefix = *needed = 1;
    return;
  }
  size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    *valid_prefix = 0;
    *needed = 1;
    return;
  }
  size_t k = 1;
  while (k < need && i + k < s.size()) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    const unsigned char l = (k == 1) ? lo : 0x80, h = (k == 1) ? hi : 0xBF;
    if (b < l || b > h) break;
    ++k;
  }
  *valid_prefix = k;
  *needed = need;
}

}  // namespace

size_t utf8_unit(std::string_view s, size_t i) {
  size_t prefix = 0, need = 0;
  utf8_scan(s, i, &prefix, &need);
  return prefix == need ? need : 1;
}

uint32_t utf8_code_point(std::string_view s, size_t i, size_t len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (len == 1) return b0 < 0x80 ? b0 : kInvalidCp;
  uint32_t cp = b0 & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  return cp;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool utf8_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t prefix = 0, need = 0;
    utf8_scan(s, i, &prefix, &need);
    if (prefix != need) return false;
    i += need;
  }
  return true;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t prefix = 0, need = 0;
    utf8_scan(s, i, &prefix, &need);
    if (prefix == need) {
      out.append(s.data() + i, need);
      i += need;
    } else {
      out += "\xEF\xBF\xBD";
      i += prefix == 0 ? 1 : prefix;
    }
  }
  return out;
}

bool is_white_space(uint32_t cp) { return cp != kInvalidCp && u_isUWhiteSpace(static_cast<UChar32>(cp)); }

bool is_word_char(uint32_t cp) {
  if (cp == kInvalidCp) return false;
  const auto c = static_cast<UChar32>(cp);
  if (u_isUAlphabetic(c) || cp == 0x200C || cp == 0x200D) return true;
  const int8_t t = u_charType(c);
  return t == U_NON_SPACING_MARK || t == U_COMBINING_SPACING_MARK || t == U_ENCLOSING_MARK ||
         t == U_DECIMAL_DIGIT_NUMBER || t == U_CONNECTOR_PUNCTUATION;
}

// ---- GPT-2 byte map ----------------------------------------------------------------------------

namespace {

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<uint32_t, 256> cps{};
  ByteMap() {
    // bytes_to_unicode(): printable Latin-1 bytes map to themselves, the rest to 256, 257, ...
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      cps[b] = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      utf8_append(to_unicode[b], cps[b]);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

}  // namespace

const std::array<std::string, 256>& byte_to_unicode() { return byte_map().to_unicode; }

int unicode_to_byte(uint32_t cp) {
  // The map's image is [33,126] u [161,172] u [174,255] (identity) and [256, 324) for the rest.
  if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return static_cast<int>(cp);
  if (cp >= 256 && cp < 256 + 68) {
    static const std::array<int, 68> inverse = [] {
      std::array<int, 68> inv{};
      const auto& m = byte_map();
      for (int b = 0; b < 256; ++b)
        if (m.cps[b] >= 256) inv[m.cps[b] - 256] = b;
      return inv;
    }();
    return inverse[cp - 256];
  }
  return -1;
}

// ---- NFC ---------------------------------------------------------------------------------------

namespace {

void nfc_valid_run(std::string_view run, std::string& out) {
  bool ascii = true;
  for (char c : run) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) {  // ASCII is always in NFC; skip the UTF-16 round trip
    out.append(run);
    return;
  }
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(status);
  COLM_CHECK(U_SUCCESS(status), "[tokenizer] ICU NFC normalizer unavailable: " << u_errorName(status));
  const icu::UnicodeString src =
      icu::UnicodeString::fromUTF8(icu::StringPiece(run.data(), static_cast<int32_t>(run.size())));
  icu::UnicodeString dst = n->normalize(src, status);
  COLM_CHECK(U_SUCCESS(status), "[tokenizer] ICU NFC normalisation failed: " << u_errorName(status));
  dst.toUTF8String(out);
}

}  // namespace

std::string nfc(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t run_start = 0, i = 0;
  while (i < s.size()) {
    const size_t len = utf8_unit(s, i);
    if (len == 1 && static_cast<unsigned char>(s[i]) >= 0x80) {  // ill-formed byte: kept as is
      nfc_valid_run(s.substr(run_start, i - run_start), out);
      out += s[i];
      run_start = i + 1;
    }
    i += len;
  }
  nfc_valid_run(s.substr(run_start), out);
  return out;
}

// ---- Regex -------------------------------------------------------------------------------------

namespace {

// Per-thread JIT stack: the default 32 KiB overflows on long runs of whitespace with lookahead.
pcre2_match_context* thread_match_context() {
  struct Holder {
    pcre2_jit_stack* stack = nullptr;
    pcre2_match_context* ctx = nullptr;
    Holder() {
      ctx = pcre2_match_context_create(nullptr);
      stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
      if (ctx && stack) pcre2_jit_stack_assign(ctx, nullptr, stack);
    }
    ~Holder() {
      if (ctx) pcre2_match_context_free(ctx);
      if (stack) pcre2_jit_stack_free(stack);
    }
  };
  thread_local Holder h;
  return h.ctx;
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  // MATCH_INVALID_UTF: ill-formed bytes in the subject simply never match (no error, no UB).
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error(where + ": invalid regex /" + pattern + "/ at offset " + std::to_string(err_off) + ": " +
                reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  auto* code = static_cast<pcre2_code*>(code_);
  struct MatchData {
    pcre2_match_data* md = pcre2_match_data_create(4, nullptr);
    ~MatchData() { pcre2_match_data_free(md); }
  };
  thread_local MatchData data;
  pcre2_match_context* ctx = thread_match_context();
  size_t pos = 0;
  while (pos <= s.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, 0, data.md, ctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      throw Error("[tokenizer] regex /" + pattern_ + "/ failed: " + reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.md);
    const size_t start = ov[0], end = ov[1];
    if (end > start) {
      out.emplace_back(start, end);
      pos = end;
    } else {  // empty match: HF drops empty splits; step one character
      if (start >= s.size()) break;
      pos = start + utf8_unit(s, start);
    }
  }
}

Pattern::Pattern(const nlohmann::json& j, const std::string& where) {
  if (j.is_object() && j.contains("String") && j["String"].is_string()) {
    literal_ = j["String"].get<std::string>();
    if (literal_.empty()) throw Error(where + ": empty String pattern");
  } else if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
    regex_ = std::make_unique<Regex>(j["Regex"].get<std::string>(), where);
  } else {
    throw Error(where + ": pattern must be {\"String\": ...} or {\"Regex\": ...}, got " + j.dump());
  }
}

void Pattern::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  if (regex_) {
    regex_->find_all(s, out);
    return;
  }
  size_t pos = 0;
  while ((pos = s.find(literal_, pos)) != std::string_view::npos) {
    out.emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
}

}  // namespace colm::tok
