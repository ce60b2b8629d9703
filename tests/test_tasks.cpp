// Tests of the task plugins: arithmetic determinism, disjoint splits and scoring; GSM8K answer
// parsing and calculation accuracy; PubMedQA and jsonl loading, splits and metrics.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include "plugin/registry.hpp"
#include "support.hpp"
#include "../plugins/tasks/gsm8k/math_answer.hpp"

using namespace colm;

namespace {

std::shared_ptr<Task> make_task(const std::string& plugin, const std::string& toml, uint64_t seed = 0) {
  auto cfg = ConfigView::from_string(toml, "task.toml");
  PluginContext ctx;
  ctx.instance = "task";
  ctx.seed = seed;
  auto t = default_registry().create_task(plugin, cfg, ctx);
  cfg.check_all_read();
  return t;
}

}  // namespace

TEST_CASE("arithmetic: the same seed gives the same problems, another seed others", "[task]") {
  const std::string cfg = "train_size = 50\nvalid_size = 20\ntest_size = 20\nseed = 5\n";
  auto a = make_task("arithmetic", cfg);
  auto b = make_task("arithmetic", cfg);
  auto c = make_task("arithmetic", "train_size = 50\nvalid_size = 20\ntest_size = 20\nseed = 6\n");
  for (const auto& split : {"train", "valid", "test"}) {
    const auto ea = a->examples(split), eb = b->examples(split);
    REQUIRE(ea.size() == eb.size());
    for (size_t i = 0; i < ea.size(); ++i) {
      CHECK(ea[i].prompt == eb[i].prompt);
      CHECK(ea[i].target == eb[i].target);
    }
  }
  CHECK(a->fingerprint() == b->fingerprint());
  CHECK(a->fingerprint() != c->fingerprint());
  CHECK(a->examples("test")[0].prompt != c->examples("test")[0].prompt);
  // A split does not depend on the sizes of the splits drawn after it (test is drawn first).
  auto d = make_task("arithmetic", "train_size = 5\nvalid_size = 20\ntest_size = 20\nseed = 5\n");
  CHECK(d->examples("test")[7].prompt == a->examples("test")[7].prompt);
}

TEST_CASE("arithmetic: splits are disjoint and every worked solution is right", "[task]") {
  auto t = make_task("arithmetic", "train_size = 300\nvalid_size = 50\ntest_size = 50\nseed = 1\n");
  std::set<std::string> prompts;
  size_t total = 0, two_step = 0;
  for (const auto& split : t->splits()) {
    for (const auto& e : t->examples(split)) {
      prompts.insert(e.prompt);
      ++total;
      INFO(e.prompt << e.target);
      CHECK(e.prompt.rfind("Question: ", 0) == 0);
      CHECK(e.target.find("#### " + e.reference + "\n\n") != std::string::npos);
      const auto steps = math_answer::calculation_steps(e.target);
      REQUIRE(!steps.empty());
      two_step += steps.size() == 2;
      for (const auto& s : steps) CHECK(s.correct);
      // The reference solution scores 1 on every metric.
      const auto m = t->score(e, e.target);
      CHECK(m.at("accuracy") == 1.0);
      CHECK(m.at("calc_accuracy") == 1.0);
    }
  }
  CHECK(prompts.size() == total);
  CHECK(t->examples("train").size() == 300);
  CHECK(two_step > total / 4);  // two_step_share = 0.5 by default
  CHECK(two_step < total * 3 / 4);
}

TEST_CASE("arithmetic: exact match on the final answer", "[task]") {
  auto t = make_task("arithmetic", "train_size = 1\nvalid_size = 1\ntest_size = 1\noperations = [\"*\"]\ntwo_step_share = 0.0\n");
  const auto e = t->examples("test")[0];
  CHECK(e.target.find('*') != std::string::npos);
  CHECK(t->score(e, " blah\n#### " + e.reference + "\n\n").at("accuracy") == 1.0);
  CHECK(t->score(e, " blah\n#### " + e.reference + "0").at("accuracy") == 0.0);
  CHECK(t->score(e, " the answer is " + e.reference).at("accuracy") == 0.0);  // no "####"
  CHECK(t->score(e, "").count("calc_accuracy") == 0);
  CHECK(t->primary_metric() == "accuracy");
  CHECK_THROWS_WITH(t->examples("dev"), Catch::Contains("unknown split 'dev'"));
}

