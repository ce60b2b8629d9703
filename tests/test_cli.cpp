// CLI tests, run as a child process through tests/support.hpp's run_command: global options (before
// and after the command), exit codes, `colm plugins` (listing, refused files with reasons, --check,
// --json), and `inspect`, `tokenize`, `logits`, `generate` checked against the fixtures' reference
// ids and logits (tests/fixtures).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "colm/api.hpp"
#include "colm/tokenizer.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

// The binary with a clean plugin search path (the caller's COLM_PLUGIN_PATH must not leak in).
std::string colm_cmd(const std::string& args) {
  return "env -u COLM_PLUGIN_PATH '" + colm::test::colm_binary() + "' " + args;
}

std::string test_plugin(const std::string& name) {
  const auto p = colm::test::build_dir() + "/test-plugins/libcolm_" + name + ".so";
  INFO("test plugin " << p << " (built by target colm_test_plugins)");
  REQUIRE(fs::is_regular_file(p));
  return p;
}

// stdout only: logs go to stderr, so JSON output parses.
nlohmann::json run_json(const std::string& args, int expected_rc) {
  std::string out;
  // run_command appends 2>&1; the subshell keeps stderr out of what it captures.
  const int rc = colm::test::run_command("(" + colm_cmd(args) + " 2>/dev/null)", &out);
  INFO("colm " << args << "\n" << out);
  REQUIRE(rc == expected_rc);
  return nlohmann::json::parse(out);
}

std::vector<std::string> builtin_plugin_files() {
  std::vector<std::string> files;
  if (!fs::is_directory(colm::test::plugin_dir())) return files;
  for (const auto& e : fs::directory_iterator(colm::test::plugin_dir())) {
    const auto n = e.path().filename().string();
    if (n.rfind("lib", 0) == 0 && e.path().extension() == ".so") files.push_back(e.path().string());
  }
  return files;
}

}  // namespace

TEST_CASE("colm --help lists the commands and --version the build", "[cli]") {
  std::string out;
  REQUIRE(colm::test::run_command(colm_cmd("--help"), &out) == 0);
  CHECK_THAT(out, Contains("usage: colm"));
  CHECK_THAT(out, Contains("commands:"));
  CHECK_THAT(out, Contains("plugins"));
  REQUIRE(colm::test::run_command(colm_cmd("--version"), &out) == 0);
  CHECK_THAT(out, Contains("plugin API " + std::to_string(COLM_API_VERSION)));
  CHECK_THAT(out, Contains(std::string("torch ") + colm::core_build_info().torch_version));
}

TEST_CASE("unknown commands and options exit with status 2", "[cli]") {
  std::string out;
  CHECK(colm::test::run_command(colm_cmd("no-such-command"), &out) == 2);
  CHECK_THAT(out, Contains("unknown command 'no-such-command'"));
  CHECK(colm::test::run_command(colm_cmd("--no-such-option"), &out) == 2);
  CHECK(colm::test::run_command(colm_cmd(""), &out) == 2);  // no command: help, and a failure status
  CHECK(colm::test::run_command(colm_cmd("plugins --no-such-option"), &out) == 2);
  CHECK_THAT(out, Contains("colm plugins"));
}

