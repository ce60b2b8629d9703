// Vocabulary compatibility of several experts, checked when they are loaded together (experiment
// loader, CLI): a token id must mean the same string to every model before any decoding starts.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "colm/expert.hpp"

namespace colm {

// The ids several experts share, and what each of them has beyond those ids.
struct SharedVocab {
  int64_t size = 0;     // V: ids [0, V) name the same token for every expert
  Tokenizer tokenizer;  // a tokenizer with exactly the shared ids (the smallest expert's): it encodes
                        // any text to ids < V; a larger vocabulary's own tokenizer would encode the
                        // same text the same way except where its extra ids (added tokens, merges
                        // into ids >= V) apply, which the shared one spells with shared ids
  struct Masked {
    std::string expert;
    int64_t tokenizer_ids = 0;         // its tokenizer's ids >= V (tokens only it knows)
    int64_t padded_rows = 0;           // output rows past its own tokenizer (embedding padding)
    std::vector<std::string> sample;   // a few of its tokens >= V, for the log
  };
  std::vector<Masked> masked;  // experts with logits wider than V, in the given order

  // One line: what is masked from whom, or that nothing is ("" for fewer than one expert).
  std::string summary() const;
};

// Throws colm::Error (naming both experts and what differs) unless all experts can share token ids,
// and otherwise returns the ids they share:
//  1. the tokenizers are identical (same fingerprint(): vocabulary, merges, normalizer,
//     pre-tokenizer, post-processor, added tokens), or of two with different sizes the larger one
//     extends the smaller past its last id: the same kind, model options, normalizer, pre-tokenizer
//     and post-processor, the same tokens and added tokens on the smaller one's ids [0, V), and the
//     same merges among those that produce a token < V (Llama 2's 32000 ids against Code Llama's
//     or Llemma's 32016). Anything else is a mismatch, reported with how they differ: kind, vocab
//     size, a sample of ids whose token strings differ, added/special tokens that differ, and why
//     the larger one is not an extension of the smaller one;
//  2. the special-token ids bos, eos and pad are equal (they may come from tokenizer_config.json,
//     which the fingerprint does not cover); so they lie in [0, V);
//  3. each expert's output layer has at least as many rows as its tokenizer has ids
//     (ExpertInfo::vocab_size >= tokenizer().vocab_size()).
// Every row at or beyond V names no shared token: padded embedding rows (e.g. GPT-2's 50257 padded
// to 50304) and the ids only a larger vocabulary has. The experts collaborate over [0, V) only:
// share_vocab() cuts their logits there, so neither argmax nor sampling can pick an id >= V, and
// every comparison of distributions (decoding, training, scoring, analysis) is over the shared ids.
// Logs summary() once (info when something is masked). An empty list or a single expert passes
// rules 1 and 2 trivially; a null expert is an error.
SharedVocab check_vocab_compatible(const std::vector<std::pair<std::string, const Expert*>>& experts);

// Both: the same checks without the log line (for callers that check pairs, then log the whole).
SharedVocab shared_vocabulary(const std::vector<std::pair<std::string, const Expert*>>& experts);

// Why `large` is not `small` extended past small's last id (rule 1 above), or "" when it is.
std::string extension_mismatch(const Tokenizer& small, const Tokenizer& large);

// `expert` as a collaborator over `shared`'s ids: when its logits are wider than shared.size or its
// tokenizer is not shared.tokenizer, an Expert whose forward() and extend() return the logits cut to
// [0, V) (a view of the model's own; gradients flow), whose tokenizer() is shared.tokenizer, whose
// info().vocab_size is V and whose fingerprint() names the cut; everything else is the model's.
// Otherwise `expert` itself. save() writes the model's own checkpoint and tokenizer. An expert whose
// tokenizer does not extend shared.tokenizer, or whose bos/eos/pad differ, is an error.
std::shared_ptr<Expert> share_vocab(std::shared_ptr<Expert> expert, const SharedVocab& shared);

}  // namespace colm
