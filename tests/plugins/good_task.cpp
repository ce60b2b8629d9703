// Test-only task plugin "test_task": the smallest valid plugin, used by the registry and CLI tests.
// Its examples echo the PluginContext so tests can see what core passed in. Reads no config keys.
#include <stdexcept>

#include "colm/plugin.hpp"

namespace colm_test {

class EchoTask final : public colm::Task {
 public:
  explicit EchoTask(colm::PluginContext ctx) : ctx_(std::move(ctx)) {}
  std::vector<std::string> splits() const override { return {"train", "test"}; }
  std::vector<colm::Example> examples(const std::string& split) override {
    if (split != "train" && split != "test") {
      throw colm::Error("test_task: unknown split '" + split + "' (available: train, test)");
    }
    return {colm::Example{split + "-0", "instance=" + ctx_.instance, std::to_string(ctx_.seed), " 42"}};
  }
  colm::GenerationSettings generation() const override { return colm::GenerationSettings{8, {"\n"}}; }
  std::map<std::string, double> score(const colm::Example& example, const std::string& output) const override {
    return {{"accuracy", output == example.reference ? 1.0 : 0.0}};
  }
  std::string primary_metric() const override { return "accuracy"; }

 private:
  colm::PluginContext ctx_;
};

std::unique_ptr<colm::Task> make_task(const colm::ConfigView&, const colm::PluginContext& ctx) {
  return std::make_unique<EchoTask>(ctx);
}

}  // namespace colm_test

COLM_PLUGIN(task, "test_task", "1.0", colm_test::make_task)