TEST_CASE("colm plugins lists every built-in plugin file", "[cli][plugins]") {
  const auto files = builtin_plugin_files();
  std::string out;
  REQUIRE(colm::test::run_command(colm_cmd("plugins"), &out) == 0);
  CHECK_THAT(out, Contains("loaded ("));
  CHECK_THAT(out, Contains("refused ("));
  // The binary names files by its canonical location (/proc/self/exe), so compare canonical paths.
  for (const auto& f : files) CHECK_THAT(out, Contains(fs::weakly_canonical(f).string()));

  const auto j = run_json("plugins --json", 0);
  REQUIRE(j["loaded"].is_array());
  REQUIRE(j["refused"].is_array());
  std::set<std::string> seen;
  for (const auto& p : j["loaded"]) {
    seen.insert(fs::weakly_canonical(p["path"].get<std::string>()).string());
    CHECK_FALSE(p["name"].get<std::string>().empty());
    CHECK((p["kind"] == "expert" || p["kind"] == "policy" || p["kind"] == "task"));
  }
  for (const auto& p : j["refused"]) {
    seen.insert(fs::weakly_canonical(p["path"].get<std::string>()).string());
    CHECK_FALSE(p["reason"].get<std::string>().empty());
  }
  for (const auto& f : files) CHECK(seen.count(fs::weakly_canonical(f).string()) == 1);
  CHECK(j["loaded"].size() + j["refused"].size() >= files.size());
}

TEST_CASE("a corrupt library in --plugin-dir is refused with a reason while the others load", "[cli][plugins]") {
  const auto dir = colm::test::temp_dir("colm-cli");
  const auto good = test_plugin("test_good_task");
  fs::copy_file(good, dir + "/libcolm_good.so");
  // The first 4 KiB of a real plugin: a valid ELF header with its sections cut off.
  {
    std::ifstream in(good, std::ios::binary);
    std::string head(4096, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(dir + "/libcolm_corrupt.so", std::ios::binary).write(head.data(), in.gcount());
  }
  const auto j = run_json("--plugin-dir '" + dir + "' plugins --json", 0);
  bool good_loaded = false;
  for (const auto& p : j["loaded"]) {
    if (p["path"] == dir + "/libcolm_good.so") {
      good_loaded = true;
      CHECK(p["name"] == "test_task");
      CHECK(p["kind"] == "task");
      CHECK(p["version"] == "1.0");
    }
  }
  CHECK(good_loaded);
  bool corrupt_refused = false;
  for (const auto& p : j["refused"]) {
    if (p["path"] == dir + "/libcolm_corrupt.so") {
      corrupt_refused = true;
      CHECK_THAT(p["reason"].get<std::string>(), Contains("not a loadable shared library: truncated ELF file"));
    }
  }
  CHECK(corrupt_refused);
  CHECK(std::find(j["dirs"].begin(), j["dirs"].end(), dir) != j["dirs"].end());

  // The text listing says the same, with the reason on the refused file's line.
  std::string out;
  REQUIRE(colm::test::run_command(colm_cmd("--plugin-dir '" + dir + "' plugins"), &out) == 0);
  CHECK_THAT(out, Contains(dir + "/libcolm_corrupt.so: not a loadable shared library"));
  CHECK_THAT(out, Contains(dir + "/libcolm_good.so"));
}

TEST_CASE("colm plugins --check accepts a good file and explains a refused one", "[cli][plugins]") {
  std::string out;
  const auto good = test_plugin("test_good_task");
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + good + "'"), &out) == 0);
  CHECK_THAT(out, Contains(good + ": accepted"));
  CHECK_THAT(out, Contains("API version"));
  CHECK_THAT(out, Contains("fingerprint"));
  CHECK_THAT(out, Contains("factory"));
  CHECK_THAT(out, Contains("not checked"));

  const auto bad_api = test_plugin("test_bad_api");
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + bad_api + "'"), &out) == 1);
  CHECK_THAT(out, Contains("refused: incompatible API version (plugin 999, core " + std::to_string(COLM_API_VERSION) + ")"));

  const auto no_factory = test_plugin("test_no_factory");
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + no_factory + "'"), &out) == 1);
  CHECK_THAT(out, Contains("missing colm_plugin_factory"));

  const auto j = run_json("plugins --check '" + test_plugin("test_bad_fingerprint") + "' --json", 1);
  CHECK(j["accepted"] == false);
  CHECK_THAT(j["reason"].get<std::string>(), Contains("Torch version (plugin 0.0.1-test"));
  CHECK(j["checks"].back()["check"] == "fingerprint");
  CHECK(j["checks"].back()["ok"] == false);
  CHECK(j["plugin"]["name"] == "test_bad_fingerprint");

  const auto jg = run_json("plugins --json --check '" + good + "'", 0);
  CHECK(jg["accepted"] == true);
  CHECK(jg["plugin"]["kind"] == "task");
  CHECK(jg["plugin"]["name"] == "test_task");
  CHECK(jg["core"]["api_version"] == COLM_API_VERSION);

  // --config calls the factory: a throwing one is reported (exit 1), a working one creates its object,
  // and keys the plugin does not read are named.
  const auto cfg_dir = colm::test::temp_dir("colm-cli-check");
  std::ofstream(cfg_dir + "/empty.toml") << "";
  std::ofstream(cfg_dir + "/typo.toml") << "rule = \"confidence\"\nrulez = 1\n";
  std::ofstream(cfg_dir + "/rules.toml") << "rule = \"confidence\"\n";
  REQUIRE(colm::test::run_command(
              colm_cmd("plugins --check '" + test_plugin("test_throwing") + "' --config " + cfg_dir + "/empty.toml"),
              &out) == 1);
  CHECK_THAT(out, Contains("factory         FAILED"));
  CHECK_THAT(out, Contains("deliberate failure in test_throwing"));
  const auto rules = colm::test::build_dir() + "/plugins/libcolm_policy_rules.so";
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + rules + "' --config " + cfg_dir + "/rules.toml"),
                                  &out) == 0);
  CHECK_THAT(out, Contains("factory         ok      created a policy"));
  REQUIRE(colm::test::run_command(colm_cmd("plugins --check '" + rules + "' --config " + cfg_dir + "/typo.toml"),
                                  &out) == 1);
  CHECK_THAT(out, Contains("rulez"));
  REQUIRE(colm::test::run_command(colm_cmd("plugins --config " + cfg_dir + "/rules.toml"), &out) == 2);

  REQUIRE(colm::test::run_command(colm_cmd("plugins --check /nonexistent/libcolm_x.so"), &out) == 1);
  CHECK_THAT(out, Contains("no such file"));
  REQUIRE(colm::test::run_command(colm_cmd("plugins --help"), &out) == 0);
  CHECK_THAT(out, Contains("--check"));
}

