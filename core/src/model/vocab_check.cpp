// Vocabulary compatibility check across experts (see vocab_check.hpp for the rules).
// Only reads tokenizers and ExpertInfo; the masking of padded logits is the decoder's job.
#include "model/vocab_check.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <sstream>

#include <spdlog/spdlog.h>

namespace colm {
namespace {

constexpr size_t kSample = 5;  // differing tokens quoted in an error

std::string token_or_none(const Tokenizer& t, int64_t id) {
  try {
    return "\"" + t.id_to_token(id) + "\"";
  } catch (const Error&) {
    return "(none)";  // holes in a vocabulary are legal
  }
}

std::string id_text(const std::optional<int64_t>& id) { return id ? std::to_string(*id) : "none"; }

// A human-readable account of how two tokenizers with different fingerprints differ.
std::string describe_difference(const std::string& name_a, const Tokenizer& a, const std::string& name_b,
                                const Tokenizer& b) {
  std::ostringstream os;
  bool any = false;
  if (a.kind() != b.kind()) {
    os << "\n  kind: " << name_a << " " << a.kind() << ", " << name_b << " " << b.kind();
    any = true;
  }
  if (a.vocab_size() != b.vocab_size()) {
    os << "\n  vocab size: " << name_a << " " << a.vocab_size() << ", " << name_b << " " << b.vocab_size();
    any = true;
  }
  // Tokens whose strings differ on the shared id range.
  const int64_t shared = std::min(a.vocab_size(), b.vocab_size());
  size_t differing = 0;
  std::ostringstream sample;
  for (int64_t id = 0; id < shared; ++id) {
    const std::string ta = token_or_none(a, id), tb = token_or_none(b, id);
    if (ta == tb) continue;
    if (differing < kSample) sample << "\n    id " << id << ": " << ta << " vs " << tb;
    ++differing;
  }
  if (differing > 0) {
    os << "\n  " << differing << " of the " << shared << " shared ids map to different tokens, e.g." << sample.str();
    any = true;
  }
  // Added / special tokens by content.
  std::map<std::string, SpecialToken> added_a, added_b;
  for (const auto& t : a.added_tokens()) added_a.emplace(t.content, t);
  for (const auto& t : b.added_tokens()) added_b.emplace(t.content, t);
  size_t added_diffs = 0;
  std::ostringstream added;
  auto note = [&](const std::string& line) {
    if (added_diffs++ < kSample) added << "\n    " << line;
  };
  for (const auto& [content, t] : added_a) {
    auto it = added_b.find(content);
    if (it == added_b.end())
      note("\"" + content + "\" (id " + std::to_string(t.id) + ") only in " + name_a);
    else if (it->second.id != t.id || it->second.special != t.special)
      note("\"" + content + "\": id " + std::to_string(t.id) + (t.special ? " special" : "") + " in " + name_a +
           ", id " + std::to_string(it->second.id) + (it->second.special ? " special" : "") + " in " + name_b);
  }
  for (const auto& [content, t] : added_b)
    if (!added_a.count(content)) note("\"" + content + "\" (id " + std::to_string(t.id) + ") only in " + name_b);
  if (added_diffs > 0) {
    os << "\n  added/special tokens differ (" << added_diffs << "):" << added.str();
    any = true;
  }
  if (!any)
    os << "\n  same vocabulary and added tokens, but the merges, normalizer or pre-tokenizer differ, so "
          "the same text encodes to different ids";
  return os.str();
}

}  // namespace

void check_vocab_compatible(const std::vector<std::pair<std::string, const Expert*>>& experts) {
  for (const auto& [name, expert] : experts) {
    COLM_CHECK(expert != nullptr, "[vocab] expert \"" << name << "\" is null");
    const Tokenizer& tok = expert->tokenizer();
    COLM_CHECK(tok.valid(), "[vocab] expert \"" << name << "\" has no tokenizer");
    const ExpertInfo info = expert->info();
    COLM_CHECK(info.vocab_size >= tok.vocab_size(),
               "[vocab] expert \"" << name << "\": its output layer has " << info.vocab_size
                                   << " rows but its tokenizer has " << tok.vocab_size()
                                   << " ids; ids >= " << info.vocab_size
                                   << " could never be predicted or scored (wrong tokenizer or config?)");
    if (info.vocab_size > tok.vocab_size())
      spdlog::info("[vocab] expert \"{}\": output layer {} rows, tokenizer {} ids; {} padded logits are masked",
                   name, info.vocab_size, tok.vocab_size(), info.vocab_size - tok.vocab_size());
  }
  if (experts.size() < 2) return;

  const auto& [ref_name, ref] = experts.front();
  const Tokenizer& ref_tok = ref->tokenizer();
  for (size_t i = 1; i < experts.size(); ++i) {
    const auto& [name, expert] = experts[i];
    const Tokenizer& tok = expert->tokenizer();
    if (tok.fingerprint() != ref_tok.fingerprint())
      throw Error("[vocab] experts \"" + ref_name + "\" and \"" + name +
                  "\" have different tokenizers, so their token ids cannot be shared:" +
                  describe_difference(ref_name, ref_tok, name, tok));
    const std::pair<const char*, std::optional<int64_t> (Tokenizer::*)() const> specials[] = {
        {"bos", &Tokenizer::bos_id}, {"eos", &Tokenizer::eos_id}, {"pad", &Tokenizer::pad_id}};
    for (const auto& [label, getter] : specials) {
      const auto a = (ref_tok.*getter)(), b = (tok.*getter)();
      COLM_CHECK(a == b, "[vocab] experts \"" << ref_name << "\" and \"" << name << "\" share a vocabulary but their "
                                              << label << " token ids differ: " << id_text(a) << " vs " << id_text(b)
                                              << " (check each tokenizer_config.json)");
    }
  }
  spdlog::debug("[vocab] {} experts share one vocabulary ({} ids)", experts.size(), ref_tok.vocab_size());
}

}  // namespace colm
