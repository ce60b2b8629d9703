// Vocabulary compatibility of several experts, checked when they are loaded together (experiment
// loader, CLI): a token id must mean the same string to every model before any decoding starts.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "colm/expert.hpp"

namespace colm {

// Throws colm::Error (naming both experts and what differs) unless all experts can share token ids:
//  1. every tokenizer has the same fingerprint() (vocabulary, merges, normalizer, pre-tokenizer,
//     added tokens); on a mismatch the message says how they differ: kind, vocab size, a sample of
//     ids whose token strings differ, added/special tokens that differ;
//  2. the special-token ids bos, eos and pad are equal (they may come from tokenizer_config.json,
//     which the fingerprint does not cover);
//  3. each expert's output layer has at least as many rows as its tokenizer has ids
//     (ExpertInfo::vocab_size >= tokenizer().vocab_size()).
// Padding rule: output layers may differ in size only by padding. Rows at or beyond the tokenizer's
// vocab_size are padded embedding rows (e.g. GPT-2's 50257 padded to 50304); they name no token, and
// the decoder masks their logits to -inf, so neither argmax nor sampling can pick them and the
// experts' distributions are compared over the shared ids [0, tokenizer.vocab_size()) only.
// An empty list or a single expert passes rules 1 and 2 trivially; a null expert is an error.
void check_vocab_compatible(const std::vector<std::pair<std::string, const Expert*>>& experts);

}  // namespace colm