// ------------------------------------------------------------------ global options after the command

TEST_CASE("global options are accepted after the command too", "[cli][plugins]") {
  const auto dir = colm::test::temp_dir("colm-cli-global");
  fs::copy_file(test_plugin("test_good_task"), dir + "/libcolm_good.so");
  auto loaded_from_dir = [&](const nlohmann::json& j) {
    for (const auto& p : j["loaded"])
      if (p["path"] == dir + "/libcolm_good.so") return true;
    return false;
  };
  CHECK_FALSE(loaded_from_dir(run_json("plugins --json", 0)));
  CHECK(loaded_from_dir(run_json("plugins --plugin-dir '" + dir + "' --json", 0)));
  CHECK(loaded_from_dir(run_json("plugins --json --plugin-dir='" + dir + "'", 0)));
  CHECK(loaded_from_dir(run_json("--log-level warn plugins --log-level=error --json --plugin-dir '" + dir + "'", 0)));

  // --log-level after the command takes effect: debug lines appear, and off silences the info ones.
  std::string out;
  REQUIRE(colm::test::run_command(colm_cmd("plugins --log-level debug"), &out) == 0);
  const bool debug_seen = out.find("[debug]") != std::string::npos || out.find("debug") != std::string::npos;
  CHECK(debug_seen);
  REQUIRE(colm::test::run_command(colm_cmd("plugins --log-level bogus"), &out) == 2);
  CHECK_THAT(out, Contains("bogus"));
  REQUIRE(colm::test::run_command(colm_cmd("plugins --plugin-dir"), &out) == 2);
  CHECK_THAT(out, Contains("--plugin-dir needs a value"));
  // Command options still reach the command.
  REQUIRE(colm::test::run_command(colm_cmd("plugins --log-level warn --no-such-option"), &out) == 2);
  CHECK_THAT(out, Contains("colm plugins"));
}

