// The `arithmetic` task: a seeded generator of one- and two-step word problems (names, objects,
// quantities) with GSM8K-style worked solutions ("<<a*b=c>>" annotations, "#### answer").
// Metric: exact match of the final answer (accuracy), plus the share of correct calculation steps.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "colm/plugin.hpp"
#include "../gsm8k/math_answer.hpp"
#include "../jsonl/task_util.hpp"

namespace colm {
namespace {

const char* const kNames[] = {"Ava",  "Ben",  "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Isla",
                              "Jonas", "Kira", "Leo",  "Maya",  "Nina", "Omar",  "Priya", "Quinn", "Rosa",
                              "Sam",  "Tara", "Umar", "Vera",  "Wei",  "Yara",  "Zoe"};
const char* const kObjects[] = {"apples", "pencils", "stickers", "marbles", "books",   "cookies",
                                "shells", "cards",   "coins",    "flowers", "stamps", "balloons"};
const char* const kContainers[] = {"boxes", "bags", "packs", "jars", "baskets", "trays"};

template <size_t N>
std::string pick(task_util::Rng& rng, const char* const (&items)[N]) {
  return items[rng.uniform(0, int64_t(N) - 1)];
}

std::string ann(int64_t a, char op, int64_t b, int64_t c) {
  const std::string expr = std::to_string(a) + op + std::to_string(b);
  return std::to_string(a) + " " + op + " " + std::to_string(b) + " = <<" + expr + "=" + std::to_string(c) + ">>" +
         std::to_string(c);
}

struct Problem {
  std::string question;
  std::string solution;  // worked solution ending with "#### answer"
  int64_t answer = 0;
};

struct Settings {
  int64_t max_operand = 50;
  int64_t max_factor = 12;
  double two_step_share = 0.5;
  std::set<char> ops;
};

// One template = which operations it uses + a generator. Quantities are drawn so that every
// intermediate and final result is a positive integer.
struct Template {
  std::vector<char> ops;
  Problem (*make)(task_util::Rng&, const Settings&);
};

Problem add_one(task_util::Rng& r, const Settings& s) {
  const auto n = pick(r, kNames), o = pick(r, kObjects);
  const int64_t a = r.uniform(1, s.max_operand), b = r.uniform(1, s.max_operand), c = a + b;
  return {n + " has " + std::to_string(a) + " " + o + ". " + n + " gets " + std::to_string(b) + " more " + o +
              ". How many " + o + " does " + n + " have now?",
          n + " has " + ann(a, '+', b, c) + " " + o + " now.\n#### " + std::to_string(c), c};
}

Problem sub_one(task_util::Rng& r, const Settings& s) {
  const auto n = pick(r, kNames), o = pick(r, kObjects);
  auto m = pick(r, kNames);
  while (m == n) m = pick(r, kNames);
  const int64_t a = r.uniform(2, std::max<int64_t>(2, s.max_operand)), b = r.uniform(1, a - 1), c = a - b;
  return {n + " has " + std::to_string(a) + " " + o + " and gives " + std::to_string(b) + " of them to " + m +
              ". How many " + o + " does " + n + " have left?",
          n + " has " + ann(a, '-', b, c) + " " + o + " left.\n#### " + std::to_string(c), c};
}

Problem mul_one(task_util::Rng& r, const Settings& s) {
  const auto n = pick(r, kNames), o = pick(r, kObjects), k = pick(r, kContainers);
  const int64_t a = r.uniform(2, s.max_factor), b = r.uniform(2, s.max_factor), c = a * b;
  return {n + " buys " + std::to_string(a) + " " + k + " of " + o + ". Each of the " + k + " holds " +
              std::to_string(b) + " " + o + ". How many " + o + " does " + n + " buy?",
          n + " buys " + ann(a, '*', b, c) + " " + o + ".\n#### " + std::to_string(c), c};
}

Problem mul_sub(task_util::Rng& r, const Settings& s) {
  const auto n = pick(r, kNames), o = pick(r, kObjects), k = pick(r, kContainers);
  auto m = pick(r, kNames);
  while (m == n) m = pick(r, kNames);
  const int64_t a = r.uniform(2, s.max_factor), b = r.uniform(2, s.max_factor), c = a * b;
  const int64_t d = r.uniform(1, c - 1), e = c - d;
  return {n + " buys " + std::to_string(a) + " " + k + " with " + std::to_string(b) + " " + o + " in each. " + n +
              " gives " + std::to_string(d) + " " + o + " to " + m + ". How many " + o + " does " + n +
              " have left?",
          n + " buys " + ann(a, '*', b, c) + " " + o + ".\nAfter giving " + std::to_string(d) + " to " + m + ", " +
              n + " has " + ann(c, '-', d, e) + " " + o + " left.\n#### " + std::to_string(e),
          e};
}

Problem add_mul(task_util::Rng& r, const Settings& s) {
  const auto n = pick(r, kNames), o = pick(r, kObjects);
  const int64_t a = r.uniform(1, s.max_operand / 2 + 1), b = r.uniform(1, s.max_operand / 2 + 1), c = a + b;
  const int64_t k = r.uniform(2, s.max_factor), e = c * k;
  return {n + " picks " + std::to_string(a) + " " + o + " in the morning and " + std::to_string(b) + " " + o +
              " in the afternoon. " + n + " does the same every day for " + std::to_string(k) +
              " days. How many " + o + " does " + n + " pick in total?",
          "Each day " + n + " picks " + ann(a, '+', b, c) + " " + o + ".\nIn " + std::to_string(k) + " days " + n +
              " picks " + ann(c, '*', k, e) + " " + o + ".\n#### " + std::to_string(e),
          e};
}

Problem add_sub(task_util::Rng& r, const Settings& s) {
  const auto n = pick(r, kNames), o = pick(r, kObjects);
  const int64_t a = r.uniform(1, s.max_operand), b = r.uniform(1, s.max_operand), c = a + b;
  const int64_t d = r.uniform(1, c - 1), e = c - d;
  return {n + " has " + std::to_string(a) + " " + o + ". " + n + " finds " + std::to_string(b) +
              " more and then loses " + std::to_string(d) + ". How many " + o + " does " + n + " have now?",
          "After finding more, " + n + " has " + ann(a, '+', b, c) + " " + o + ".\nAfter losing " +
              std::to_string(d) + ", " + n + " has " + ann(c, '-', d, e) + " " + o + ".\n#### " + std::to_string(e),
          e};
}

Problem mul_add(task_util::Rng& r, const Settings& s) {
  const auto n = pick(r, kNames), o = pick(r, kObjects), k = pick(r, kContainers);
  const int64_t a = r.uniform(2, s.max_factor), b = r.uniform(2, s.max_factor), c = a * b;
  const int64_t d = r.uniform(1, s.max_operand), e = c + d;
  return {n + " buys " + std::to_string(a) + " " + k + " of " + o + " with " + std::to_string(b) +
              " in each and also gets " + std::to_string(d) + " loose " + o + ". How many " + o + " does " + n +
              " have?",
          "The " + k + " hold " + ann(a, '*', b, c) + " " + o + ".\nWith the loose ones " + n + " has " +
              ann(c, '+', d, e) + " " + o + ".\n#### " + std::to_string(e),
          e};
}

const std::vector<Template> kOneStep = {{{'+'}, add_one}, {{'-'}, sub_one}, {{'*'}, mul_one}};
const std::vector<Template> kTwoStep = {
    {{'*', '-'}, mul_sub}, {{'+', '*'}, add_mul}, {{'+', '-'}, add_sub}, {{'*', '+'}, mul_add}};

class ArithmeticTask final : public Task {
 public:
  ArithmeticTask(const ConfigView& c, const PluginContext& ctx) {
    seed_ = uint64_t(c.get_int("seed", int64_t(ctx.seed), "generator seed (default: the experiment seed)"));
    sizes_["train"] = c.get_int("train_size", 2000, "problems in the train split");
    sizes_["valid"] = c.get_int("valid_size", 200, "problems in the valid split");
    sizes_["test"] = c.get_int("test_size", 200, "problems in the test split");
    settings_.max_operand = c.get_int("max_operand", 50, "largest operand of + and - (and of loose additions)");
    settings_.max_factor = c.get_int("max_factor", 12, "largest factor of *");
    settings_.two_step_share = c.get_double("two_step_share", 0.5, "share of two-step problems, in [0, 1]");
    const auto ops = c.get_strings("operations", {"+", "-", "*"}, "operations used: any of +, -, *");
    gen_.max_tokens = c.get_int("max_tokens", 200, "generated tokens per problem, at most");
    for (const auto& [split, n] : sizes_)
      if (n < 0) c.fail(split + "_size", "must be >= 0");
    if (settings_.max_operand < 2) c.fail("max_operand", "must be >= 2");
    if (settings_.max_factor < 2) c.fail("max_factor", "must be >= 2");
    if (!(settings_.two_step_share >= 0 && settings_.two_step_share <= 1))
      c.fail("two_step_share", "must be in [0, 1]");
    if (gen_.max_tokens < 1) c.fail("max_tokens", "must be >= 1");
    if (ops.empty()) c.fail("operations", "give at least one of +, -, *");
    for (const auto& op : ops) {
      if (op != "+" && op != "-" && op != "*") c.fail("operations", "unknown operation '" + op + "' (use +, -, *)");
      settings_.ops.insert(op[0]);
    }
    for (const auto& t : kOneStep)
      if (usable(t)) one_.push_back(t);
    for (const auto& t : kTwoStep)
      if (usable(t)) two_.push_back(t);
    if (two_.empty() && settings_.two_step_share > 0 && settings_.ops.size() < 2)
      c.fail("two_step_share", "two-step problems need at least two operations");
    gen_.stop = {"\n\n"};
    generate();
  }

