// The `jsonl` task: any jsonl file(s) with a prompt field and an answer field. Metrics: exact_match
// and contains (whitespace-normalised, optionally case-insensitive). Either one file cut into
// seeded train/valid/test splits, or one file per split.
#include <map>
#include <string>
#include <vector>

#include "colm/plugin.hpp"
#include "task_util.hpp"

namespace colm {
namespace {

std::string field_text(const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

class JsonlTask final : public Task {
 public:
  JsonlTask(const ConfigView& c, const PluginContext& ctx) {
    const auto path = c.get_string("path", "", "one jsonl file cut into train/valid/test (or give *_path per split)");
    std::map<std::string, std::string> split_paths;
    for (const char* s : {"train", "valid", "test"}) {
      const auto p = c.get_string(std::string(s) + "_path", "", std::string("jsonl file of the ") + s + " split");
      if (!p.empty()) split_paths[s] = p;
    }
    prompt_field_ = c.get_string("prompt_field", "prompt", "field holding the prompt");
    answer_field_ = c.get_string("answer_field", "answer", "field holding the reference answer");
    target_field_ = c.get_string("target_field", "", "field holding the training target (default: the answer)");
    id_field_ = c.get_string("id_field", "", "field holding a stable id (default: split-line number)");
    prefix_ = c.get_string("prompt_prefix", "", "text put before every prompt");
    suffix_ = c.get_string("prompt_suffix", "", "text put after every prompt");
    ignore_case_ = c.get_bool("ignore_case", false, "compare answers case-insensitively");
    const double valid_fraction = c.get_double("valid_fraction", 0.1, "share of `path` going to valid");
    const double test_fraction = c.get_double("test_fraction", 0.1, "share of `path` going to test");
    const uint64_t seed = uint64_t(c.get_int("seed", int64_t(ctx.seed), "seed of the split of `path`"));
    gen_.max_tokens = c.get_int("max_tokens", 64, "generated tokens per example, at most");
    gen_.stop = c.get_strings("stop", {"\n"}, "generation stops after any of these strings");
    if (gen_.max_tokens < 1) c.fail("max_tokens", "must be >= 1");
    if (path.empty() && split_paths.empty()) c.fail("path", "give `path` or at least one of train_path, valid_path, test_path");
    if (!path.empty() && !split_paths.empty())
      c.fail("path", "give either `path` (split by fractions) or per-split *_path keys, not both");
    if (!(valid_fraction >= 0 && test_fraction >= 0 && valid_fraction + test_fraction < 1))
      c.fail("test_fraction", "valid_fraction and test_fraction must be >= 0 and sum to less than 1");

    auto load = [&](const std::string& key, const std::string& file, const std::string& split) {
      std::vector<nlohmann::json> rows;
      try {
        rows = task_util::read_jsonl(file);
      } catch (const Error& e) {
        c.fail(key, e.what());
      }
      std::vector<Example> out;
      for (size_t i = 0; i < rows.size(); ++i) {
        const auto& r = rows[i];
        const auto where = file + ":" + std::to_string(i + 1) + ": ";
        if (!r.contains(prompt_field_)) c.fail("prompt_field", where + "no field '" + prompt_field_ + "'");
        if (!r.contains(answer_field_)) c.fail("answer_field", where + "no field '" + answer_field_ + "'");
        Example e;
        e.id = id_field_.empty() ? split + "-" + std::to_string(i)
               : r.contains(id_field_) ? field_text(r[id_field_])
                                       : (c.fail("id_field", where + "no field '" + id_field_ + "'"), "");
        e.prompt = prefix_ + field_text(r[prompt_field_]) + suffix_;
        e.reference = field_text(r[answer_field_]);
        std::string target = e.reference;
        if (!target_field_.empty()) {
          if (!r.contains(target_field_)) c.fail("target_field", where + "no field '" + target_field_ + "'");
          target = field_text(r[target_field_]);
        }
        e.target = " " + target + (gen_.stop.empty() ? "" : gen_.stop.front());
        out.push_back(std::move(e));
      }
      return out;
    };
    if (!path.empty()) {
      auto all = load("path", path, "all");
      const size_t n = all.size();
      const size_t n_test = size_t(double(n) * test_fraction), n_valid = size_t(double(n) * valid_fraction);
      const auto [rest, test] = task_util::split_indices(n, n_test, seed);
      std::vector<Example> pool;
      for (auto i : rest) pool.push_back(all[i]);
      for (auto i : test) data_["test"].push_back(all[i]);
      const auto [train, valid] = task_util::split_indices(pool.size(), n_valid, seed ^ 0x7A11D);
      for (auto i : train) data_["train"].push_back(pool[i]);
      for (auto i : valid) data_["valid"].push_back(pool[i]);
    } else {
      for (const auto& [split, file] : split_paths) data_[split] = load(split + "_path", file, split);
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
      throw Error("jsonl: unknown split '" + split + "' (splits: " + names + ")");
    }
    return it->second;
  }

  GenerationSettings generation() const override { return gen_; }

  // Both metrics compare after cutting the output at the first stop string and normalising
  // whitespace (and case with ignore_case). exact_match: equal; contains: the answer occurs in it.
  std::map<std::string, double> score(const Example& example, const std::string& output) const override {
    const auto out = task_util::normalize_text(task_util::cut_at_stop(output, gen_.stop), ignore_case_);
    const auto ref = task_util::normalize_text(example.reference, ignore_case_);
    return {{"exact_match", out == ref ? 1.0 : 0.0},
            {"contains", !ref.empty() && out.find(ref) != std::string::npos ? 1.0 : 0.0}};
  }

  std::string primary_metric() const override { return "exact_match"; }

 private:
  std::string prompt_field_, answer_field_, target_field_, id_field_, prefix_, suffix_;
  bool ignore_case_ = false;
  GenerationSettings gen_;
  std::map<std::string, std::vector<Example>> data_;
};

std::unique_ptr<Task> make_jsonl(const ConfigView& config, const PluginContext& context) {
  return std::make_unique<JsonlTask>(config, context);
}

}  // namespace
}  // namespace colm

COLM_PLUGIN(task, "jsonl", "1.0.0", colm::make_jsonl)