// ------------------------------------------------------------------ inspect, tokenize, logits, generate

namespace {

// A shell word holding s exactly (single quotes; a quote inside becomes '\'').
std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in);
  return nlohmann::json::parse(in);
}

// stdout of a command that must succeed (stderr, where the logs go, is dropped).
std::string run_stdout(const std::string& args) {
  std::string out;
  const int rc = colm::test::run_command("(" + colm_cmd(args) + " 2>/dev/null)", &out);
  INFO("colm " << args << "\n" << out);
  REQUIRE(rc == 0);
  return out;
}

std::string join_ids(const std::vector<int64_t>& ids) {
  std::string s;
  for (auto id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return s;
}

// stories260k with a tokenizer.json: the model's own 512-piece tokenizer is not available, so this is
// Mistral's tokenizer cut to its first 512 ids (<unk> <s> </s>, the 256 byte pieces, 253 merges) -
// the same SentencePiece-BPE pipeline, so `generate` can take a text prompt and print text. The ids
// are what the test checks (llama2.c's greedy path); the text is their decoding with this tokenizer.
std::string stories_with_tokenizer() {
  const auto src = colm::test::fixture("models/stories260k");
  const auto dir = colm::test::temp_dir("colm-cli-stories") + "/stories260k";
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"}) fs::create_symlink(fs::absolute(src + "/" + f), dir + "/" + f);
  auto tok = read_json_file(colm::test::fixture("tokenizers/mistral/tokenizer.json"));
  nlohmann::json vocab = nlohmann::json::object();
  for (const auto& [piece, id] : tok["model"]["vocab"].items())
    if (id.get<int64_t>() < 512) vocab[piece] = id;
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& m : tok["model"]["merges"]) {
    const auto s = m.get<std::string>();
    const auto sp = s.find(' ');
    const auto a = s.substr(0, sp), b = s.substr(sp + 1);
    if (vocab.contains(a) && vocab.contains(b) && vocab.contains(a + b)) merges.push_back(m);
  }
  tok["model"]["vocab"] = vocab;
  tok["model"]["merges"] = merges;
  std::ofstream(dir + "/tokenizer.json") << tok.dump();
  return dir;
}

}  // namespace

TEST_CASE("colm inspect describes a checkpoint as its files say", "[cli][model]") {
  const std::string name = GENERATE(as<std::string>{}, "gpt2-tiny", "llama-tiny-gqa", "llama-tiny-gqa-bf16-sharded");
  const auto dir = colm::test::fixture("models/" + name);
  const auto config = read_json_file(dir + "/config.json");
  const auto j = nlohmann::json::parse(run_stdout("inspect " + sh_quote(dir) + " --json"));
  INFO(j.dump(2));
  CHECK(j["family"] == (name == "gpt2-tiny" ? "gpt2" : "llama"));
  CHECK(j["model_type"] == config["model_type"]);
  CHECK(j["vocab_size"] == config["vocab_size"]);
  CHECK(j["hidden_size"] == (name == "gpt2-tiny" ? config["n_embd"] : config["hidden_size"]));
  CHECK(j["dtype"] == "float32");
  CHECK(j["stored_dtype"] == (name == "llama-tiny-gqa-bf16-sharded" ? "bfloat16" : "float32"));
  CHECK(j["tokenizer"].is_null());  // the model fixtures ship no tokenizer.json
  // Parameters: GPT-2 2 layers d 64 ffn 256, vocab 1000, 64 positions, tied head; the Llama
  // fixtures: 2 layers d 64, q 8 x 8, kv 4 x 8, ffn 172, vocab 512, untied head.
  const int64_t gpt2 = 1000 * 64 + 64 * 64 + 2 * (2 * 64 + 64 * 192 + 192 + 64 * 64 + 64 + 2 * 64 + 64 * 256 + 256 +
                                                    256 * 64 + 64) + 2 * 64;
  const int64_t llama = 512 * 64 * 2 + 2 * (64 + 64 * 64 + 2 * 64 * 32 + 64 * 64 + 64 + 3 * 64 * 172) + 64;
  CHECK(j["parameters"] == (name == "gpt2-tiny" ? gpt2 : llama));
  // The text form says the same.
  const auto text = run_stdout("inspect " + sh_quote(dir));
  CHECK_THAT(text, Contains("parameters     " + std::to_string(name == "gpt2-tiny" ? gpt2 : llama)));
  CHECK_THAT(text, Contains("tokenizer      none"));
}

