#include "method/corpus.hpp"

#include <algorithm>
#include <random>
#include <set>
#include <tuple>

#include "colm/error.hpp"

namespace colm {

namespace {

// Uniform integer in [lo, hi] from a 64-bit generator (portable: no std distribution).
int64_t uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  const auto span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int64_t>(rng() % span);
}

template <size_t N>
const char* pick(std::mt19937_64& rng, const char* const (&items)[N]) {
  return items[uniform(rng, 0, int64_t(N) - 1)];
}

// Generic words around the facts: no names, objects or question frames of the arithmetic task.
const char* const kOpeners[] = {"We know that", "Note that", "Recall that", "It is true that", "Check:",
                                "By hand,", "In the table,", "From the notes,", "Clearly", "So",
                                "First,", "Then", "Also", "Here", "As shown,", "Remember:"};
const char* const kClosers[] = {"", "", "", " again", " as expected", " in total", " exactly", " here",
                                " for sure", " once more"};
const char* const kWords[] = {"value", "result", "count", "number", "line", "step", "row", "item",
                              "entry", "part", "note", "page", "unit", "level", "score", "group"};

// Common English words (and capitals, digits, punctuation through the sentence frames): the generic
// text a fact may follow. Not the task's templates, just the language around them.
const char* const kCommon[] = {
    "the", "a", "an", "of", "to", "in", "and", "or", "is", "are", "was", "has", "have", "had", "gets", "gives",
    "buys", "takes", "makes", "finds", "loses", "keeps", "picks", "puts", "sees", "more", "less", "many",
    "much", "each", "every", "all", "some", "other", "how", "what", "when", "then", "now", "left", "total",
    "day", "days", "week", "morning", "afternoon", "with", "from", "for", "at", "on", "by", "after", "before",
    "they", "she", "he", "it", "we", "you", "this", "that", "these", "box", "bag", "pack", "table", "list",
    "Question", "Answer", "Then", "So", "After", "In", "Each", "How", "The", "She", "He", "They", "There",
    "does", "do", "did", "will", "can", "same", "also", "again", "only", "about", "over", "under", "into",
    // Names (none of the arithmetic task's): people appear in text around numbers.
    "Alex", "Mia", "Noah", "Lily", "Ravi", "Sofia", "Tom", "Anna", "Carlos", "Mei", "Jack", "Lena"};
// Bracket kinds around a fact, GSM8K's calculator notation ("<<12+30=42>>") among them: a notation
// of arithmetic that math text on the web uses, not a task's sentences.
const char* const kBrackets[][2] = {{"(", ")"}, {"[", "]"}, {"{", "}"}, {"<", ">"}, {"[[", "]]"}, {"((", "))"}, {"<<", ">>"}};

std::string n(int64_t v) { return std::to_string(v); }

// 3 to 40 random common words, capitalised sometimes, with an occasional full stop, question mark
// or number: the kind of text a fact may follow in someone else's document.
std::string generic_context(std::mt19937_64& rng) {
  std::string s;
  const int64_t words = uniform(rng, 3, 40);
  for (int64_t w = 0; w < words; ++w) {
    if (w) s += uniform(rng, 0, 9) == 0 ? (uniform(rng, 0, 1) ? ". " : "? ") : " ";
    s += uniform(rng, 0, 11) == 0 ? n(uniform(rng, 1, 99)) : pick(rng, kCommon);
  }
  return s + (uniform(rng, 0, 1) ? ". " : ": ");
}

const char* op_word(char op) { return op == '+' ? "sum" : op == '-' ? "difference" : "product"; }

std::string surface_plain(std::mt19937_64& rng, const ArithmeticFact& f);

// The fact in one of several surface forms, inside brackets for a share of them.
std::string surface(std::mt19937_64& rng, const ArithmeticFact& f, double bracket_share) {
  if (bracket_share > 0 && double(rng() >> 11) * 0x1.0p-53 < bracket_share) {
    const auto& b = kBrackets[uniform(rng, 0, int64_t(std::size(kBrackets)) - 1)];
    const std::string o(1, f.op);
    const std::string inner = uniform(rng, 0, 1) ? n(f.a) + o + n(f.b) + "=" + n(f.c) : n(f.a) + " " + o + " " + n(f.b) + " = " + n(f.c);
    return std::string(b[0]) + inner + b[1];
  }
  return surface_plain(rng, f);
}

std::string surface_plain(std::mt19937_64& rng, const ArithmeticFact& f) {
  const std::string o(1, f.op);
  switch (uniform(rng, 0, 5)) {
    case 0:
    case 1: return n(f.a) + " " + o + " " + n(f.b) + " = " + n(f.c);
    case 2:
    case 3: return n(f.a) + o + n(f.b) + "=" + n(f.c);
    case 4: return std::string("the ") + op_word(f.op) + " of " + n(f.a) + " and " + n(f.b) + " is " + n(f.c);
    default: return "(" + n(f.a) + o + n(f.b) + "=" + n(f.c) + ")";
  }
}

}  // namespace

