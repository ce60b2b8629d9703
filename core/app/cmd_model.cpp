// `colm inspect`, `colm tokenize`, `colm logits`: look at one Hugging Face checkpoint directory
// through the `transformer` expert plugin (and the core tokenizer) without writing an experiment.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "plugin/registry.hpp"
#include "cli.hpp"
#include "colm/config.hpp"
#include "colm/plugin.hpp"
#include "colm/tokenizer.hpp"

namespace colm::cli {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;

// A TOML basic string holding `s` (paths may contain quotes or backslashes).
std::string toml_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Common options of the three commands: the checkpoint directory (positional) and how to load it.
struct ModelArgs {
  std::string dir, dtype = "float32", device = "cpu";
};

void add_model_options(po::options_description& desc, ModelArgs& m) {
  desc.add_options()("dir", po::value<std::string>(&m.dir), "checkpoint directory (config.json + safetensors [+ tokenizer.json])")(
      "dtype", po::value<std::string>(&m.dtype)->default_value("float32"), "compute dtype: float32 or bfloat16")(
      "device", po::value<std::string>(&m.device)->default_value("cpu"), "cpu, cuda or cuda:N");
}

// Parses args; returns -1 to go on, else the exit code (help printed, or a usage error).
int parse(const std::vector<std::string>& args, const std::string& usage, po::options_description& desc, po::variables_map& vm) {
  desc.add_options()("help,h", "this help");
  po::positional_options_description pos;
  pos.add("dir", 1);
  try {
    po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "colm: " << e.what() << "\n" << usage << "\n" << desc << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << usage << "\n\n" << desc << "\n";
    return 0;
  }
  if (!vm.count("dir")) {
    std::cerr << "colm: missing the checkpoint directory\n" << usage << "\n";
    return 2;
  }
  return -1;
}

std::shared_ptr<Expert> load_expert(const ModelArgs& m, const GlobalOptions& global) {
  Registry registry;
  registry.scan(Registry::default_dirs(global.plugin_dirs, global.argv0));
  PluginContext ctx;
  ctx.instance = "cli";
  ctx.device = m.device;
  const auto toml = "checkpoint = " + toml_string(m.dir) + "\ndtype = " + toml_string(m.dtype) + "\ndevice = " +
                    toml_string(m.device) + "\n";
  return registry.create_expert("transformer", ConfigView::from_string(toml, "<command line>"), ctx);
}

std::optional<int64_t> special_of(const Tokenizer& tok, std::optional<int64_t> id) { return tok.valid() ? id : std::nullopt; }

int run_inspect(const std::vector<std::string>& args, const GlobalOptions& global) {
  ModelArgs m;
  bool json = false;
  po::options_description desc("options");
  add_model_options(desc, m);
  desc.add_options()("json", po::bool_switch(&json), "print one JSON object");
  po::variables_map vm;
  if (int rc = parse(args, "usage: colm inspect DIR [--json] [--dtype T] [--device D]\n"
                           "Loads a checkpoint and prints its family, size, dtype, vocabulary, special tokens and context.",
                     desc, vm);
      rc >= 0) {
    return rc;
  }
  auto expert = load_expert(m, global);
  const auto info = expert->info();
  const auto& tok = expert->tokenizer();
  nlohmann::json config;
  if (std::ifstream in(fs::path(m.dir) / "config.json"); in) config = nlohmann::json::parse(in, nullptr, false);
  nlohmann::json j;
  j["source"] = info.source;
  j["family"] = info.family;
  j["model_type"] = config.is_object() ? config.value("model_type", info.family) : info.family;
  j["parameters"] = info.num_parameters;
  j["dtype"] = info.dtype;
  j["stored_dtype"] = config.is_object() ? config.value("torch_dtype", std::string("?")) : "?";
  j["hidden_size"] = info.hidden_size;
  j["vocab_size"] = info.vocab_size;
  j["max_positions"] = info.max_positions;
  j["fingerprint"] = expert->fingerprint();
  if (tok.valid()) {
    j["tokenizer"] = {{"kind", tok.kind()}, {"vocab_size", tok.vocab_size()}, {"fingerprint", tok.fingerprint()}};
    auto specials = nlohmann::json::array();
    for (const auto& s : tok.added_tokens()) {
      if (s.special) specials.push_back({{"content", s.content}, {"id", s.id}});
    }
    j["special_tokens"] = specials;
    auto id = [](std::optional<int64_t> v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
    j["bos_id"] = id(special_of(tok, tok.bos_id()));
    j["eos_id"] = id(special_of(tok, tok.eos_id()));
    j["pad_id"] = id(special_of(tok, tok.pad_id()));
  } else {
    j["tokenizer"] = nullptr;
  }
  if (json) {
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << "checkpoint     " << info.source << "\n"
            << "family         " << info.family << " (model_type " << j["model_type"].get<std::string>() << ")\n"
            << "parameters     " << info.num_parameters << "\n"
            << "dtype          " << info.dtype << " (stored " << j["stored_dtype"].get<std::string>() << ")\n"
            << "hidden size    " << info.hidden_size << "\n"
            << "vocab size     " << info.vocab_size << " (output rows)\n"
            << "max positions  " << info.max_positions << "\n";
  if (tok.valid()) {
    std::cout << "tokenizer      " << tok.kind() << ", " << tok.vocab_size() << " ids\n";
    auto show = [&](const char* what, std::optional<int64_t> id) {
      std::cout << what << (id ? std::to_string(*id) + " " + nlohmann::json(tok.id_to_token(*id)).dump() : "none") << "\n";
    };
    show("bos            ", tok.bos_id());
    show("eos            ", tok.eos_id());
    show("pad            ", tok.pad_id());
    std::cout << "special tokens " << j["special_tokens"].size() << "\n";
    for (const auto& s : j["special_tokens"]) std::cout << "  " << s["id"] << " " << s["content"].dump() << "\n";
  } else {
    std::cout << "tokenizer      none (no tokenizer.json: ids only)\n";
  }
  std::cout << "fingerprint    " << j["fingerprint"].get<std::string>() << "\n";
  return 0;
}

int run_tokenize(const std::vector<std::string>& args, const GlobalOptions&) {
  ModelArgs m;
  std::string text;
  bool add_special = false, show_tokens = false;
  po::options_description desc("options");
  desc.add_options()("dir", po::value<std::string>(&m.dir), "checkpoint directory with tokenizer.json, or a tokenizer.json file")(
      "text", po::value<std::string>(&text), "text to encode (required)")(
      "add-special-tokens", po::bool_switch(&add_special), "add what the post-processor adds (e.g. Llama's <s>)")(
      "tokens", po::bool_switch(&show_tokens), "print {\"ids\": [...], \"tokens\": [...]} instead of the bare id array");
  po::variables_map vm;
  if (int rc = parse(args, "usage: colm tokenize DIR --text \"...\" [--add-special-tokens] [--tokens]\n"
                           "Prints the token ids of the text as a JSON array.",
                     desc, vm);
      rc >= 0) {
    return rc;
  }
  if (!vm.count("text")) {
    std::cerr << "colm tokenize: --text is required\n";
    return 2;
  }
  const auto path = fs::is_directory(m.dir) ? (fs::path(m.dir) / "tokenizer.json").string() : m.dir;
  if (!fs::exists(path)) throw Error("no tokenizer at '" + path + "' (this checkpoint ships no tokenizer.json)");
  const auto tok = Tokenizer::from_file(path);
  const auto ids = tok.encode(text, add_special);
  if (show_tokens) {
    nlohmann::json j;
    j["ids"] = ids;
    j["tokens"] = nlohmann::json::array();
    for (auto id : ids) j["tokens"].push_back(tok.id_to_token(id));
    std::cout << j.dump() << "\n";
  } else {
    std::cout << nlohmann::json(ids).dump() << "\n";
  }
  return 0;
}

int run_logits(const std::vector<std::string>& args, const GlobalOptions& global) {
  ModelArgs m;
  std::string ids_text, text;
  bool add_special = false, all = false;
  po::options_description desc("options");
  add_model_options(desc, m);
  desc.add_options()("ids", po::value<std::string>(&ids_text), "token ids separated by spaces or commas, e.g. \"1 2 3\"")(
      "text", po::value<std::string>(&text), "text to encode with the checkpoint's tokenizer instead of --ids")(
      "add-special-tokens", po::bool_switch(&add_special), "with --text: add BOS etc. as the tokenizer says")(
      "all-positions", po::bool_switch(&all), "also print \"argmax_all\": the argmax at every position");
  po::variables_map vm;
  if (int rc = parse(args, "usage: colm logits DIR (--ids \"1 2 3\" | --text \"...\") [--all-positions]\n"
                           "Prints {\"logits\": [...last position...], \"argmax\": n} as JSON.",
                     desc, vm);
      rc >= 0) {
    return rc;
  }
  if (vm.count("ids") == vm.count("text")) {
    std::cerr << "colm logits: give exactly one of --ids and --text\n";
    return 2;
  }
  auto expert = load_expert(m, global);
  std::vector<int64_t> ids;
  if (vm.count("ids")) {
    std::string s = ids_text;
    for (auto& c : s) if (c == ',') c = ' ';
    std::istringstream in(s);
    std::string word;
    while (in >> word) {
      size_t used = 0;
      int64_t v = 0;
      try {
        v = std::stoll(word, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != word.size()) throw Error("--ids: '" + word + "' is not an integer token id");
      ids.push_back(v);
    }
  } else {
    if (!expert->tokenizer().valid()) throw Error(m.dir + " has no tokenizer.json: use --ids");
    ids = expert->tokenizer().encode(text, add_special);
  }
  if (ids.empty()) throw Error("no tokens to run (empty --ids or --text)");
  torch::NoGradGuard no_grad;
  auto out = expert->forward(torch::tensor(ids, torch::kLong).view({1, static_cast<int64_t>(ids.size())}), torch::Tensor());
  auto last = out.logits[0][-1].contiguous();
  nlohmann::json j;
  j["logits"] = std::vector<float>(last.data_ptr<float>(), last.data_ptr<float>() + last.numel());
  j["argmax"] = last.argmax().item<int64_t>();
  if (all) {
    auto am = out.logits[0].argmax(-1).contiguous();
    j["argmax_all"] = std::vector<int64_t>(am.data_ptr<int64_t>(), am.data_ptr<int64_t>() + am.numel());
  }
  std::cout << j.dump() << "\n";
  return 0;
}

const RegisterCommand kInspect("inspect", "describe a checkpoint: family, parameters, dtype, vocabulary, special tokens",
                               run_inspect);
const RegisterCommand kTokenize("tokenize", "encode text with a checkpoint's tokenizer (JSON ids)", run_tokenize);
const RegisterCommand kLogits("logits", "last-position logits and argmax of a checkpoint for some ids (JSON)", run_logits);

}  // namespace
}  // namespace colm::cli