TEST_CASE("colm inspect names a shipped checkpoint's tokenizer and special tokens", "[cli][model]") {
  const auto dir = colm::test::source_dir() + "/experiments/checkpoints/arithmetic";
  const auto tok = colm::Tokenizer::from_file(dir + "/tokenizer.json");
  const auto j = nlohmann::json::parse(run_stdout("inspect " + sh_quote(dir) + " --json"));
  INFO(j.dump(2));
  CHECK(j["tokenizer"]["fingerprint"] == tok.fingerprint());
  CHECK(j["tokenizer"]["vocab_size"] == tok.vocab_size());
  CHECK(j["bos_id"] == (tok.bos_id() ? nlohmann::json(*tok.bos_id()) : nlohmann::json(nullptr)));
  CHECK(j["eos_id"] == (tok.eos_id() ? nlohmann::json(*tok.eos_id()) : nlohmann::json(nullptr)));
}

TEST_CASE("colm tokenize prints the fixture tokenizers' reference ids", "[cli][model][tokenizer]") {
  const std::string name = GENERATE(as<std::string>{}, "gpt2", "mistral", "qwen3");
  const auto dir = colm::test::fixture("tokenizers/" + name);
  std::vector<nlohmann::json> cases;
  {
    std::ifstream in(dir + "/cases.jsonl");
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) cases.push_back(nlohmann::json::parse(line));
  }
  REQUIRE(cases.size() == 60);
  // A few cases of different kinds (prose, arithmetic, accents, CJK, special tokens written out),
  // each a process that loads the tokenizer: the in-process test checks all 60.
  int checked = 0;
  for (const auto& c : cases) {
    const auto text = c["text"].get<std::string>();
    if (text.empty() || text.find('\0') != std::string::npos) continue;
    const bool wanted = text.find("<<48/2=24>>") != std::string::npos || text.find("Hello") == 0 ||
                        text.find("caf") != std::string::npos || text.find("<|endoftext|>") != std::string::npos ||
                        text.find("\xE4\xBD\xA0") != std::string::npos;  // 你
    if (!wanted) continue;
    INFO(name << " text " << nlohmann::json(text).dump());
    const auto ids = nlohmann::json::parse(run_stdout("tokenize " + sh_quote(dir) + " --text " + sh_quote(text)));
    CHECK(ids == c["ids"]);
    ++checked;
  }
  CHECK(checked >= 4);
  // --tokens: the vocabulary strings; a tokenizer.json file works as well as its folder.
  const auto& c0 = cases[1];
  const auto j = nlohmann::json::parse(
      run_stdout("tokenize " + sh_quote(dir + "/tokenizer.json") + " --tokens --text " + sh_quote(c0["text"].get<std::string>())));
  CHECK(j["ids"] == c0["ids"]);
  CHECK(j["tokens"] == c0["tokens"]);
  if (name == "mistral") {  // the post-processor's <s> only with --add-special-tokens
    const auto with = nlohmann::json::parse(run_stdout("tokenize " + sh_quote(dir) + " --add-special-tokens --text 'Hello world'"));
    CHECK(with == nlohmann::json::array({1, 22557, 1526}));
  }
}