  std::vector<std::string> splits() const override { return {"train", "valid", "test"}; }

  std::vector<Example> examples(const std::string& split) override {
    const auto it = data_.find(split);
    if (it == data_.end()) throw Error("arithmetic: unknown split '" + split + "' (splits: train, valid, test)");
    return it->second;
  }

  GenerationSettings generation() const override { return gen_; }

  std::map<std::string, double> score(const Example& example, const std::string& output) const override {
    std::map<std::string, double> m;
    const auto predicted = math_answer::final_answer(output);
    m["accuracy"] = !predicted.empty() && predicted == math_answer::normalize_number(example.reference) ? 1.0 : 0.0;
    const auto steps = math_answer::calculation_steps(output);
    int64_t correct = 0;
    for (const auto& s : steps) correct += s.correct;
    m["calc_steps"] = double(steps.size());
    m["calc_correct"] = double(correct);
    if (!steps.empty()) m["calc_accuracy"] = double(correct) / double(steps.size());
    return m;
  }

  std::string primary_metric() const override { return "accuracy"; }

 private:
  bool usable(const Template& t) const {
    for (char op : t.ops)
      if (!settings_.ops.count(op)) return false;
    return true;
  }

  // Test first, then valid, then train, each free of questions already drawn: the splits are
  // disjoint and a split's content does not depend on the sizes of the splits generated after it.
  void generate() {
    std::set<std::string> seen;
    uint64_t stream = 0;
    for (const char* split : {"test", "valid", "train"}) {
      task_util::Rng rng(seed_ * 0x100000001B3ull + (++stream) * 0x9E3779B97F4A7C15ull);
      auto& out = data_[split];
      const int64_t want = sizes_[split];
      int64_t attempts = 0;
      while (int64_t(out.size()) < want) {
        if (++attempts > want * 50 + 1000)
          throw Error("arithmetic: cannot draw " + std::to_string(want) + " distinct " + split +
                      " problems with these settings; raise max_operand/max_factor or lower the sizes");
        const bool two = !two_.empty() && (one_.empty() || rng.uniform01() < settings_.two_step_share);
        const auto& pool = two ? two_ : one_;
        const auto& t = pool[size_t(rng.uniform(0, int64_t(pool.size()) - 1))];
        Problem p = t.make(rng, settings_);
        if (!seen.insert(p.question).second) continue;
        Example e;
        char id[32];
        std::snprintf(id, sizeof id, "%s-%05d", split, int(out.size()));
        e.id = id;
        e.prompt = "Question: " + p.question + "\nAnswer:";
        e.target = " " + p.solution + "\n\n";
        e.reference = std::to_string(p.answer);
        out.push_back(std::move(e));
      }
    }
  }

  uint64_t seed_ = 0;
  std::map<std::string, int64_t> sizes_;
  Settings settings_;
  std::vector<Template> one_, two_;
  GenerationSettings gen_;
  std::map<std::string, std::vector<Example>> data_;
};

std::unique_ptr<Task> make_arithmetic(const ConfigView& config, const PluginContext& context) {
  return std::make_unique<ArithmeticTask>(config, context);
}

}  // namespace
}  // namespace colm

COLM_PLUGIN(task, "arithmetic", "1.0.0", colm::make_arithmetic)
