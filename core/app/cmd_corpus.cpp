// `colm corpus arithmetic`: writes the arithmetic pretraining text (and its held-out facts as jsonl,
// ready for the `jsonl` task) that experiments/pretrain-experts.toml trains the arithmetic expert on.
#include <filesystem>
#include <fstream>
#include <iostream>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli.hpp"
#include "colm/error.hpp"
#include "method/corpus.hpp"

namespace colm::cli {
namespace {

namespace po = boost::program_options;
namespace fs = std::filesystem;

// Writes next to the target and renames: a killed command never leaves a half-written file.
void write_atomic(const std::string& path, const std::string& content) {
  const fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  const auto tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    COLM_CHECK(f, "cannot write " << tmp);
    f << content;
    f.close();
    COLM_CHECK(f, "cannot write " << tmp);
  }
  fs::rename(tmp, p);
}

int corpus_command(const std::vector<std::string>& args, const GlobalOptions&) {
  ArithmeticCorpusOptions o;
  std::string kind, out, heldout;
  int64_t seed = 0;
  po::options_description desc(
      "usage: colm corpus arithmetic --out FILE [--heldout FILE.jsonl] [options]\n\n"
      "Writes generated pretraining text, one sentence per line: arithmetic facts (+, -, * with the\n"
      "operand ranges of the arithmetic task's computations) in short generic sentences and several\n"
      "surface forms, never in the task's format. A fixed, seed-independent share of the possible facts\n"
      "is kept out of the text; --heldout writes some of them as jsonl ({\"id\", \"prompt\": \"a op b =\",\n"
      "\"answer\": \"c\"}) to measure what a model trained on the text learned. Same options, same files.\n\n"
      "options");
  // clang-format off
  desc.add_options()
    ("help,h", "this help")
    ("kind", po::value(&kind), "corpus kind: arithmetic")
    ("out", po::value(&out), "text file to write (required)")
    ("heldout", po::value(&heldout), "jsonl file of held-out facts to write")
    ("sentences", po::value(&o.sentences)->default_value(o.sentences), "sentences in the text")
    ("seed", po::value(&seed)->default_value(0), "generator seed")
    ("max-operand", po::value(&o.max_operand)->default_value(o.max_operand), "largest operand of + and - (as the arithmetic task's max_operand)")
    ("max-factor", po::value(&o.max_factor)->default_value(o.max_factor), "largest factor of * (as the arithmetic task's max_factor)")
    ("heldout-share", po::value(&o.heldout_share)->default_value(o.heldout_share), "share of the possible facts kept out of the text, in [0, 1)")
    ("heldout-examples", po::value(&o.heldout_examples)->default_value(o.heldout_examples), "held-out facts written to --heldout, at most")
    ("operations", po::value(&o.operations)->default_value(o.operations), "operations stated: any of + - * (as the arithmetic task's operations)")
    ("context-share", po::value(&o.context_share)->default_value(o.context_share), "share of sentences preceded by random common English words, in [0, 1]")
    ("bracket-share", po::value(&o.bracket_share)->default_value(o.bracket_share), "share of facts written inside brackets of a random kind, in [0, 1]");
  // clang-format on
  po::positional_options_description pos;
  pos.add("kind", 1);
  po::variables_map vm;
  if (const auto rc = parse_options("corpus", args, desc, vm, &pos)) return *rc;
  if (kind != "arithmetic") {
    std::cerr << "colm corpus: " << (kind.empty() ? "no corpus kind given" : "unknown corpus kind '" + kind + "'")
              << " (kinds: arithmetic; see colm corpus --help)\n";
    return 2;
  }
  if (out.empty()) {
    std::cerr << "colm corpus: --out is required (see colm corpus --help)\n";
    return 2;
  }
  o.seed = static_cast<uint64_t>(seed);
  try {
    const auto c = make_arithmetic_corpus(o);
    write_atomic(out, c.text);
    if (!heldout.empty()) {
      std::string lines;
      for (size_t i = 0; i < c.heldout.size(); ++i) {
        const auto& f = c.heldout[i];
        lines += nlohmann::json{{"id", "fact-" + std::to_string(i)}, {"prompt", f.expression()},
                                {"answer", std::to_string(f.c)}}.dump() + "\n";
      }
      write_atomic(heldout, lines);
    }
    spdlog::info("[corpus] {}: {} sentences, {} facts, {} bytes{}", out, o.sentences, c.facts_in_text,
                 c.text.size(), heldout.empty() ? "" : "; " + heldout + ": " + std::to_string(c.heldout.size()) +
                                                           " held-out facts");
  } catch (const std::exception& e) {
    std::cerr << "colm corpus: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

const RegisterCommand kRegister("corpus", "generate pretraining text: colm corpus arithmetic --out FILE",
                                corpus_command);

}  // namespace
}  // namespace colm::cli