TEST_CASE("colm logits reproduces the reference logits of every model fixture", "[cli][model]") {
  const std::string name = GENERATE(as<std::string>{}, "gpt2-tiny", "llama-tiny-gqa", "llama-tiny-gqa-bf16-sharded", "stories260k");
  const auto dir = colm::test::fixture("models/" + name);
  const auto expected = read_json_file(dir + "/expected.json");
  const auto ids = expected["input_ids"].get<std::vector<int64_t>>();
  const auto j = nlohmann::json::parse(run_stdout("logits " + sh_quote(dir) + " --all-positions --ids " + sh_quote(join_ids(ids))));
  const auto logits = j["logits"].get<std::vector<double>>();
  const auto ref = expected["logits_last"].get<std::vector<double>>();
  REQUIRE(logits.size() == ref.size());
  double worst = 0;
  for (size_t v = 0; v < ref.size(); ++v) worst = std::max(worst, std::abs(logits[v] - ref[v]));
  INFO(name << ": max |diff| " << worst);
  CHECK(worst <= expected["tolerance_abs"].get<double>());
  CHECK(j["argmax_all"] == expected["argmax_all"]);
  CHECK(j["argmax"] == expected["argmax_all"].back());
  // Commas work as separators; a bad id is an error.
  const auto k = nlohmann::json::parse(run_stdout("logits " + sh_quote(dir) + " --ids 1,2,3"));
  CHECK(k["logits"].size() == ref.size());
  std::string out;
  CHECK(colm::test::run_command(colm_cmd("logits " + sh_quote(dir) + " --ids '1 x'"), &out) == 1);
  CHECK_THAT(out, Contains("'x' is not an integer token id"));
}

TEST_CASE("colm generate reproduces stories260k's reference greedy continuation", "[cli][generate]") {
  const auto dir = stories_with_tokenizer();
  const auto ref = read_json_file(colm::test::fixture("models/stories260k/expected.json"))["input_ids"].get<std::vector<int64_t>>();
  REQUIRE(ref.front() == 1);
  const auto tok = colm::Tokenizer::from_file(dir + "/tokenizer.json");
  REQUIRE(tok.encode("", true) == std::vector<int64_t>{1});  // an empty prompt is BOS alone, as in the reference
  const std::vector<int64_t> continuation(ref.begin() + 1, ref.end());
  const std::string want = tok.decode(continuation);
  REQUIRE_FALSE(want.empty());

  const auto n = std::to_string(continuation.size());
  CHECK(run_stdout("generate " + sh_quote(dir) + " --prompt '' --max-tokens " + n) == want + "\n");
  // max-tokens cuts the same path.
  CHECK(run_stdout("generate " + sh_quote(dir) + " --prompt '' --max-tokens 5") ==
        tok.decode(std::vector<int64_t>(continuation.begin(), continuation.begin() + 5)) + "\n");
  // Collaborative: with the same model as assistant, deferring always or never emits the same text,
  // and the deferral line counts the deferred tokens.
  const auto always = run_stdout("generate --base " + sh_quote(dir) + " --assistant " + sh_quote(dir) +
                                 " --policy assistant_only --prompt '' --max-tokens " + n);
  CHECK_THAT(always, Contains("[" + want + "]"));
  CHECK_THAT(always, Contains("-- deferred " + n + "/" + n + " tokens (100.0%)"));
  const auto never = run_stdout("generate --base " + sh_quote(dir) + " --assistant " + sh_quote(dir) +
                                " --policy base_only --prompt '' --max-tokens " + n);
  CHECK(never.rfind(want + "\n", 0) == 0);
  CHECK_THAT(never, Contains("-- deferred 0/" + n + " tokens (0.0%)"));
  // --dtype bfloat16 loads the f32 checkpoint as bf16 (the log says so) and still generates text.
  std::string log;
  REQUIRE(colm::test::run_command(colm_cmd("--log-level info generate " + sh_quote(dir) +
                                           " --dtype bfloat16 --prompt '' --max-tokens 5"),
                                  &log) == 0);
  CHECK_THAT(log, Contains("bfloat16 on cpu"));
  std::string bad;
  CHECK(colm::test::run_command(colm_cmd("generate " + sh_quote(dir) + " --dtype float8 --prompt ''"), &bad) != 0);
  CHECK_THAT(bad, Contains("unknown dtype 'float8'"));
}