void ArithmeticCorpusOptions::validate() const {
  COLM_CHECK(sentences >= 1, "arithmetic corpus: sentences must be >= 1, got " << sentences);
  COLM_CHECK(max_operand >= 2, "arithmetic corpus: max_operand must be >= 2, got " << max_operand);
  COLM_CHECK(max_factor >= 2, "arithmetic corpus: max_factor must be >= 2, got " << max_factor);
  COLM_CHECK(heldout_share >= 0 && heldout_share < 1,
             "arithmetic corpus: heldout_share must be in [0, 1), got " << heldout_share);
  COLM_CHECK(context_share >= 0 && context_share <= 1,
             "arithmetic corpus: context_share must be in [0, 1], got " << context_share);
  COLM_CHECK(bracket_share >= 0 && bracket_share <= 1,
             "arithmetic corpus: bracket_share must be in [0, 1], got " << bracket_share);
  COLM_CHECK(heldout_examples >= 0, "arithmetic corpus: heldout_examples must be >= 0, got " << heldout_examples);
  COLM_CHECK(!operations.empty() && operations.find_first_not_of("+-*") == std::string::npos,
             "arithmetic corpus: operations must be some of + - *, got '" << operations << "'");
}

std::string ArithmeticFact::expression() const { return n(a) + " " + std::string(1, op) + " " + n(b) + " ="; }

bool is_heldout_fact(char op, int64_t a, int64_t b, double heldout_share) {
  if (heldout_share <= 0) return false;
  // splitmix64 of the fact: a fixed, seed-independent split.
  uint64_t x = (static_cast<uint64_t>(static_cast<unsigned char>(op)) << 40) ^ (static_cast<uint64_t>(a) << 20) ^
               static_cast<uint64_t>(b);
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<double>(x >> 11) * 0x1.0p-53 < heldout_share;
}

ArithmeticCorpus make_arithmetic_corpus(const ArithmeticCorpusOptions& o) {
  o.validate();
  std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ull + 0x5851F42D4C957F2Dull);
  const bool mul = o.operations.find('*') != std::string::npos;
  // The largest quantity a task step sees: a product plus a loose addition, or a sum of two sums.
  const int64_t big = mul ? o.max_factor * o.max_factor + o.max_operand : 2 * o.max_operand;
  // The kinds of fact (below) whose operation is allowed.
  std::vector<int> kinds;
  for (int k = 0; k < 6; ++k)
    if (o.operations.find(k < 2 ? '+' : k < 4 ? '-' : '*') != std::string::npos) kinds.push_back(k);
  // One fact with the task's ranges: small and large sums, differences, small and large products.
  auto draw = [&]() {
    ArithmeticFact f;
    switch (kinds[size_t(uniform(rng, 0, int64_t(kinds.size()) - 1))]) {
      case 0: f.op = '+'; f.a = uniform(rng, 1, o.max_operand); f.b = uniform(rng, 1, o.max_operand); break;
      case 1: f.op = '+'; f.a = uniform(rng, 1, big); f.b = uniform(rng, 1, o.max_operand); break;
      case 2: f.op = '-'; f.a = uniform(rng, 2, o.max_operand * 2); f.b = uniform(rng, 1, f.a - 1); break;
      case 3: f.op = '-'; f.a = uniform(rng, 2, big); f.b = uniform(rng, 1, std::min(f.a - 1, o.max_operand)); break;
      case 4: f.op = '*'; f.a = uniform(rng, 2, o.max_factor); f.b = uniform(rng, 2, o.max_factor); break;
      default: f.op = '*'; f.a = uniform(rng, 2, o.max_operand / 2 + 2); f.b = uniform(rng, 2, o.max_factor); break;
    }
    if (f.op != '-' && uniform(rng, 0, 1)) std::swap(f.a, f.b);
    f.c = f.op == '+' ? f.a + f.b : f.op == '-' ? f.a - f.b : f.a * f.b;
    return f;
  };
  auto draw_known = [&]() {
    for (;;) {
      auto f = draw();
      if (!is_heldout_fact(f.op, f.a, f.b, o.heldout_share)) return f;
    }
  };

  ArithmeticCorpus out;
  out.text.reserve(static_cast<size_t>(o.sentences) * 40);
  for (int64_t i = 0; i < o.sentences; ++i) {
    const auto f = draw_known();
    ++out.facts_in_text;
    std::string s;
    if (o.context_share > 0 && double(rng() >> 11) * 0x1.0p-53 < o.context_share) s = generic_context(rng);
    switch (uniform(rng, 0, 4)) {
      case 0: s += surface(rng, f, o.bracket_share); break;
      case 1: s += std::string(pick(rng, kOpeners)) + " " + surface(rng, f, o.bracket_share) + pick(rng, kClosers); break;
      case 2: {
        const auto g = draw_known();
        ++out.facts_in_text;
        s += std::string(pick(rng, kOpeners)) + " " + surface(rng, f, o.bracket_share) + " and " + surface(rng, g, o.bracket_share);
        break;
      }
      case 3:
        s += std::string("The ") + pick(rng, kWords) + " is " + surface(rng, f, o.bracket_share) + ", so the " + pick(rng, kWords) +
            " is " + n(f.c);
        break;
      default:
        s += std::string(pick(rng, kWords)) + " " + n(uniform(rng, 1, 99)) + ": " + surface(rng, f, o.bracket_share) + pick(rng, kClosers);
        break;
    }
    out.text += s;
    out.text += ".\n";
  }

  // Held-out facts: drawn from the same distribution, distinct, never in the text.
  std::set<std::tuple<char, int64_t, int64_t>> seen;
  int64_t attempts = 0;
  while (o.heldout_share > 0 && int64_t(out.heldout.size()) < o.heldout_examples && attempts++ < o.heldout_examples * 2000) {
    const auto f = draw();
    if (is_heldout_fact(f.op, f.a, f.b, o.heldout_share) && seen.insert({f.op, f.a, f.b}).second) out.heldout.push_back(f);
  }
  return out;
}

}  // namespace colm
