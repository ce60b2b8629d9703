// Data-parallel training with c10d (Gloo): `colm train-expert --nproc 2` must train the same model
// as one process with the same global batch, to float rounding; and the group's collectives sum.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "colm/safetensors.hpp"
#include "method/distributed.hpp"
#include "support.hpp"

using namespace colm;

namespace {

// The largest absolute difference between two checkpoints' tensors (infinity when their names differ).
double max_weight_difference(const std::string& a_dir, const std::string& b_dir) {
  const auto a = Checkpoint::open(a_dir), b = Checkpoint::open(b_dir);
  if (a.names() != b.names()) return INFINITY;
  double worst = 0;
  for (const auto& name : a.names())
    worst = std::max(worst, (a.load(name) - b.load(name)).abs().max().item<double>());
  return worst;
}

nlohmann::json last_json_line(const std::string& out) {
  const auto start = out.rfind("\n{");
  return nlohmann::json::parse(out.substr(start == std::string::npos ? 0 : start + 1));
}

}  // namespace

TEST_CASE("a c10d group of two threads sums tensors and scalars", "[ddp]") {
  const auto dir = test::temp_dir("colm-ddp");
  std::vector<torch::Tensor> results(2);
  std::vector<double> sums(2);
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < 2; ++rank)
    ranks.emplace_back([&, rank] {
      try {
        DataParallel group(rank, 2, "file://" + dir + "/store", 60);
        std::vector<torch::Tensor> t{torch::full({3}, double(rank + 1)), torch::full({2, 2}, 10.0 * (rank + 1))};
        group.all_reduce_sum(t);
        results[size_t(rank)] = torch::cat({t[0], t[1].reshape({-1})});
        sums[size_t(rank)] = group.all_reduce_sum(0.5 + rank);
        group.barrier();
      } catch (const std::exception& e) {
        errors[size_t(rank)] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  CHECK(errors[0].empty());
  CHECK(errors[1].empty());
  REQUIRE(results[0].defined());
  REQUIRE(results[1].defined());
  CHECK(torch::equal(results[0], torch::tensor({3.0f, 3.0f, 3.0f, 30.0f, 30.0f, 30.0f, 30.0f})));
  CHECK(torch::equal(results[0], results[1]));
  CHECK(sums[0] == 2.0);
  CHECK(sums[1] == 2.0);
  CHECK_THROWS_WITH(DataParallel(2, 2, "file://" + dir + "/x"), Catch::Contains("need 0 <= rank < size"));
  CHECK_THROWS_WITH(DataParallel(0, 2, "udp://x"), Catch::Contains("expected file:///path or tcp://host:port"));
}

TEST_CASE("colm train-expert --nproc 2 trains the model one process trains with the same global batch",
          "[ddp][train]") {
  const auto dir = test::temp_dir("colm-ddp");
  {
    std::mt19937 rng(7);
    const char* words[] = {"the", "cat", "sat", "on", "a", "mat", "and", "ran", "to", "red", "house", "dogs", "play"};
    std::ofstream f(dir + "/text.txt");
    for (int line = 0; line < 200; ++line) {
      for (int w = 0; w < 12; ++w) f << words[rng() % 13] << (w == 11 ? "\n" : " ");
    }
  }
  // Batches of 7 sequences: the two ranks take 4 and 3 rows, of different token counts.
  const auto base = "COLM_THREADS=2 " + test::colm_binary() + " --log-level warn train-expert --text " + dir +
                    "/text.txt --steps 8 --batch-size 7 --grad-accum 2 --n-layer 1 --n-head 2 --d-model 32 "
                    "--max-len 48 --lr 3e-3 --checkpoint-every 4 --seed 3";
  std::string one_out, two_out, other_out;
  REQUIRE(test::run_command(base + " --out " + dir + "/one", &one_out) == 0);
  REQUIRE(test::run_command(base + " --out " + dir + "/two --nproc 2", &two_out) == 0);
  INFO(two_out);
  const auto one = last_json_line(one_out), two = last_json_line(two_out);
  CHECK(one.at("processes") == 1);
  CHECK(two.at("processes") == 2);
  CHECK(two.at("steps") == 8);
  CHECK(std::fabs(one.at("train_loss").get<double>() - two.at("train_loss").get<double>()) < 1e-5);
  const double diff = max_weight_difference(dir + "/one", dir + "/two");
  INFO("largest weight difference, 1 vs 2 processes: " << diff);
  CHECK(diff < 1e-5);
  // Against a control that must differ: another global batch size moves the weights far more.
  auto control = base;
  control.replace(control.find("--batch-size 7"), 14, "--batch-size 5");
  REQUIRE(test::run_command(control + " --out " + dir + "/other", &other_out) == 0);
  CHECK(max_weight_difference(dir + "/one", dir + "/other") > 1e-3);
  // No store file is left behind.
  for (const auto& e : std::filesystem::directory_iterator(dir + "/two"))
    CHECK(e.path().filename().string().rfind(".dist-store", 0) != 0);
}

namespace {

// A tiny experiment with one trained policy (Co-LLM, the base fine-tuned jointly, weak-supervision
// initialisation first), batches of 5 so that the two ranks take 3 and 2 rows.
const std::string kPolicyExperiment = R"([experiment]
name = "ddp-test"
seed = 5
database = "DIR/results.db"
artifacts_dir = "DIR/artifacts"

)" + colm::test::tiny_experts() + R"(
[task]
plugin = "arithmetic"
train_size = 12
valid_size = 4
test_size = 4
max_tokens = 6

[train.colm]
plugin = "learned"
objective = "marginal_likelihood"
init = "weak_supervision"
init_steps = 3
steps = 4
batch_size = 5
lr = 3e-3

[sweep]
policies = ["colm"]
eta = [0.5]
)";

std::string write_policy_experiment(const std::string& dir) {
  std::string text = kPolicyExperiment;
  for (size_t pos = text.find("DIR"); pos != std::string::npos; pos = text.find("DIR", pos + dir.size()))
    text.replace(pos, 3, dir);
  std::ofstream(dir + "/exp.toml") << text;
  return dir + "/exp.toml";
}

// The one trained policy's artifact directory under dir/artifacts/policies.
std::string policy_dir(const std::string& dir) {
  std::string found;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/artifacts/policies"))
    if (e.is_directory()) found = e.path().string();
  return found;
}

double max_head_difference(const std::string& a, const std::string& b) {
  const auto fa = SafetensorsFile::open(a), fb = SafetensorsFile::open(b);
  double worst = 0;
  for (const auto& [name, entry] : fa->header().tensors)
    worst = std::max(worst, (fa->load(name) - fb->load(name)).abs().max().item<double>());
  return worst;
}

}  // namespace

TEST_CASE("colm run --nproc 2 trains a Co-LLM policy as one process does, then runs the other stages",
          "[ddp][runner]") {
  const auto one = test::temp_dir("colm-ddp"), two = test::temp_dir("colm-ddp");
  const auto bin = "COLM_THREADS=2 " + test::colm_binary() + " --log-level warn run ";
  std::string out;
  REQUIRE(test::run_command(bin + write_policy_experiment(one) + " --stage train", &out) == 0);
  REQUIRE(test::run_command(bin + write_policy_experiment(two) + " --nproc 2", &out) == 0);
  INFO(out);
  CHECK_THAT(out, Catch::Contains("1 runs done"));
  const auto a = policy_dir(one), b = policy_dir(two);
  REQUIRE(!a.empty());
  CHECK(std::filesystem::path(a).filename() == std::filesystem::path(b).filename());  // same content key
  CHECK(std::filesystem::exists(b + "/DONE"));
  const double head = max_head_difference(a + "/head.safetensors", b + "/head.safetensors");
  const double base = max_weight_difference(a + "/base", b + "/base");
  INFO("largest difference, 1 vs 2 processes: head " << head << ", fine-tuned base " << base);
  CHECK(head < 1e-5);
  CHECK(base < 1e-5);
  for (const auto& e : std::filesystem::recursive_directory_iterator(two + "/artifacts")) {
    CHECK(e.path().extension() != ".claim");
    CHECK(e.path().filename().string().rfind(".dist-store", 0) != 0);
  }
}