TEST_CASE("arithmetic: bad settings are errors naming the key", "[task]") {
  CHECK_THROWS_WITH(make_task("arithmetic", "operations = [\"^\"]\n"), Catch::Contains("operations"));
  CHECK_THROWS_WITH(make_task("arithmetic", "two_step_share = 2.0\n"), Catch::Contains("two_step_share"));
  CHECK_THROWS_WITH(make_task("arithmetic", "test_size = -1\n"), Catch::Contains("test_size"));
  CHECK_THROWS_WITH(make_task("arithmetic", "test_sise = 3\n"), Catch::Contains("unknown key 'test_sise'"));
}

TEST_CASE("gsm8k answers: final answer normalisation", "[task][gsm8k]") {
  using math_answer::final_answer;
  using math_answer::normalize_number;
  CHECK(final_answer("so 5 + 5 = 10\n#### 1,080") == "1080");
  CHECK(final_answer("#### $18.00") == "18");
  CHECK(final_answer("#### 18.0 dollars") == "18");
  CHECK(final_answer("#### -5") == "-5");
  CHECK(final_answer("#### 3.50") == "3.5");
  CHECK(final_answer("#### 7.") == "7");
  CHECK(final_answer("#### 1 #### 2") == "2");  // the last marked answer counts
  CHECK(final_answer("the answer is 42") == "");
  CHECK(final_answer("#### none") == "");
  CHECK(normalize_number("007") == "7");
  CHECK(normalize_number("-0.0") == "0");
  CHECK(normalize_number(".5") == "0.5");
}

TEST_CASE("gsm8k answers: calculation steps in annotations and plain text", "[task][gsm8k]") {
  using math_answer::calculation_steps;
  SECTION("annotations are counted once") {
    const auto s = calculation_steps("Natalia sold 48/2 = <<48/2=24>>24 clips.\nShe sold 48+24 = <<48+24=72>>72.\n#### 72");
    REQUIRE(s.size() == 2);
    CHECK(s[0].expression == "48/2");
    CHECK(s[0].correct);
    CHECK(s[1].correct);
  }
  SECTION("plain-text steps, wrong results, chains and separators") {
    const auto s = calculation_steps("He has 3 x 4 = 12 boxes, 12 + 5 = 18 in all, then 2 * (3 + 1) = 8 and 1,000 - 1 = 999.");
    REQUIRE(s.size() == 4);
    CHECK(s[0].correct);
    CHECK_FALSE(s[1].correct);  // 12 + 5 is 17
    CHECK(s[2].correct);
    CHECK(s[3].correct);
  }
  SECTION("decimals are right to the shown precision; bare equalities are not steps") {
    const auto s = calculation_steps("10/3 = 3.33 and 10/3 = 3.5; x = 5; total = 7; 5 / 0 = 0");
    REQUIRE(s.size() == 3);
    CHECK(s[0].correct);
    CHECK_FALSE(s[1].correct);
    CHECK_FALSE(s[2].correct);  // division by zero
  }
  SECTION("a list before the expression is not part of it") {
    const auto s = calculation_steps("I bought 3, 4 + 5 = 9 pens");
    REQUIRE(s.size() == 1);
    CHECK(s[0].expression == "4 + 5");
    CHECK(s[0].correct);
  }
  SECTION("money and multi-operator annotations") {
    const auto s = calculation_steps("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.");
    REQUIRE(s.size() == 2);
    CHECK(s[0].correct);
    CHECK(s[1].correct);
  }
}

