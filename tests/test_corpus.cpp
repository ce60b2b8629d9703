// The generated arithmetic pretraining text: every stated fact is right, held-out facts never appear,
// the same options give the same text, and the command writes both files.
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "method/corpus.hpp"
#include "support.hpp"

namespace {

struct Stated {
  int64_t a, b, c;
  char op;
};

// Every "a op b = c", "a op b=c" and "the sum/difference/product of a and b is c" in the text.
std::vector<Stated> stated_facts(const std::string& text) {
  std::vector<Stated> out;
  static const std::regex sym("(\\d+) ?([-+*]) ?(\\d+) ?= ?(\\d+)");
  static const std::regex words("the (sum|difference|product) of (\\d+) and (\\d+) is (\\d+)");
  for (std::sregex_iterator it(text.begin(), text.end(), sym), end; it != end; ++it) {
    out.push_back({std::stoll((*it)[1]), std::stoll((*it)[3]), std::stoll((*it)[4]), (*it)[2].str()[0]});
  }
  for (std::sregex_iterator it(text.begin(), text.end(), words), end; it != end; ++it) {
    const auto w = (*it)[1].str();
    out.push_back({std::stoll((*it)[2]), std::stoll((*it)[3]), std::stoll((*it)[4]),
                   w == "sum" ? '+' : w == "difference" ? '-' : '*'});
  }
  return out;
}

int64_t apply(char op, int64_t a, int64_t b) { return op == '+' ? a + b : op == '-' ? a - b : a * b; }

}  // namespace

TEST_CASE("the arithmetic corpus states only correct facts, none of them held out", "[corpus]") {
  colm::ArithmeticCorpusOptions o;
  o.sentences = 3000;
  o.seed = 11;
  o.heldout_share = 0.1;
  o.heldout_examples = 200;
  const auto c = colm::make_arithmetic_corpus(o);
  const auto facts = stated_facts(c.text);
  CHECK(int64_t(facts.size()) == c.facts_in_text);
  std::set<char> ops;
  int64_t largest = 0;
  for (const auto& f : facts) {
    INFO(f.a << f.op << f.b << "=" << f.c);
    REQUIRE(apply(f.op, f.a, f.b) == f.c);
    REQUIRE_FALSE(colm::is_heldout_fact(f.op, f.a, f.b, o.heldout_share));
    CHECK(f.c >= 0);
    ops.insert(f.op);
    largest = std::max(largest, f.c);
  }
  CHECK(ops == std::set<char>{'+', '-', '*'});
  CHECK(largest > 150);  // the task's two-step quantities (up to 12*12+50, 26*12) are covered
  CHECK(largest <= 52 * 12);
  // The task's format never appears.
  CHECK(c.text.find("<<") == std::string::npos);
  CHECK(c.text.find("####") == std::string::npos);
  CHECK(c.text.find("Question") == std::string::npos);

  REQUIRE(c.heldout.size() == 200);
  std::set<std::string> distinct;
  for (const auto& f : c.heldout) {
    CHECK(colm::is_heldout_fact(f.op, f.a, f.b, o.heldout_share));
    CHECK(apply(f.op, f.a, f.b) == f.c);
    distinct.insert(f.expression());
  }
  CHECK(distinct.size() == c.heldout.size());
  CHECK(c.heldout.front().expression().back() == '=');
}

TEST_CASE("the corpus is a function of its options", "[corpus]") {
  colm::ArithmeticCorpusOptions o;
  o.sentences = 500;
  o.seed = 3;
  const auto a = colm::make_arithmetic_corpus(o), b = colm::make_arithmetic_corpus(o);
  CHECK(a.text == b.text);
  o.seed = 4;
  CHECK(colm::make_arithmetic_corpus(o).text != a.text);
  // The held-out split does not depend on the seed.
  CHECK(colm::is_heldout_fact('+', 17, 25, 0.05) == colm::is_heldout_fact('+', 17, 25, 0.05));
  o.heldout_share = 1.0;
  CHECK_THROWS_WITH(colm::make_arithmetic_corpus(o), Catch::Contains("heldout_share"));
  o.heldout_share = 0.05;
  o.max_factor = 1;
  CHECK_THROWS_WITH(colm::make_arithmetic_corpus(o), Catch::Contains("max_factor"));
}