// ------------------------------------------------------------------ every shipped experiment

namespace {

// What a dry run of a shipped experiment may be given beyond the file itself: only stand-ins for
// what the repository cannot ship. gsm8k-llama names two 7B checkpoints: each becomes a folder with
// a Llama-2-7B config.json, a tokenizer.json and a sparse 13 GB model.safetensors (no disk used),
// which the dry run, like for real 7B weights, checks without loading (over its 2 GiB limit), on the
// CPU since the test machine may have no GPU. The pretraining experiments and expert-skill read text
// and a held-out jsonl that `colm corpus` writes (scripts/pretrain-experts.sh): the test writes small
// ones the same way (pretrain-assistants and skill-* too: scripts/pretrain-assistants.sh).
// pretrain-arithmetic-context continues from pretrain-experts' exported
// arithmetic expert, which the shipped experiments/checkpoints/arithmetic stands in for.
std::string dry_run_overrides(const std::string& file, const std::string& tmp) {
  auto corpus = [&](const std::string& extra) {
    std::string out;
    const int rc = colm::test::run_command(colm_cmd("corpus arithmetic --sentences 2000 --seed 1 --out " +
                                                    sh_quote(tmp + "/corpus.txt") + " --heldout " +
                                                    sh_quote(tmp + "/heldout.jsonl") + extra),
                                           &out);
    INFO(out);
    REQUIRE(rc == 0);
  };
  if (file == "pretrain-experts.toml") {
    corpus("");
    return " --set experts.arithmetic.train.data=" + sh_quote(tmp + "/corpus.txt");
  }
  if (file == "pretrain-arithmetic-context.toml") {
    corpus(" --context-share 0.5 --bracket-share 0.3");
    return " --set experts.arithmetic.checkpoint=experiments/checkpoints/arithmetic"
           " --set experts.arithmetic.train.data=" + sh_quote(tmp + "/corpus.txt");
  }
  if (file == "expert-skill.toml" || file == "skill-addition.toml" || file == "skill-subtraction.toml") {
    corpus("");
    return " --set task.test_path=" + sh_quote(tmp + "/heldout.jsonl");
  }
  if (file == "pretrain-assistants.toml") {
    corpus(" --operations + --context-share 0.5 --bracket-share 0.3");
    return " --set experts.adder.train.data=" + sh_quote(tmp + "/corpus.txt") +
           " --set experts.subtractor.train.data=" + sh_quote(tmp + "/corpus.txt");
  }
  if (file == "gsm8k-llama.toml") {
    std::string sets = " --set experiment.device=cpu";
    for (const char* name : {"base", "llemma"}) {
      const auto dir = tmp + "/" + name;
      fs::create_directories(dir);
      std::ofstream(dir + "/config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float16",
  "bos_token_id": 1, "eos_token_id": 2})";
      fs::copy_file(colm::test::fixture("tokenizers/mistral/tokenizer.json"), dir + "/tokenizer.json");
      std::ofstream(dir + "/model.safetensors").close();
      fs::resize_file(dir + "/model.safetensors", 13'476'839'424);
      sets += std::string(" --set experts.") + name + ".checkpoint=" + sh_quote(dir);
    }
    return sets;
  }
  return "";
}

}  // namespace

