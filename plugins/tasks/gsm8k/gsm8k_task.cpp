// The `gsm8k` task: GSM8K jsonl files (question; answer = worked solution with "<<a*b=c>>"
// calculator annotations and "#### final"). Metrics: accuracy (final answer) and calc_accuracy.
// Paths come from the config; a valid split is cut from train with a seeded permutation.
#include <map>
#include <string>
#include <vector>

#include "colm/plugin.hpp"
#include "math_answer.hpp"
#include "../jsonl/task_util.hpp"

namespace colm {
namespace {

std::string strip_annotations(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const auto open = s.find("<<", i);
    if (open == std::string::npos) break;
    const auto close = s.find(">>", open + 2);
    if (close == std::string::npos) break;
    out += s.substr(i, open - i);
    i = close + 2;
  }
  return out + s.substr(i);
}

class Gsm8kTask final : public Task {
 public:
  Gsm8kTask(const ConfigView& c, const PluginContext& ctx) {
    // The defaults are the copies the repository ships (datasets/gsm8k), relative to the working
    // directory like every path of an experiment: run from the repository root, they just work.
    const auto train_path = c.get_string("train_path", "datasets/gsm8k/train.jsonl",
                                         "GSM8K train.jsonl (train and valid splits); \"\" for none");
    const auto test_path = c.get_string("test_path", "datasets/gsm8k/test.jsonl", "GSM8K test.jsonl (test split)");
    const int64_t valid_size = c.get_int("valid_size", 200, "problems moved from train to the valid split");
    const uint64_t seed = uint64_t(c.get_int("seed", int64_t(ctx.seed), "seed of the train/valid split"));
    const int64_t shots = c.get_int("shots", 0, "worked train examples prepended to every prompt");
    keep_annotations_ = c.get_bool("keep_annotations", true, "keep <<...>> calculator annotations in targets");
    gen_.max_tokens = c.get_int("max_tokens", 256, "generated tokens per problem, at most");
    gen_.stop = {"\n\n", "\nQuestion:"};
    if (valid_size < 0) c.fail("valid_size", "must be >= 0");
    if (shots < 0) c.fail("shots", "must be >= 0");
    if (gen_.max_tokens < 1) c.fail("max_tokens", "must be >= 1");
    if (shots > 0 && train_path.empty()) c.fail("shots", "few-shot examples come from train_path, which is not set");

    auto load = [&](const std::string& key, const std::string& path, const std::string& split) {
      std::vector<Example> out;
      std::vector<nlohmann::json> rows;
      try {
        rows = task_util::read_jsonl(path);
      } catch (const Error& e) {
        c.fail(key, e.what());
      }
      for (size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        if (!r.contains("question") || !r["question"].is_string() || !r.contains("answer") || !r["answer"].is_string())
          c.fail(key, path + ":" + std::to_string(i + 1) + ": needs string fields 'question' and 'answer'");
        const std::string answer = r["answer"];
        Example e;
        e.id = split + "-" + std::to_string(i);
        e.prompt = r["question"].get<std::string>();  // formatted below, once shots are known
        e.target = keep_annotations_ ? answer : strip_annotations(answer);
        e.reference = math_answer::final_answer(answer);
        if (e.reference.empty())
          c.fail(key, path + ":" + std::to_string(i + 1) + ": answer has no '#### <number>' line");
        out.push_back(std::move(e));
      }
      return out;
    };
    data_["test"] = load("test_path", test_path, "test");
    if (!train_path.empty()) {
      auto all = load("train_path", train_path, "train");
      if (valid_size >= int64_t(all.size())) c.fail("valid_size", "must be smaller than the train file");
      const auto [train_idx, valid_idx] = task_util::split_indices(all.size(), size_t(valid_size), seed);
      for (auto i : train_idx) data_["train"].push_back(all[i]);
      for (auto i : valid_idx) data_["valid"].push_back(all[i]);
      // Shots: the first `shots` train examples of a seeded order, then removed from train.
      if (shots > 0) {
        auto& train = data_["train"];
        if (shots >= int64_t(train.size())) c.fail("shots", "more shots than train examples");
        std::vector<size_t> order(train.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        task_util::shuffle(order, seed ^ 0x5107u);
        std::vector<bool> used(train.size(), false);
        for (int64_t k = 0; k < shots; ++k) {
          const auto& e = train[order[size_t(k)]];
          prefix_ += "Question: " + e.prompt + "\nAnswer: " + e.target + "\n\n";
          used[order[size_t(k)]] = true;
        }
        std::vector<Example> rest;
        for (size_t i = 0; i < train.size(); ++i)
          if (!used[i]) rest.push_back(train[i]);
        train = std::move(rest);
      }
    }
    for (auto& [split, examples] : data_)
      for (auto& e : examples) {
        e.prompt = prefix_ + "Question: " + e.prompt + "\nAnswer:";
        e.target = " " + e.target + "\n\n";
      }
  }

  std::vector<std::string> splits() const override {
    std::vector<std::string> out;
    for (const char* s : {"train", "valid", "test"})
      if (data_.count(s)) out.push_back(s);
    return out;
  }

  std::vector<Example> examples(const std::string& split) override {
    const auto it = data_.find(split);
    if (it == data_.end()) {
      std::string names;
      for (const auto& s : splits()) names += (names.empty() ? "" : ", ") + s;
      throw Error("gsm8k: unknown split '" + split + "' (splits: " + names +
                  (data_.count("train") ? "" : "; train and valid need train_path") + ")");
    }
    return it->second;
  }

  GenerationSettings generation() const override { return gen_; }

  // accuracy: the number after the output's last "####" equals the reference after normalisation
  // (thousands separators, '$', trailing zeros of decimals). calc_accuracy: see
  // math_answer::calculation_steps; absent when the output has no calculation step, so the
  // experiment-level mean is over outputs that calculate. calc_steps / calc_correct: the counts.
  std::map<std::string, double> score(const Example& example, const std::string& output) const override {
    std::map<std::string, double> m;
    const auto predicted = math_answer::final_answer(output);
    m["accuracy"] = !predicted.empty() && predicted == example.reference ? 1.0 : 0.0;
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
  bool keep_annotations_ = true;
  std::string prefix_;
  GenerationSettings gen_;
  std::map<std::string, std::vector<Example>> data_;
};

std::unique_ptr<Task> make_gsm8k(const ConfigView& config, const PluginContext& context) {
  return std::make_unique<Gsm8kTask>(config, context);
}

}  // namespace
}  // namespace colm

COLM_PLUGIN(task, "gsm8k", "1.0.0", colm::make_gsm8k)