TEST_CASE("colm corpus arithmetic writes the text and the held-out jsonl", "[corpus][cli]") {
  const auto dir = colm::test::temp_dir("colm-corpus");
  const auto cmd = colm::test::colm_binary() + " corpus arithmetic --sentences 200 --seed 5 --heldout-examples 20 --out " +
                   dir + "/c.txt --heldout " + dir + "/h.jsonl";
  std::string out;
  REQUIRE(colm::test::run_command(cmd, &out) == 0);
  std::ifstream text(dir + "/c.txt");
  std::stringstream ss;
  ss << text.rdbuf();
  colm::ArithmeticCorpusOptions o;
  o.sentences = 200;
  o.seed = 5;
  o.heldout_examples = 20;
  CHECK(ss.str() == colm::make_arithmetic_corpus(o).text);
  std::ifstream h(dir + "/h.jsonl");
  std::string line;
  int n = 0;
  while (std::getline(h, line)) {
    const auto j = nlohmann::json::parse(line);
    CHECK(j.contains("prompt"));
    CHECK(j.contains("answer"));
    ++n;
  }
  CHECK(n == 20);
  CHECK(colm::test::run_command(colm::test::colm_binary() + " corpus poetry --out " + dir + "/x.txt", &out) == 2);
  CHECK(out.find("unknown corpus kind 'poetry'") != std::string::npos);
}

TEST_CASE("the corpus can be restricted to some operations", "[corpus]") {
  colm::ArithmeticCorpusOptions o;
  o.sentences = 1000;
  o.seed = 2;
  o.operations = "+-";
  const auto c = colm::make_arithmetic_corpus(o);
  std::set<char> ops;
  for (const auto& f : stated_facts(c.text)) {
    ops.insert(f.op);
    CHECK(apply(f.op, f.a, f.b) == f.c);
    CHECK(f.c <= 3 * o.max_operand);  // no products: quantities stay those of sums of sums
  }
  CHECK(ops == std::set<char>{'+', '-'});
  for (const auto& f : c.heldout) CHECK(f.op != '*');
  o.operations = "/";
  CHECK_THROWS_WITH(colm::make_arithmetic_corpus(o), Catch::Contains("operations"));
}

TEST_CASE("generic context and brackets around the facts keep every fact right", "[corpus]") {
  colm::ArithmeticCorpusOptions o;
  o.sentences = 2000;
  o.seed = 9;
  o.context_share = 0.5;
  o.bracket_share = 0.3;
  const auto c = colm::make_arithmetic_corpus(o);
  const auto facts = stated_facts(c.text);
  CHECK(int64_t(facts.size()) == c.facts_in_text);
  for (const auto& f : facts) {
    REQUIRE(apply(f.op, f.a, f.b) == f.c);
    REQUIRE_FALSE(colm::is_heldout_fact(f.op, f.a, f.b, o.heldout_share));
  }
  CHECK(c.text.find(" the ") != std::string::npos);
  CHECK(c.text.find('[') != std::string::npos);
  // Calculator brackets are one of the notations; a worked solution's "#### answer" never appears.
  CHECK(c.text.find("<<") != std::string::npos);
  CHECK(c.text.find("####") == std::string::npos);
  // Without them the text is the original corpus: the options change nothing else.
  colm::ArithmeticCorpusOptions plain;
  plain.sentences = 300;
  plain.seed = 9;
  auto with_zero = plain;
  with_zero.context_share = 0;
  CHECK(colm::make_arithmetic_corpus(plain).text == colm::make_arithmetic_corpus(with_zero).text);
  o.context_share = 2;
  CHECK_THROWS_WITH(colm::make_arithmetic_corpus(o), Catch::Contains("context_share"));
}
