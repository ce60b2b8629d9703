// The BPE model of a Hugging Face tokenizer.json: vocabulary, ranked merges, byte_fallback, unk
// fusing, ignore_merges, with a per-word cache. Splitting text into words is the pipeline's job.
#include <algorithm>
#include <cstdio>
#include <queue>

#include "colm/error.hpp"
#include "model/tokenizer_internal.hpp"

namespace colm::tok {
namespace {

using json = nlohmann::json;

constexpr size_t kCacheCapacity = 100000;  // words; HF stops inserting when full, so do we
constexpr size_t kCacheMaxWordBytes = 256;   // whole SentencePiece segments are not worth caching

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string opt_string(const json& model, const char* key) {
  if (!model.contains(key) || model[key].is_null()) return {};
  return model[key].get<std::string>();
}

struct Symbol {
  int32_t id;
  int32_t prev, next;
  int32_t len;  // bytes of the word it covers; 0 once merged into its left neighbour
};

struct Candidate {
  int32_t rank, pos, new_id;
};

// The lowest rank merges first; among equal ranks the leftmost (as the tokenizers crate orders it).
struct CandidateOrder {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

}  // namespace

void Bpe::MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  slots_.assign(cap, Slot{kEmpty, 0, 0});
  mask_ = cap - 1;
  size_ = 0;
}

namespace {
uint64_t mix64(uint64_t k) {  // murmur3 finaliser
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}
}  // namespace

void Bpe::MergeTable::put(uint64_t key, int32_t rank, int32_t new_id) {
  if (slots_.empty() || 2 * (size_ + 1) > slots_.size()) {  // keep the load factor <= 1/2
    std::vector<Slot> old;
    old.swap(slots_);
    reserve(std::max<size_t>(size_ + 1, old.size()));
    for (const Slot& s : old)
      if (s.key != kEmpty) put(s.key, s.rank, s.new_id);
  }
  for (uint64_t i = mix64(key) & mask_;; i = (i + 1) & mask_) {
    Slot& s = slots_[i];
    if (s.key == kEmpty) {
      s = Slot{key, rank, new_id};
      ++size_;
      return;
    }
    if (s.key == key) {  // a repeated pair keeps its last rank, as the crate's HashMap collect does
      s.rank = rank;
      s.new_id = new_id;
      return;
    }
  }
}

const Bpe::MergeTable::Slot* Bpe::MergeTable::find(uint64_t key) const {
  if (slots_.empty()) return nullptr;
  for (uint64_t i = mix64(key) & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.key == key) return &s;
    if (s.key == kEmpty) return nullptr;
  }
}

Bpe::Bpe(const json& model, BpeTables&& tables, const std::string& where) {
  if (!tables.has_vocab) throw Error(where + ": model.vocab must be an object {token: id}");
  if (!tables.has_merges) throw Error(where + ": model.merges must be an array");
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() != 0.0)
    throw Error(where + ": BPE dropout is not supported (encoding must be deterministic)");

  tokens_.reserve(tables.vocab.size());
  token_ids_.reserve(tables.vocab.size());
  int64_t max_id = -1;
  for (auto& [token, id] : tables.vocab) {
    tokens_.push_back(std::move(token));
    token_ids_.push_back(static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  size_t cap = 16;
  while (cap < 2 * tokens_.size()) cap <<= 1;
  vocab_slots_.assign(cap, 0);
  vocab_mask_ = cap - 1;
  vocab_r_.assign(static_cast<size_t>(max_id + 1), -1);
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const uint64_t h = std::hash<std::string_view>()(tokens_[i]);
    for (uint64_t k = h & vocab_mask_;; k = (k + 1) & vocab_mask_) {
      uint64_t& slot = vocab_slots_[k];
      if (slot == 0) {
        slot = ((h >> 32) << 32) | (i + 1);
        ++vocab_count_;
        break;
      }
      const size_t j = (slot & 0xFFFFFFFFu) - 1;
      if ((slot >> 32) == (h >> 32) && tokens_[j] == tokens_[i]) {
        token_ids_[j] = token_ids_[i];  // a repeated key keeps its last id, as a JSON DOM would
        break;
      }
    }
    vocab_r_[token_ids_[i]] = static_cast<int32_t>(i);
  }

  prefix_ = opt_string(model, "continuing_subword_prefix");
  suffix_ = opt_string(model, "end_of_word_suffix");
  byte_fallback_ = model.value("byte_fallback", false);
  fuse_unk_ = model.value("fuse_unk", false);
  ignore_merges_ = model.value("ignore_merges", false);
  const std::string unk = opt_string(model, "unk_token");
  if (!unk.empty()) {
    unk_id_ = vocab_find(unk);
    if (unk_id_ < 0) throw Error(where + ": model.unk_token \"" + unk + "\" is not in the vocabulary");
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_ids_[b] = vocab_find(name);
  }

  merges_.reserve(tables.merges.size());
  std::string joined;
  for (size_t rank = 0; rank < tables.merges.size(); ++rank) {
    const auto& [a, b] = tables.merges[rank];
    const int32_t ia = vocab_find(a), ib = vocab_find(b);
    if (ia < 0 || ib < 0)
      throw Error(where + ": model.merges[" + std::to_string(rank) + "] (\"" + a + "\", \"" + b +
                  "\") uses a token that is not in the vocabulary");
    if (b.size() < prefix_.size())
      throw Error(where + ": model.merges[" + std::to_string(rank) + "] right part shorter than continuing_subword_prefix");
    joined.assign(a).append(b, prefix_.size(), std::string::npos);
    const int32_t inew = vocab_find(joined);
    if (inew < 0)
      throw Error(where + ": model.merges[" + std::to_string(rank) + "] result \"" + joined + "\" is not in the vocabulary");
    merges_.put(pair_key(ia, ib), static_cast<int32_t>(rank), inew);
  }
}

