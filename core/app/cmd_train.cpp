// `colm train-expert`: trains a small expert (objective `lm`) from text files and writes it as a
// Hugging Face checkpoint. Interrupt it at any moment; the same command resumes from its last checkpoint.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <tuple>
#include <iostream>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "cli.hpp"
#include "colm/config.hpp"
#include "plugin/registry.hpp"
#include "method/distributed.hpp"
#include "method/train.hpp"
#include "colm/runtime.hpp"

namespace colm::cli {

namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;

extern "C" char** environ;

// `--nproc N`: N copies of this command joined in one c10d group (rank i of N, a FileStore under the
// output directory, threads split between them). Returns the exit status: 0 when every rank succeeded.
int run_ranks(const std::vector<std::string>& args, const GlobalOptions& global, int nproc, const std::string& out) {
  fs::create_directories(out);
  const auto store = (fs::absolute(out) / (".dist-store-" + std::to_string(::getpid()))).string();
  std::error_code ec;
  fs::remove(store, ec);
  const int threads = std::max(1, torch_threads() / nproc);
  std::vector<std::string> argv_text = {global.argv0, "--log-level", global.log_level};
  for (const auto& d : global.plugin_dirs) argv_text.insert(argv_text.end(), {"--plugin-dir", d});
  argv_text.push_back("train-expert");
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<pid_t> pids;
  for (int rank = 0; rank < nproc; ++rank) {
    std::vector<std::string> env_text;
    for (char** e = environ; *e; ++e) {
      const std::string v(*e);
      if (v.rfind("COLM_RANK=", 0) && v.rfind("COLM_WORLD_SIZE=", 0) && v.rfind("COLM_DIST_INIT=", 0) &&
          v.rfind("COLM_THREADS=", 0))
        env_text.push_back(v);
    }
    env_text.push_back("COLM_RANK=" + std::to_string(rank));
    env_text.push_back("COLM_WORLD_SIZE=" + std::to_string(nproc));
    env_text.push_back("COLM_DIST_INIT=file://" + store);
    env_text.push_back("COLM_THREADS=" + std::to_string(threads));
    std::vector<char*> envp;
    for (auto& e : env_text) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, "/proc/self/exe", nullptr, nullptr, argv.data(), envp.data());
    if (rc != 0) throw Error(std::string("colm train-expert --nproc: cannot start rank ") + std::to_string(rank) + ": " +
                             std::strerror(rc));
    pids.push_back(pid);
  }
  spdlog::info("[train-expert] {} processes (c10d, gloo), {} torch thread{} each", nproc, threads,
               threads == 1 ? "" : "s");
  int failed = 0;
  for (size_t rank = 0; rank < pids.size(); ++rank) {
    int status = 0;
    while (waitpid(pids[rank], &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++failed;
      spdlog::error("[train-expert] rank {} {}", rank,
                    WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                      : "was killed by signal " + std::to_string(WTERMSIG(status)));
    }
  }
  fs::remove(store, ec);
  return failed ? 1 : 0;
}

int train_expert(const std::vector<std::string>& args, const GlobalOptions& global) {
  std::vector<std::string> text, valid_text;
  std::string out, from, family, dtype;
  int64_t n_layer, n_head, d_model, d_ff, max_positions, init_seed, threads;
  double valid_fraction;
  TrainConfig c;
  int64_t seed = 0;
  int nproc = 1;
  bool no_resume = false;
  po::options_description o(
      "colm train-expert: train an expert on text (next-token loss) and save it as an HF checkpoint\n\n"
      "usage: colm train-expert --text FILE [--text FILE ...] --out DIR [options]\n\n"
      "Checkpoints go to DIR/train_state; rerunning the same command resumes from the last one and ends\n"
      "exactly where an uninterrupted run would. The model is written to DIR (config.json,\n"
      "model.safetensors, tokenizer.json) and a JSON summary to stdout.\n\noptions");
  // clang-format off
  o.add_options()
    ("help,h", "this help")
    ("text", po::value(&text)->multitoken(), "training text file (repeatable); files are joined, each as BOS text EOS")
    ("valid-text", po::value(&valid_text)->multitoken(), "validation text file (repeatable)")
    ("valid-fraction", po::value(&valid_fraction)->default_value(0.0), "hold out this fraction of the training chunks for validation (when no --valid-text)")
    ("out", po::value(&out), "output directory (required)")
    ("from", po::value(&from), "start from this HF checkpoint directory instead of a fresh model")
    ("dtype", po::value(&dtype)->default_value("float32"), "stored dtype of the model: float32 or bfloat16 (bf16 trains through f32 master weights)")
    ("family", po::value(&family)->default_value("gpt2"), "architecture of a fresh model: gpt2 or llama")
    ("n-layer", po::value(&n_layer)->default_value(2), "fresh model: transformer blocks")
    ("n-head", po::value(&n_head)->default_value(4), "fresh model: attention heads")
    ("d-model", po::value(&d_model)->default_value(64), "fresh model: hidden size")
    ("d-ff", po::value(&d_ff)->default_value(0), "fresh model: feed-forward size (0: 4 x d-model)")
    ("max-positions", po::value(&max_positions)->default_value(0), "fresh model: longest context (0: max-len)")
    ("init-seed", po::value(&init_seed)->default_value(-1), "fresh model: seed of the random init (-1: --seed)")
    ("steps", po::value(&c.steps)->default_value(c.steps), "optimiser steps")
    ("batch-size", po::value(&c.batch_size)->default_value(c.batch_size), "sequences per micro-batch")
    ("grad-accum", po::value(&c.grad_accum)->default_value(c.grad_accum), "micro-batches per step")
    ("lr", po::value(&c.lr)->default_value(c.lr), "peak learning rate (AdamW)")
    ("weight-decay", po::value(&c.weight_decay)->default_value(c.weight_decay), "AdamW weight decay (matrices only)")
    ("warmup", po::value(&c.warmup)->default_value(c.warmup), "linear warm-up steps")
    ("schedule", po::value(&c.schedule)->default_value(c.schedule), "decay after warm-up: linear, cosine or constant")
    ("min-lr-ratio", po::value(&c.min_lr_ratio)->default_value(c.min_lr_ratio), "final lr as a fraction of --lr")
    ("clip", po::value(&c.clip)->default_value(c.clip), "max gradient norm (<= 0: no clipping)")
    ("seed", po::value(&seed)->default_value(0), "seed of the data order (and of a fresh model's init)")
    ("max-len", po::value(&c.max_len)->default_value(128), "tokens per training chunk")
    ("eval-every", po::value(&c.eval_every)->default_value(0), "steps between validation losses (0: at the end)")
    ("checkpoint-every", po::value(&c.checkpoint_every)->default_value(100), "steps between checkpoints (0: at the end)")
    ("threads", po::value(&threads)->default_value(0), "Torch CPU threads (0: keep the default)")
    ("nproc", po::value(&nproc)->default_value(1), "data-parallel training in N processes (c10d, Gloo): each "
     "takes every N-th sequence of a batch, gradients are summed, the result equals 1 process's to float "
     "rounding; under srun -n N the tasks join one group by themselves (SLURM_PROCID, SLURM_NTASKS)")
    ("no-resume", po::bool_switch(&no_resume), "start over even when DIR/train_state holds a checkpoint");
  // clang-format on
  po::variables_map vm;
  if (const auto rc = parse_options("train-expert", args, o, vm)) return *rc;
  if (text.empty() || out.empty()) {
    std::cerr << "colm train-expert: --text and --out are required (see colm train-expert --help)\n";
    return 2;
  }
  if (nproc < 1) {
    std::cerr << "colm train-expert: --nproc must be >= 1\n";
    return 2;
  }
  // The launcher: each rank is this command again, inside the group.
  if (nproc > 1 && !std::getenv("COLM_WORLD_SIZE")) return run_ranks(args, global, nproc, out);
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
  c.parallel = DataParallel::from_environment();
  const bool writer = !c.parallel || c.parallel->rank() == 0;
  c.seed = static_cast<uint64_t>(seed);
  c.resume = !no_resume;
  c.label = "train-expert";
  c.checkpoint_dir = (fs::path(out) / "train_state").string();

  std::unique_ptr<Registry> own;
  Registry* registry = &default_registry();
  if (!global.plugin_dirs.empty()) {
    own = std::make_unique<Registry>();
    own->scan(Registry::default_dirs(global.plugin_dirs, global.argv0));
    registry = own.get();
  }
  std::string toml;
  if (!from.empty()) {
    toml = "checkpoint = " + nlohmann::json(from).dump() + "\n";
  } else {
    toml = "family = " + nlohmann::json(family).dump() + "\nvocab = \"bytes\"\n" +
           "n_layer = " + std::to_string(n_layer) + "\nn_head = " + std::to_string(n_head) +
           "\nd_model = " + std::to_string(d_model) + "\nd_ff = " + std::to_string(d_ff > 0 ? d_ff : 4 * d_model) +
           "\nmax_positions = " + std::to_string(max_positions > 0 ? max_positions : c.max_len) +
           "\ninit_seed = " + std::to_string(init_seed >= 0 ? init_seed : seed) + "\n";
  }
  toml += "dtype = " + nlohmann::json(dtype).dump() + "\n";
  PluginContext ctx;
  ctx.instance = "expert";
  ctx.seed = static_cast<uint64_t>(seed);
  auto expert = registry->create_expert("transformer", ConfigView::from_string(toml, "train-expert options"), ctx);

  const auto& tok = expert->tokenizer();
  auto data = make_text_data(text, tok, c.max_len);
  TrainData valid;
  if (!valid_text.empty()) {
    valid = make_text_data(valid_text, tok, c.max_len);
  } else if (valid_fraction > 0) {
    std::tie(data, valid) = split_data(data, valid_fraction, c.seed);
  }
  spdlog::info("[train-expert] {} training chunks ({} target tokens){}", data.size(), data.target_tokens(),
               valid.size() ? ", " + std::to_string(valid.size()) + " validation chunks" : std::string());
  fs::create_directories(out);
  LmObjective objective(*expert);
  auto r = train(objective, data, valid.size() ? &valid : nullptr, c);
  if (!writer) return 0;  // every rank holds the same weights: rank 0 writes them
  expert->save(out);
  nlohmann::json summary{{"out", out},
                         {"steps", r.steps},
                         {"resumed_from", r.resumed_from},
                         {"train_loss", r.train_loss},
                         {"tokens_per_second", r.tokens_per_second},
                         {"processes", c.parallel ? c.parallel->world_size() : 1}};
  if (!std::isnan(r.valid_loss)) summary["valid_loss"] = r.valid_loss;
  std::cout << summary.dump() << std::endl;
  return 0;
}

const RegisterCommand kRegister("train-expert", "train a small expert on text files (lm objective); resumable",
                                train_expert);

}  // namespace

}  // namespace colm::cli