TEST_CASE("gsm8k: loads the real files, splits train/valid by seed and scores", "[task][gsm8k]") {
  const auto dir = test::dataset("gsm8k");
  const std::string cfg = "train_path = \"" + dir + "/train.jsonl\"\ntest_path = \"" + dir + "/test.jsonl\"\nseed = 3\n";
  auto t = make_task("gsm8k", cfg);
  CHECK(t->examples("test").size() == 1319);
  CHECK(t->examples("valid").size() == 200);
  CHECK(t->examples("train").size() == 7473 - 200);
  const auto e = t->examples("test")[0];
  CHECK(e.reference == "18");
  CHECK(e.prompt.find("Janet") != std::string::npos);
  const auto m = t->score(e, e.target);
  CHECK(m.at("accuracy") == 1.0);
  CHECK(m.at("calc_accuracy") == 1.0);
  CHECK(m.at("calc_steps") == 2.0);
  const auto wrong = t->score(e, " Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = <<9*2=16>>16.\n#### 16");
  CHECK(wrong.at("accuracy") == 0.0);
  CHECK(wrong.at("calc_accuracy") == Approx(0.5));
  // Every reference solution's final answer parses, and thousands separators are normalised.
  size_t with_comma = 0;
  for (const auto& x : t->examples("test")) {
    CHECK_FALSE(x.reference.empty());
    with_comma += x.target.find("#### ") != std::string::npos &&
                  x.target.substr(x.target.find("#### ")).find(',') != std::string::npos;
    CHECK(t->score(x, x.target).at("accuracy") == 1.0);
  }
  CHECK(with_comma == 14);
  auto same = make_task("gsm8k", cfg);
  CHECK(same->examples("valid")[0].prompt == t->examples("valid")[0].prompt);
  auto other = make_task("gsm8k", "train_path = \"" + dir + "/train.jsonl\"\ntest_path = \"" + dir + "/test.jsonl\"\nseed = 4\n");
  CHECK(other->examples("valid")[0].prompt != t->examples("valid")[0].prompt);
  // Shots are prepended and removed from train.
  auto shots = make_task("gsm8k", cfg + "shots = 2\n");
  CHECK(shots->examples("train").size() == 7473 - 202);
  CHECK(shots->examples("test")[0].prompt.rfind("Question: ", 0) == 0);
  CHECK(shots->examples("test")[0].prompt.find("####") != std::string::npos);
}

TEST_CASE("gsm8k: a missing file is an error naming the key", "[task][gsm8k]") {
  CHECK_THROWS_WITH(make_task("gsm8k", "test_path = \"/nonexistent/test.jsonl\"\n"),
                    Catch::Contains("test_path") && Catch::Contains("cannot open"));
  CHECK_THROWS_WITH(make_task("gsm8k", "train_path = \"/nonexistent/train.jsonl\"\n"),
                    Catch::Contains("train_path") && Catch::Contains("cannot open"));
  CHECK_THROWS_WITH(make_task("gsm8k", "train_path = \"\"\nshots = 1\n"), Catch::Contains("shots"));
}

TEST_CASE("gsm8k and pubmedqa read the repository's datasets/ by default", "[task][gsm8k][pubmedqa]") {
  // The tests run in the repository root (CTest's WORKING_DIRECTORY), as a user runs colm.
  REQUIRE(std::filesystem::exists("datasets/gsm8k/test.jsonl"));
  auto g = make_task("gsm8k", "");
  CHECK(g->examples("test").size() == 1319);
  CHECK(g->examples("valid").size() == 200);
  CHECK(g->examples("train").size() == 7473 - 200);
  CHECK(g->examples("test")[0].reference == "18");
  auto no_train = make_task("gsm8k", "train_path = \"\"\n");
  CHECK(no_train->examples("test").size() == 1319);
  CHECK_THROWS(no_train->examples("train"));

  auto p = make_task("pubmedqa", "");
  CHECK(p->examples("test").size() == 500);  // the official PQA-L test ids
  size_t yes = 0;
  for (const auto& e : p->examples("test")) yes += e.reference == "yes";
  CHECK(yes == 276);
  CHECK(p->examples("valid").size() == 50);
  // A path of one's own gets the seeded split unless test_ids is named too.
  auto own = make_task("pubmedqa", "path = \"datasets/pubmedqa/ori_pqal.json\"\ntest_size = 100\n");
  CHECK(own->examples("test").size() == 100);
}

