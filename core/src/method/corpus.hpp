// Generated pretraining text: a stream of arithmetic facts in short generic sentences, the kind of
// text a small "math model" is pretrained on. It never uses a task's sentences (no word problems, no
// worked solutions), so a model trained on it must find the computation in arbitrary context; facts
// in brackets use several notations, GSM8K's calculator brackets ("<<a*b=c>>") among them.
// A seeded share of the facts is held out of the text and returned for measuring the model's skill.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace colm {

struct ArithmeticCorpusOptions {
  int64_t sentences = 100000;  // sentences in the text
  uint64_t seed = 0;
  int64_t max_operand = 50;    // as the arithmetic task: largest operand of + and - ...
  int64_t max_factor = 12;     // ... and largest factor of *
  double heldout_share = 0.05; // share of the possible facts kept out of the text (by a hash of the fact)
  int64_t heldout_examples = 500;  // held-out facts returned for evaluation, at most
  std::string operations = "+-*";  // the operations stated (any of + - *)
  // Generic context, so that a model trained on the text copes with arbitrary text before a fact:
  // the share of sentences preceded by a run of random common English words (0: none; the original
  // corpus), and the share of facts written inside brackets of a random kind.
  double context_share = 0.0;
  double bracket_share = 0.0;
  void validate() const;       // throws colm::Error naming the bad field
};

struct ArithmeticFact {
  int64_t a = 0, b = 0, c = 0;
  char op = '+';
  std::string expression() const;  // "a op b =" (the prompt of an evaluation example)
};

struct ArithmeticCorpus {
  std::string text;                      // one sentence per line
  std::vector<ArithmeticFact> heldout;   // distinct facts never stated in text, in a seeded order
  int64_t facts_in_text = 0;             // facts stated in text (with repetition)
};

// Draws facts with the operand ranges of the arithmetic task's computations (sums and differences of
// quantities up to about max_factor^2 + max_operand, products of up to (max_operand/2 + 1) x max_factor)
// and writes each in a random generic sentence frame and surface form ("12+30=42", "12 + 30 = 42",
// "the sum of 12 and 30 is 42", ...). Deterministic in the options.
ArithmeticCorpus make_arithmetic_corpus(const ArithmeticCorpusOptions& options);

// Whether a fact is one of the held-out ones for this share (a hash of (op, a, b), independent of the seed,
// so every corpus drawn with the same share holds out the same facts).
bool is_heldout_fact(char op, int64_t a, int64_t b, double heldout_share);

}  // namespace colm