int32_t Bpe::vocab_find(std::string_view token) const {
  const uint64_t h = std::hash<std::string_view>()(token);
  for (uint64_t k = h & vocab_mask_;; k = (k + 1) & vocab_mask_) {
    const uint64_t slot = vocab_slots_[k];
    if (slot == 0) return -1;
    const size_t j = (slot & 0xFFFFFFFFu) - 1;
    if ((slot >> 32) == (h >> 32) && tokens_[j] == token) return token_ids_[j];
  }
}

int64_t Bpe::token_to_id(const std::string& token) const { return vocab_find(token); }

const std::string* Bpe::id_to_token(int64_t id) const {
  if (id < 0 || id >= static_cast<int64_t>(vocab_r_.size()) || vocab_r_[id] < 0) return nullptr;
  return &tokens_[vocab_r_[id]];
}

void Bpe::tokenize(const std::string& word, std::vector<int64_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const int32_t id = vocab_find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::vector<int32_t> ids(out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(word, std::move(ids));
  }
}

void Bpe::merge_word(const std::string& word, std::vector<int64_t>& out) const {
  // 1. One symbol per character (ill-formed bytes are characters of their own), as merge_word of
  //    the tokenizers crate: vocabulary hit, else <0xXX> byte tokens, else (fused) unk, else dropped.
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  auto add = [&](int32_t id, int32_t len) {
    const auto n = static_cast<int32_t>(syms.size());
    syms.push_back(Symbol{id, n - 1, n + 1, len});
  };
  int32_t unk_len = 0;  // pending unk run (bytes), flushed before the next known symbol
  bool unk_pending = false;
  std::string piece;
  for (size_t i = 0; i < word.size();) {
    const size_t len = utf8_unit(word, i);
    const bool is_first = i == 0, is_last = i + len == word.size();
    piece.clear();
    if (!is_first) piece += prefix_;
    piece.append(word, i, len);
    if (is_last) piece += suffix_;
    const int32_t id = vocab_find(piece);
    if (id >= 0) {
      if (unk_pending) {
        add(unk_id_, unk_len);
        unk_pending = false;
      }
      add(id, static_cast<int32_t>(len));
    } else {
      bool done = false;
      if (byte_fallback_) {
        bool all = true;
        for (char c : piece) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
        if (all) {
          // The crate does not flush a pending unk here either; the order is kept for parity.
          for (char c : piece) add(byte_ids_[static_cast<unsigned char>(c)], 1);
          done = true;
        }
      }
      if (!done && unk_id_ >= 0) {
        if (unk_pending && fuse_unk_) {
          unk_len += static_cast<int32_t>(len);
        } else {
          if (unk_pending) add(unk_id_, unk_len);
          unk_pending = true;
          unk_len = static_cast<int32_t>(len);
        }
      }
      // No unk token and no byte fallback: the character is dropped, as in the crate.
    }
    i += len;
  }
  if (unk_pending) add(unk_id_, unk_len);
  if (syms.empty()) return;
  syms.back().next = -1;

  // 2. Apply merges lowest rank first; stale queue entries are detected and skipped.
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateOrder> queue;
  for (size_t i = 0; i + 1 < syms.size(); ++i) {
    if (const auto* m = merges_.find(pair_key(syms[i].id, syms[i + 1].id)))
      queue.push(Candidate{m->rank, static_cast<int32_t>(i), m->new_id});
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = syms[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    const Symbol right = syms[left.next];
    const auto* m = merges_.find(pair_key(left.id, right.id));
    if (!m || m->new_id != top.new_id) continue;
    const int32_t right_pos = left.next;
    left.id = top.new_id;
    left.len += right.len;
    left.next = right.next;
    syms[right_pos].len = 0;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const auto* p = merges_.find(pair_key(syms[left.prev].id, left.id)))
        queue.push(Candidate{p->rank, left.prev, p->new_id});
    }
    if (left.next >= 0) {
      if (const auto* n = merges_.find(pair_key(left.id, syms[left.next].id)))
        queue.push(Candidate{n->rank, top.pos, n->new_id});
    }
  }
  for (const auto& s : syms)
    if (s.len != 0) out.push_back(s.id);
}

}  // namespace colm::tok