TEST_CASE("pubmedqa: official test ids, seeded train/valid, yes/no/maybe accuracy", "[task][pubmedqa]") {
  const auto dir = test::dataset("pubmedqa");
  auto t = make_task("pubmedqa", "path = \"" + dir + "/ori_pqal.json\"\ntest_ids = \"" + dir +
                                     "/test_ground_truth.json\"\nvalid_size = 50\nseed = 1\n");
  const auto test = t->examples("test");
  CHECK(test.size() == 500);
  CHECK(t->examples("valid").size() == 50);
  CHECK(t->examples("train").size() == 450);
  size_t yes = 0;
  for (const auto& e : test) yes += e.reference == "yes";
  CHECK(yes == 276);
  const auto e = test[0];
  CHECK(e.prompt.find("Question: ") != std::string::npos);
  CHECK(t->score(e, " " + e.reference + "\n").at("accuracy") == 1.0);
  CHECK(t->score(e, " " + std::string(e.reference == "yes" ? "No." : "Yes,")).at("accuracy") == 0.0);
  CHECK(t->score(e, "Maybe").at("accuracy") == (e.reference == "maybe" ? 1.0 : 0.0));

  auto seeded = make_task("pubmedqa", "path = \"" + dir + "/ori_pqal.json\"\ntest_size = 100\nvalid_size = 10\n");
  CHECK(seeded->examples("test").size() == 100);
  CHECK(seeded->examples("valid").size() == 10);
  CHECK(seeded->examples("train").size() == 890);
}

TEST_CASE("jsonl: fields, seeded splits, exact match and contains", "[task][jsonl]") {
  const auto dir = test::temp_dir("colm-jsonl");
  {
    std::ofstream f(dir + "/data.jsonl");
    for (int i = 0; i < 40; ++i)
      f << "{\"q\": \"capital of " << i << "?\", \"a\": \"City " << i << "\", \"n\": " << i << "}\n";
  }
  auto t = make_task("jsonl", "path = \"" + dir + "/data.jsonl\"\nprompt_field = \"q\"\nanswer_field = \"a\"\n"
                              "prompt_prefix = \"Q: \"\nprompt_suffix = \"\\nA:\"\nvalid_fraction = 0.25\ntest_fraction = 0.25\n"
                              "ignore_case = true\nseed = 2\n");
  CHECK(t->examples("test").size() == 10);
  CHECK(t->examples("valid").size() == 10);
  CHECK(t->examples("train").size() == 20);
  const auto e = t->examples("test")[0];
  CHECK(e.prompt.rfind("Q: capital of ", 0) == 0);
  CHECK(e.target == " " + e.reference + "\n");
  auto m = t->score(e, "  " + e.reference + "\nmore text");
  CHECK(m.at("exact_match") == 1.0);
  m = t->score(e, "It is " + e.reference);
  CHECK(m.at("exact_match") == 0.0);
  CHECK(m.at("contains") == 1.0);
  CHECK(t->score(e, "city " + e.reference.substr(5)).at("exact_match") == 1.0);  // ignore_case

  // Per-split files, numeric fields, and a missing field named with file:line.
  auto per = make_task("jsonl", "test_path = \"" + dir + "/data.jsonl\"\nprompt_field = \"q\"\nanswer_field = \"n\"\n");
  REQUIRE(per->splits() == std::vector<std::string>{"test"});
  CHECK(per->examples("test")[3].reference == "3");
  CHECK_THROWS_WITH(make_task("jsonl", "test_path = \"" + dir + "/data.jsonl\"\nprompt_field = \"question\"\n"),
                    Catch::Contains("data.jsonl:1") && Catch::Contains("no field 'question'"));
}
