// Vocabulary compatibility check across experts (see vocab_check.hpp for the rules).
// Only reads tokenizers and ExpertInfo; share_vocab() (shared_vocab_expert.cpp) cuts the logits.
#include "model/vocab_check.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <sstream>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "model/tokenizer_internal.hpp"

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

int64_t count_ids(const Tokenizer& t, int64_t from) {
  int64_t n = 0;
  for (int64_t id = from; id < t.vocab_size(); ++id) n += token_or_none(t, id) != "(none)";
  return n;
}

}  // namespace

std::string extension_mismatch(const Tokenizer& small, const Tokenizer& large) {
  // No kind comparison: kinds follow from the components compared below (colm's byte tokenizer and
  // the same JSON with added tokens differ only in how invalid UTF-8 decodes, not in ids).
  const int64_t V = small.vocab_size();
  tok::BpeTables ts, tl;
  auto js = tok::parse_tokenizer_json(small.to_json_string(), "tokenizer", ts);
  auto jl = tok::parse_tokenizer_json(large.to_json_string(), "tokenizer", tl);
  const nlohmann::json null_json(nullptr);
  for (const char* key : {"normalizer", "pre_tokenizer", "post_processor", "model"}) {
    const auto& a = js.contains(key) ? js[key] : null_json;
    const auto& b = jl.contains(key) ? jl[key] : null_json;
    if (a != b) return std::string(key) == "model" ? "the BPE model options differ" : std::string("the ") + key + " differs";
  }
  // Tokens by id on [0, V).
  auto prefix_tokens = [V](const tok::BpeTables& t) {
    std::map<int64_t, std::string> by_id;
    for (const auto& [token, id] : t.vocab)
      if (id < V) by_id[id] = token;
    return by_id;
  };
  const auto vs = prefix_tokens(ts), vl = prefix_tokens(tl);
  if (vs != vl) return "the tokens of ids below " + std::to_string(V) + " differ";
  // Added tokens with every field (lstrip, normalized, ...) on [0, V).
  auto prefix_added = [V](const nlohmann::json& root) {
    std::map<int64_t, nlohmann::json> by_id;
    if (root.contains("added_tokens") && root["added_tokens"].is_array())
      for (const auto& t : root["added_tokens"])
        if (t.contains("id") && t["id"].is_number_integer() && t["id"].get<int64_t>() < V) by_id[t["id"].get<int64_t>()] = t;
    return by_id;
  };
  if (prefix_added(js) != prefix_added(jl)) return "the added tokens with ids below " + std::to_string(V) + " differ";
  // Merges producing a token < V, in rank order: the ones that can fire when encoding to shared ids.
  auto prefix_merges = [V](const tok::BpeTables& t) {
    std::unordered_map<std::string, int64_t> id_of;
    for (const auto& [token, id] : t.vocab) id_of.emplace(token, id);
    std::vector<std::pair<std::string, std::string>> kept;
    for (const auto& m : t.merges) {
      const auto it = id_of.find(m.first + m.second);
      if (it != id_of.end() && it->second < V) kept.push_back(m);
    }
    return kept;
  };
  const auto ms = prefix_merges(ts), ml = prefix_merges(tl);
  if (ms != ml) {
    size_t i = 0;
    while (i < ms.size() && i < ml.size() && ms[i] == ml[i]) ++i;
    return "the merges into ids below " + std::to_string(V) + " differ from rank " + std::to_string(i);
  }
  return "";
}