TEST_CASE("every experiment in experiments/ passes colm run --dry-run", "[cli][experiment]") {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(colm::test::source_dir() + "/experiments"))
    if (e.path().extension() == ".toml") files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 6);
  CHECK(std::find(files.begin(), files.end(), "default.toml") != files.end());
  for (const auto& file : files) {
    const auto tmp = colm::test::temp_dir("colm-dry-run");
    // Results and artifacts go to a temporary folder: a dry run writes nothing, and this proves it.
    const auto cmd = "run experiments/" + file + " --dry-run --set experiment.database=" + sh_quote(tmp + "/r.db") +
                     " --set experiment.artifacts_dir=" + sh_quote(tmp + "/artifacts") + dry_run_overrides(file, tmp);
    std::string out;
    // The working directory is the repository root (CTest's), where the experiments' relative paths point.
    const int rc = colm::test::run_command("cd " + sh_quote(colm::test::source_dir()) + " && " + colm_cmd(cmd), &out);
    INFO("colm " << cmd << "\n" << out);
    CHECK(rc == 0);
    CHECK_THAT(out, Contains("experiment "));
    CHECK_THAT(out, Contains(" runs"));
    CHECK_FALSE(fs::exists(tmp + "/r.db"));
  }
}

TEST_CASE("the thread count follows the CPUs the process may use and says where it came from", "[cli][threads]") {
  // Log lines go to stderr, which run_command captures with stdout.
  auto threads_line = [](const std::string& env_and_prefix) {
    std::string out;
    REQUIRE(colm::test::run_command(env_and_prefix + " " + colm_cmd("--log-level info plugins"), &out) == 0);
    const auto at = out.find("[runtime]");
    REQUIRE(at != std::string::npos);
    return out.substr(at, out.find('\n', at) - at);
  };
  const std::string clean = "env -u COLM_THREADS -u SLURM_CPUS_PER_TASK -u OMP_NUM_THREADS -u OMP_WAIT_POLICY";
  CHECK_THAT(threads_line(clean + " taskset -c 0"),
             Catch::Contains("1 torch thread (from the CPU affinity mask)") &&
                 Catch::Contains("OpenMP wait policy PASSIVE"));
  CHECK_THAT(threads_line(clean + " COLM_THREADS=3 taskset -c 0"), Catch::Contains("3 torch threads (from COLM_THREADS)"));
  // On a one-CPU machine the mask ties with it and is named first.
  CHECK_THAT(threads_line(clean + " SLURM_CPUS_PER_TASK=1"),
             Catch::Contains("1 torch thread (from SLURM_CPUS_PER_TASK)") ||
                 Catch::Contains("1 torch thread (from the CPU affinity mask)"));
  CHECK_THAT(threads_line(clean + " OMP_WAIT_POLICY=ACTIVE"), Catch::Contains("OpenMP wait policy ACTIVE"));
}

TEST_CASE("calibration points, sweep runs and analyses report examples done, tokens/s and ETA", "[cli][progress]") {
  // stderr is a pipe here, not a terminal: each decode ends with a plain log line (and writes one
  // every 10 s while it lasts); the in-place bar is only drawn on a terminal.
  const auto tmp = colm::test::temp_dir("colm-progress");
  std::string out;
  const int rc = colm::test::run_command(
      "cd " + sh_quote(colm::test::source_dir()) + " && " +
          colm_cmd("--log-level info run experiments/tiny-rules.toml --set experiment.database=" +
                   sh_quote(tmp + "/r.db") + " --set experiment.artifacts_dir=" + sh_quote(tmp + "/a")),
      &out);
  INFO(out);
  REQUIRE(rc == 0);
  // A calibration point on the valid split (16 examples) and a sweep run on test (16 examples).
  CHECK_THAT(out, Contains("[policy confidence eta=0.5 valid] examples 16/16"));
  CHECK_THAT(out, Contains(" test] examples 16/16"));
  CHECK_THAT(out, Contains("tok/s  ETA 0s"));
  CHECK(out.find("\r") == std::string::npos);  // no bar redraws in a log
}
