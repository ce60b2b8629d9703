// The `pubmedqa` task: PubMedQA PQA-L in its ori_pqal.json format (PMID -> QUESTION, CONTEXTS,
// final_decision). Prompt = contexts + question; answer yes / no / maybe; metric accuracy.
// The official test ids come from test_ground_truth.json when given, else a seeded split.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "colm/plugin.hpp"
#include "../jsonl/task_util.hpp"

namespace colm {
namespace {

// The first word of the output, lowercased, without surrounding punctuation.
std::string first_word(const std::string& output) {
  std::string w;
  for (char c : output) {
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (letter) w += char(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    else if (!w.empty()) break;
    else if (c != ' ' && c != '\t' && c != '\n' && c != '"' && c != '\'' && c != ':') break;
  }
  return w;
}

class PubmedqaTask final : public Task {
 public:
  PubmedqaTask(const ConfigView& c, const PluginContext& ctx) {
    // The defaults are the copies the repository ships (datasets/pubmedqa), relative to the working
    // directory like every path of an experiment; with them the test split is the official one.
    const bool shipped = !c.has("path");
    const auto path = c.get_string("path", "datasets/pubmedqa/ori_pqal.json", "PubMedQA ori_pqal.json");
    const auto test_ids_path = c.get_string(
        "test_ids", shipped ? "datasets/pubmedqa/test_ground_truth.json" : "",
        "test_ground_truth.json: its PMIDs form the test split (else a seeded split; default: the shipped "
        "one when path is not set)");
    const int64_t test_size = c.get_int("test_size", 500, "test items of the seeded split (without test_ids)");
    const int64_t valid_size = c.get_int("valid_size", 50, "items moved from the remaining pool to valid");
    const uint64_t seed = uint64_t(c.get_int("seed", int64_t(ctx.seed), "seed of the splits"));
    const int64_t max_context_chars = c.get_int("max_context_chars", 0, "truncate the contexts (0: keep all)");
    gen_.max_tokens = c.get_int("max_tokens", 4, "generated tokens per question, at most");
    gen_.stop = {"\n"};
    if (test_size < 0) c.fail("test_size", "must be >= 0");
    if (valid_size < 0) c.fail("valid_size", "must be >= 0");
    if (max_context_chars < 0) c.fail("max_context_chars", "must be >= 0");
    if (gen_.max_tokens < 1) c.fail("max_tokens", "must be >= 1");

    nlohmann::json doc;
    try {
      doc = task_util::read_json(path);
    } catch (const Error& e) {
      c.fail("path", e.what());
    }
    if (!doc.is_object() || doc.empty()) c.fail("path", path + ": expected a JSON object PMID -> item");
    std::vector<std::string> ids;
    std::map<std::string, Example> items;
    for (const auto& [pmid, item] : doc.items()) {
      const auto bad = [&](const std::string& what) { c.fail("path", path + ": item " + pmid + ": " + what); };
      if (!item.is_object() || !item.contains("QUESTION") || !item["QUESTION"].is_string()) bad("no string QUESTION");
      if (!item.contains("CONTEXTS") || !item["CONTEXTS"].is_array()) bad("no CONTEXTS list");
      if (!item.contains("final_decision") || !item["final_decision"].is_string()) bad("no final_decision");
      const std::string label = item["final_decision"];
      if (label != "yes" && label != "no" && label != "maybe") bad("final_decision '" + label + "' is not yes/no/maybe");
      std::string context;
      for (const auto& part : item["CONTEXTS"]) {
        if (!part.is_string()) bad("a CONTEXTS entry is not a string");
        context += (context.empty() ? "" : " ") + part.get<std::string>();
      }
      if (max_context_chars > 0 && int64_t(context.size()) > max_context_chars) {
        size_t cut = size_t(max_context_chars);
        while (cut > 0 && (static_cast<unsigned char>(context[cut]) & 0xC0) == 0x80) --cut;  // whole UTF-8 chars
        context = context.substr(0, cut);
      }
      Example e;
      e.id = pmid;
      e.prompt = "Context: " + context + "\nQuestion: " + item["QUESTION"].get<std::string>() +
                 "\nAnswer (yes, no or maybe):";
      e.target = " " + label + "\n";
      e.reference = label;
      ids.push_back(pmid);
      items[pmid] = std::move(e);
    }

    std::vector<std::string> pool;
    if (!test_ids_path.empty()) {
      nlohmann::json truth;
      try {
        truth = task_util::read_json(test_ids_path);
      } catch (const Error& e) {
        c.fail("test_ids", e.what());
      }
      if (!truth.is_object()) c.fail("test_ids", test_ids_path + ": expected a JSON object PMID -> label");
      std::set<std::string> test_set;
      for (const auto& [pmid, label] : truth.items()) {
        if (!items.count(pmid)) c.fail("test_ids", test_ids_path + ": PMID " + pmid + " is not in " + path);
        test_set.insert(pmid);
      }
      for (const auto& id : ids) (test_set.count(id) ? data_["test"] : pool_examples_).push_back(items[id]);
    } else {
      if (test_size >= int64_t(ids.size())) c.fail("test_size", "must be smaller than the number of items");
      const auto [rest, test] = task_util::split_indices(ids.size(), size_t(test_size), seed);
      for (auto i : test) data_["test"].push_back(items[ids[i]]);
      for (auto i : rest) pool_examples_.push_back(items[ids[i]]);
    }
    if (valid_size >= int64_t(pool_examples_.size()) && !pool_examples_.empty())
      c.fail("valid_size", "must be smaller than the " + std::to_string(pool_examples_.size()) + " non-test items");
    const auto [train, valid] = task_util::split_indices(pool_examples_.size(), size_t(valid_size), seed ^ 0x7A11D);
    for (auto i : train) data_["train"].push_back(pool_examples_[i]);
    for (auto i : valid) data_["valid"].push_back(pool_examples_[i]);
    pool_examples_.clear();
  }

  std::vector<std::string> splits() const override { return {"train", "valid", "test"}; }

  std::vector<Example> examples(const std::string& split) override {
    const auto it = data_.find(split);
    if (it == data_.end()) throw Error("pubmedqa: unknown split '" + split + "' (splits: train, valid, test)");
    return it->second;
  }

  GenerationSettings generation() const override { return gen_; }

  // accuracy: the output's first word (lowercased, punctuation dropped) equals the label.
  std::map<std::string, double> score(const Example& example, const std::string& output) const override {
    return {{"accuracy", first_word(output) == example.reference ? 1.0 : 0.0}};
  }

  std::string primary_metric() const override { return "accuracy"; }

 private:
  GenerationSettings gen_;
  std::vector<Example> pool_examples_;
  std::map<std::string, std::vector<Example>> data_;
};

std::unique_ptr<Task> make_pubmedqa(const ConfigView& config, const PluginContext& context) {
  return std::make_unique<PubmedqaTask>(config, context);
}

}  // namespace
}  // namespace colm

COLM_PLUGIN(task, "pubmedqa", "1.0.0", colm::make_pubmedqa)
