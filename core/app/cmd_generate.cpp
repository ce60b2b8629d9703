// `colm generate`: text from one model (streamed as it is produced) or from a base and assistants
// decoding collaboratively under a deferral policy, with the deferred spans marked.
// The decoding itself is core/src/decode.cpp; models and policies come from the plugin registry.
#include <unistd.h>

#include <iomanip>
#include <iostream>
#include <set>

#include <boost/program_options.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "cli.hpp"
#include "colm/config.hpp"
#include "colm/plugin.hpp"
#include "method/decode.hpp"
#include "plugin/registry.hpp"
#include "model/vocab_check.hpp"

namespace po = boost::program_options;

namespace colm::cli {
namespace {

const std::set<std::string> kRules = {"base_only", "assistant_only", "random", "confidence",
                                      "entropy", "more_confident", "oracle"};

// A TOML basic string holding `s` (paths may contain quotes or backslashes).
std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::shared_ptr<Expert> load_expert(const Registry& reg, const std::string& dir, const std::string& instance,
                                     const std::string& device, const std::string& dtype) {
  PluginContext ctx;
  ctx.instance = instance;
  ctx.device = device;
  const auto config = ConfigView::from_string(
      "checkpoint = " + toml_string(dir) + "\ndtype = " + toml_string(dtype) + "\n", instance);
  auto expert = reg.create_expert("transformer", config, ctx);
  config.check_all_read();
  const auto info = expert->info();
  spdlog::info("[generate] {}: {} ({} parameters, vocab {}, context {})", instance, info.source,
               info.num_parameters, info.vocab_size, info.max_positions);
  return expert;
}

// Text of generated ids [0, n) as the tokenizer decodes them, split into runs of one source.
// Prefix decodes keep multi-byte characters and SentencePiece spaces intact across runs.
std::vector<std::pair<int, std::string>> source_runs(const Tokenizer& tok, const DecodeResult& r) {
  std::vector<std::pair<int, std::string>> runs;
  std::vector<int64_t> prefix;
  std::string before;
  for (size_t i = 0; i < r.ids.size() && before.size() < r.output.size(); ++i) {
    prefix.push_back(r.ids[i]);
    std::string now = tok.decode(prefix);
    if (now.size() > r.output.size()) now.resize(r.output.size());  // cut at a stop string or EOS
    const std::string piece = now.compare(0, before.size(), before) == 0 ? now.substr(before.size()) : "";
    if (!piece.empty()) {
      if (runs.empty() || runs.back().first != r.trace[i].source) runs.emplace_back(r.trace[i].source, "");
      runs.back().second += piece;
    }
    before = std::move(now);
  }
  return runs;
}

void print_marked(const Tokenizer& tok, const DecodeResult& r, size_t num_assistants, bool colour) {
  static const char* kColours[] = {"\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m"};
  for (const auto& [source, text] : source_runs(tok, r)) {
    if (source == 0) {
      std::cout << text;
    } else if (colour) {
      std::cout << kColours[(source - 1) % 5] << text << "\033[0m";
    } else if (num_assistants == 1) {
      std::cout << "[" << text << "]";
    } else {
      std::cout << "[" << source << ":" << text << "]";
    }
  }
  std::cout << "\n";
}

int run_generate(const std::vector<std::string>& args, const GlobalOptions& global) {
  std::string model_dir, base_dir, policy_name, head, strategy, device, dtype;
  std::vector<std::string> assistant_dirs, prompts, stop;
  int64_t max_tokens = 0, rule_assistant = 1;
  double threshold = 0, temperature = 0, top_p = 0, rule_p = 0;
  uint64_t seed = 0;
  bool no_bos = false;

  po::options_description opts(
      "usage: colm generate DIR --prompt TEXT [options]\n"
      "       colm generate --base DIR --assistant DIR [--assistant DIR ...] --policy NAME --threshold ETA "
      "--prompt TEXT [options]\n\n"
      "One model streams its text to stdout. With --base, the base and the assistants decode together:\n"
      "deferred spans are coloured on a terminal and [bracketed] otherwise ([j:...] with several\n"
      "assistants), followed by the deferral rate.\n\noptions");
  opts.add_options()
      ("help,h", "this help")
      ("prompt", po::value(&prompts), "prompt text (repeatable: one generation each)")
      ("max-tokens", po::value(&max_tokens)->default_value(64), "tokens to generate at most")
      ("sample", po::bool_switch(), "sample instead of greedy decoding")
      ("temperature", po::value(&temperature)->default_value(1.0), "sampling temperature (> 0)")
      ("top-p", po::value(&top_p)->default_value(1.0), "nucleus sampling mass in (0, 1]")
      ("seed", po::value(&seed)->default_value(0), "sampling / random-policy seed")
      ("stop", po::value(&stop), "stop string (repeatable)")
      ("no-bos", po::bool_switch(&no_bos), "do not add the tokenizer's special tokens (BOS) to the prompt")
      ("device", po::value(&device)->default_value("cpu"), "cpu or cuda[:N]")
      ("dtype", po::value(&dtype)->default_value("float32"), "compute dtype of every model: float32 or bfloat16 (an f32 checkpoint loaded as bf16 takes half the memory)")
      ("base", po::value(&base_dir), "collaborative mode: the base model's checkpoint directory")
      ("assistant", po::value(&assistant_dirs), "an assistant's checkpoint directory (repeatable)")
      ("policy", po::value(&policy_name),
       "deferral policy: a rule (base_only, assistant_only, random, confidence, entropy, more_confident) "
       "or a policy plugin name (e.g. learned, with --head)")
      ("head", po::value(&head), "trained deferral head (safetensors) for a learned policy")
      ("threshold", po::value(&threshold)->default_value(0.5), "eta: defer when 1 - P(Z=0) > eta")
      ("strategy", po::value(&strategy)->default_value("defer"), "defer | mixture")
      ("rule-p", po::value(&rule_p)->default_value(0.5), "random rule: deferral probability")
      ("rule-assistant", po::value(&rule_assistant)->default_value(1), "rules: the assistant (1-based) deferred to");
  po::options_description hidden;
  hidden.add_options()("model", po::value(&model_dir));
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("model", 1);
  po::variables_map vm;
  if (const auto rc = parse_options("generate", args, all, vm, &pos, &opts)) return *rc;
  const bool collaborative = vm.count("base") > 0;
  auto usage_error = [](const std::string& msg) {
    std::cerr << "colm generate: " << msg << " (see colm generate --help)\n";
    return 2;
  };
  if (prompts.empty()) return usage_error("--prompt is required");
  if (collaborative == vm.count("model") > 0) return usage_error("give either a model DIR or --base DIR, not both or neither");
  if (collaborative && assistant_dirs.empty()) return usage_error("--base needs at least one --assistant DIR");
  if (collaborative && policy_name.empty()) return usage_error("--base needs --policy NAME");
  if (!collaborative && (!assistant_dirs.empty() || !policy_name.empty()))
    return usage_error("--assistant and --policy need --base");

  DecodeOptions o;
  o.threshold = threshold;
  o.strategy = strategy;
  o.sample = vm["sample"].as<bool>();
  o.temperature = temperature;
  o.top_p = top_p;
  o.seed = seed;
  o.batch_size = static_cast<int64_t>(prompts.size());
  o.max_tokens = max_tokens;
  o.stop = stop;
  o.add_special_tokens = !no_bos;

  Registry reg;
  reg.scan(Registry::default_dirs(global.plugin_dirs, global.argv0));

  if (!collaborative) {
    auto model = load_expert(reg, model_dir, "model", device, dtype);
    // Stream: print what the decoded text gained with each token (whole characters only).
    std::string printed;
    o.batch_size = 1;
    o.on_token = [&](int64_t, const TokenTrace&, const std::vector<int64_t>& ids) {
      const std::string text = model->tokenizer().decode(ids);
      if (text.compare(0, printed.size(), printed) != 0 || text.size() <= printed.size()) return;
      std::string delta = text.substr(printed.size());
      if (delta.find("\xEF\xBF\xBD") != std::string::npos) return;  // an incomplete character: wait for it
      std::cout << delta << std::flush;
      printed = text;
    };
    for (size_t i = 0; i < prompts.size(); ++i) {
      printed.clear();
      const auto r = decode_single(*model, {prompts[i]}, {seed + i}, o);
      // The stream may hold back a stop string's text or an incomplete character: finish from the result.
      if (r[0].output.compare(0, printed.size(), printed) == 0) std::cout << r[0].output.substr(printed.size());
      std::cout << "\n";
      spdlog::info("[generate] {} tokens in {:.2f} s (stop: {})", r[0].ids.size(), r[0].latency_s, r[0].stop_reason);
    }
    return 0;
  }

  auto base = load_expert(reg, base_dir, "base", device, dtype);
  std::vector<std::shared_ptr<Expert>> owned;
  std::vector<Expert*> assistants;
  for (size_t j = 0; j < assistant_dirs.size(); ++j) {
    owned.push_back(load_expert(reg, assistant_dirs[j], "assistant" + std::to_string(j + 1), device, dtype));
    assistants.push_back(owned.back().get());
  }

  // Token-level collaboration needs one vocabulary: refuse mismatched experts before decoding.
  std::vector<std::pair<std::string, const Expert*>> named{{"base (" + base_dir + ")", base.get()}};
  for (size_t j = 0; j < assistants.size(); ++j)
    named.emplace_back("assistant " + std::to_string(j + 1) + " (" + assistant_dirs[j] + ")", assistants[j]);
  // Vocabularies that extend one another collaborate over the ids they share: logits are cut there.
  const auto shared = check_vocab_compatible(named);
  base = share_vocab(base, shared);
  for (size_t j = 0; j < owned.size(); ++j) {
    owned[j] = share_vocab(owned[j], shared);
    assistants[j] = owned[j].get();
  }

  PluginContext pctx;
  pctx.instance = "policy";
  pctx.seed = seed;
  pctx.device = device;
  pctx.num_assistants = static_cast<int64_t>(assistants.size());
  pctx.base_hidden_size = base->info().hidden_size;
  pctx.vocab_size = base->tokenizer().vocab_size();
  std::string policy_toml, plugin = policy_name;
  if (kRules.count(policy_name)) {
    plugin = "rules";
    policy_toml = "rule = " + toml_string(policy_name) + "\n";
    if (policy_name == "random") policy_toml += "p = " + std::to_string(rule_p) + "\n";
    if (vm["rule-assistant"].defaulted() == false || assistants.size() > 1)
      policy_toml += "assistant = " + std::to_string(rule_assistant) + "\n";
  } else if (!head.empty()) {
    policy_toml = "head = " + toml_string(head) + "\n";
  }
  const auto policy_config = ConfigView::from_string(policy_toml, "--policy " + policy_name);
  auto policy = reg.create_policy(plugin, policy_config, pctx);
  policy_config.check_all_read();
  if (!head.empty() && plugin == "rules") return usage_error("--head is for trained policies, not rule " + policy_name);

  const auto results = collaborative_decode(*base, assistants, *policy, prompts, {}, o);
  const bool colour = isatty(STDOUT_FILENO);
  for (const auto& r : results) {
    print_marked(base->tokenizer(), r, assistants.size(), colour);
    const double rate = r.ids.empty() ? 0.0 : static_cast<double>(r.n_deferred) / static_cast<double>(r.ids.size());
    std::cout << "-- deferred " << r.n_deferred << "/" << r.ids.size() << " tokens (" << std::fixed
              << std::setprecision(1) << 100 * rate << "%), stop: " << r.stop_reason << ", " << std::setprecision(2)
              << r.latency_s << " s\n";
    std::cout.unsetf(std::ios::fixed);
  }
  return 0;
}

RegisterCommand reg_generate("generate", "generate text with one model, or collaboratively (base + assistants)",
                             run_generate);

}  // namespace
}  // namespace colm::cli