std::string SharedVocab::summary() const {
  std::ostringstream os;
  if (masked.empty()) {
    os << "[vocab] the experts share one vocabulary (" << size << " ids); nothing is masked";
    return os.str();
  }
  os << "[vocab] the experts collaborate over their " << size << " shared ids [0, " << size << "); masked:";
  for (size_t i = 0; i < masked.size(); ++i) {
    const auto& m = masked[i];
    os << (i ? "; " : " ") << "\"" << m.expert << "\" ";
    if (m.tokenizer_ids > 0) {
      os << m.tokenizer_ids << " id" << (m.tokenizer_ids == 1 ? "" : "s") << " only its tokenizer has";
      if (!m.sample.empty()) {
        os << " (e.g.";
        for (size_t k = 0; k < m.sample.size(); ++k) os << (k ? ", " : " ") << m.sample[k];
        os << ")";
      }
    }
    if (m.padded_rows > 0) os << (m.tokenizer_ids > 0 ? " and " : "") << m.padded_rows << " padded output rows";
  }
  os << " (their logits are cut to the shared ids)";
  return os.str();
}

SharedVocab shared_vocabulary(const std::vector<std::pair<std::string, const Expert*>>& experts) {
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
  }
  SharedVocab shared;
  if (experts.empty()) return shared;

  const auto& [ref_name, ref] = experts.front();
  const Tokenizer& ref_tok = ref->tokenizer();
  for (size_t i = 1; i < experts.size(); ++i) {
    const auto& [name, expert] = experts[i];
    const Tokenizer& tok = expert->tokenizer();
    if (tok.fingerprint() != ref_tok.fingerprint()) {
      // Different sizes may still be one vocabulary and its extension.
      std::string why = "they have the same size, so neither extends the other";
      if (tok.vocab_size() != ref_tok.vocab_size()) {
        const bool ref_smaller = ref_tok.vocab_size() < tok.vocab_size();
        why = extension_mismatch(ref_smaller ? ref_tok : tok, ref_smaller ? tok : ref_tok);
      }
      if (!why.empty())
        throw Error("[vocab] experts \"" + ref_name + "\" and \"" + name +
                    "\" have different tokenizers, so their token ids cannot be shared:" +
                    describe_difference(ref_name, ref_tok, name, tok) + "\n  not one vocabulary and its extension: " +
                    why);
    }
    const std::pair<const char*, std::optional<int64_t> (Tokenizer::*)() const> specials[] = {
        {"bos", &Tokenizer::bos_id}, {"eos", &Tokenizer::eos_id}, {"pad", &Tokenizer::pad_id}};
    for (const auto& [label, getter] : specials) {
      const auto a = (ref_tok.*getter)(), b = (tok.*getter)();
      COLM_CHECK(a == b, "[vocab] experts \"" << ref_name << "\" and \"" << name << "\" share a vocabulary but their "
                                              << label << " token ids differ: " << id_text(a) << " vs " << id_text(b)
                                              << " (check each tokenizer_config.json)");
    }
  }
  // Every expert agrees with the first on [0, min of the two sizes), so all agree below the smallest.
  const Tokenizer* smallest = &ref_tok;
  for (const auto& [name, expert] : experts)
    if (expert->tokenizer().vocab_size() < smallest->vocab_size()) smallest = &expert->tokenizer();
  shared.size = smallest->vocab_size();
  shared.tokenizer = *smallest;
  for (const auto& [name, expert] : experts) {
    const Tokenizer& tok = expert->tokenizer();
    SharedVocab::Masked m;
    m.expert = name;
    m.tokenizer_ids = count_ids(tok, shared.size);
    m.padded_rows = expert->info().vocab_size - tok.vocab_size();
    for (int64_t id = shared.size; id < tok.vocab_size() && m.sample.size() < 3; ++id)
      if (const auto t = token_or_none(tok, id); t != "(none)") m.sample.push_back(t);
    if (expert->info().vocab_size > shared.size) shared.masked.push_back(std::move(m));
  }
  return shared;
}

SharedVocab check_vocab_compatible(const std::vector<std::pair<std::string, const Expert*>>& experts) {
  auto shared = shared_vocabulary(experts);
  if (!experts.empty()) {
    if (shared.masked.empty())
      spdlog::debug("{}", shared.summary());
    else
      spdlog::info("{}", shared.summary());
  }
  return shared;
}

}  // namespace colm
