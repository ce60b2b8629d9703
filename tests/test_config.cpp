// ConfigView: TOML parsing errors with locations, typed getters, required keys, --set overrides,
// unknown-key reporting with suggestions, sub-views and the canonical form used for content hashes.
#include <catch2/catch.hpp>

#include <fstream>

#include "colm/config.hpp"
#include "support.hpp"

using colm::ConfigError;
using colm::ConfigView;
using Catch::Matchers::Contains;

namespace {

// The message of the ConfigError that fn throws ("" when it throws nothing).
template <typename F>
std::string config_error(F&& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a TOML syntax error reports file, line and column", "[core][config]") {
  const auto msg = config_error([] {
    ConfigView::from_string("[experiment]\nname = \"x\"\nseed = = 3\n", "exp.toml");
  });
  REQUIRE_FALSE(msg.empty());
  CHECK_THAT(msg, Contains("exp.toml:3:"));
}

TEST_CASE("from_file reads a file and names a missing one", "[core][config]") {
  const auto dir = colm::test::temp_dir("colm-config");
  const auto path = dir + "/exp.toml";
  std::ofstream(path) << "[experiment]\nseed = 7\n";
  const auto cfg = ConfigView::from_file(path);
  CHECK(cfg.sub("experiment").get_int("seed", 0, "seed") == 7);
  CHECK(cfg.source() == path);
  CHECK(cfg.sub("experiment").where("seed") == path + ":2:1");

  const auto msg = config_error([&] { ConfigView::from_file(dir + "/nope.toml"); });
  CHECK_THAT(msg, Contains(dir + "/nope.toml"));
  CHECK_THAT(config_error([&] { ConfigView::from_file(dir); }), Contains("is a directory"));
}

TEST_CASE("getters return values, defaults, and accept an int where a float is expected", "[core][config]") {
  const auto cfg = ConfigView::from_string(R"(
lr = 3
ratio = 0.25
name = "gpt2"
on = true
tags = ["a", "b"]
etas = [0.1, 1, 0.5]
sizes = [1, 2, 3]
)", "t.toml");
  CHECK(cfg.get_double("lr", 0.0, "learning rate") == 3.0);
  CHECK(cfg.get_double("ratio", 0.0, "") == 0.25);
  CHECK(cfg.get_string("name", "", "") == "gpt2");
  CHECK(cfg.get_bool("on", false, "") == true);
  CHECK(cfg.get_strings("tags", {}, "") == std::vector<std::string>{"a", "b"});
  CHECK(cfg.get_doubles("etas", {}, "") == std::vector<double>{0.1, 1.0, 0.5});
  CHECK(cfg.get_ints("sizes", {}, "") == std::vector<int64_t>{1, 2, 3});
  CHECK(cfg.get_int("absent", 42, "") == 42);
  CHECK(cfg.get_doubles("absent_list", {1.5}, "") == std::vector<double>{1.5});
  CHECK_NOTHROW(cfg.check_all_read());

  const auto decl = cfg.declared();
  const auto it = std::find_if(decl.begin(), decl.end(), [](const auto& o) { return o.key == "lr"; });
  REQUIRE(it != decl.end());
  CHECK(it->type == "float");
  CHECK(it->help == "learning rate");
  CHECK(it->default_value == "0");
}

TEST_CASE("a value of the wrong type names the key, its location and both types", "[core][config]") {
  const auto cfg = ConfigView::from_string("[experts.base]\nn_layer = \"two\"\n", "m.toml");
  const auto msg = config_error([&] { cfg.sub("experts").sub("base").get_int("n_layer", 2, "layers"); });
  CHECK(msg == "m.toml:2:1: key 'experts.base.n_layer' must be an integer, got string");

  const auto cfg2 = ConfigView::from_string("x = 1.5\nl = [1, \"a\"]\n", "n.toml");
  CHECK_THAT(config_error([&] { cfg2.get_int("x", 0, ""); }), Contains("must be an integer, got float"));
  CHECK_THAT(config_error([&] { cfg2.get_doubles("l", {}, ""); }), Contains("got string at index 1"));
  CHECK_THAT(config_error([&] { cfg2.sub("x"); }), Contains("key 'x' must be a table, got float"));
}

TEST_CASE("a missing required key names the table, its location and the help", "[core][config]") {
  const auto cfg = ConfigView::from_string("[experts]\n\n[experts.base]\nkind = \"transformer\"\n", "e.toml");
  const auto base = cfg.sub("experts").sub("base");
  CHECK(base.require_string("kind", "") == "transformer");
  const auto msg = config_error([&] { base.require_int("n_layer", "number of transformer blocks"); });
  CHECK(msg == "e.toml:3:1: missing required key 'n_layer' in [experts.base] (number of transformer blocks)");
  CHECK_THAT(config_error([&] { cfg.require_double("lr", "step size"); }),
             Contains("missing required key 'lr' in the top-level table (step size)"));
}

TEST_CASE("unknown keys are reported with their location and a suggestion", "[core][config]") {
  const auto cfg = ConfigView::from_string(R"([experiment]
name = "demo"
seeed = 3
colour = "red"

[extra]
a = 1
)", "x.toml");
  const auto exp = cfg.sub("experiment");
  exp.get_string("name", "", "");
  exp.get_int("seed", 0, "random seed");
  const auto msg = config_error([&] { cfg.check_all_read(); });
  CHECK_THAT(msg, Contains("x.toml:3:1: unknown key 'experiment.seeed'; did you mean 'seed'?"));
  CHECK_THAT(msg, Contains("x.toml:4:1: unknown key 'experiment.colour'\n"));
  CHECK_THAT(msg, Contains("x.toml:6:1: unknown key 'extra'"));
  CHECK_THAT(msg, !Contains("extra.a"));  // an unknown table is one line, not one per key

  // A view only checks what lies under it; mark_read silences a whole subtree.
  CHECK_THAT(config_error([&] { exp.check_all_read(); }), Contains("seeed"));
  CHECK_THAT(config_error([&] { exp.check_all_read(); }), !Contains("extra"));
  exp.mark_read("seeed");
  exp.mark_read("colour");
  cfg.mark_read("extra");
  CHECK_NOTHROW(cfg.check_all_read());
}

TEST_CASE("sub-views share read tracking and check nested tables", "[core][config]") {
  const auto cfg = ConfigView::from_string(R"([experts.base]
n_layer = 2
d_model = 64
[experts.helper]
n_layer = 4
)", "n.toml");
  CHECK(cfg.keys() == std::vector<std::string>{"experts"});
  const auto experts = cfg.sub("experts");
  CHECK(experts.keys() == std::vector<std::string>{"base", "helper"});
  CHECK(experts.is_table("base"));
  CHECK(experts.path() == "experts");
  {
    const ConfigView copy = experts.sub("base");  // a copy reads into the same tracking state
    CHECK(copy.get_int("n_layer", 0, "") == 2);
    CHECK(copy.path() == "experts.base");
  }
  const auto msg = config_error([&] { cfg.check_all_read(); });
  CHECK_THAT(msg, Contains("n.toml:3:1: unknown key 'experts.base.d_model'"));
  CHECK_THAT(msg, Contains("n.toml:4:1: unknown key 'experts.helper'"));  // never opened at all
  CHECK_THAT(msg, !Contains("'experts.base.n_layer'"));

  experts.sub("base").get_int("d_model", 0, "");
  experts.sub("helper").get_int("n_layer", 0, "");
  CHECK_NOTHROW(cfg.check_all_read());
  CHECK(experts.sub("absent").empty());
  CHECK(experts.sub("absent").get_int("x", 5, "") == 5);
}

TEST_CASE("overrides given with --set change existing, new and nested keys with TOML types", "[core][config]") {
  auto cfg = ConfigView::from_string("[experiment]\nseed = 1\nname = \"a\"\n", "o.toml");
  cfg.apply_override("experiment.seed=5");          // existing key, integer
  cfg.apply_override("experiment.name = b");        // bare word -> string
  cfg.apply_override("sweep.eta=[0.1, 0.2]");       // new table and array
  cfg.apply_override("a.b.c.d=true");               // nested new tables
  cfg.apply_override("experiment.lr=1e-3");         // float
  cfg.apply_override("experiment.tag=\"x y\"");     // quoted string
  const auto exp = cfg.sub("experiment");
  CHECK(exp.get_int("seed", 0, "") == 5);
  CHECK(exp.get_string("name", "", "") == "b");
  CHECK(exp.get_double("lr", 0, "") == Approx(1e-3));
  CHECK(exp.get_string("tag", "", "") == "x y");
  CHECK(cfg.sub("sweep").get_doubles("eta", {}, "") == std::vector<double>{0.1, 0.2});
  CHECK(cfg.sub("a").sub("b").sub("c").get_bool("d", false, "") == true);
  CHECK(exp.where("seed") == "--set experiment.seed");
  CHECK(cfg.where("a.b") == "--set a.b.c.d");

  // A wrong type from the command line says where it came from.
  cfg.apply_override("experiment.steps=many");
  CHECK(config_error([&] { exp.get_int("steps", 0, ""); }) ==
        "--set experiment.steps: key 'experiment.steps' must be an integer, got string");
  // Overrides are part of the document.
  CHECK_THAT(cfg.to_toml(), Contains("seed = 5"));

  CHECK_THAT(config_error([&] { cfg.apply_override("noequals"); }), Contains("expected KEY=VALUE"));
  CHECK_THAT(config_error([&] { cfg.apply_override("a..b=1"); }), Contains("expected KEY=VALUE"));
  CHECK_THAT(config_error([&] { cfg.apply_override("=1"); }), Contains("expected KEY=VALUE"));
  CHECK_THAT(config_error([&] { cfg.apply_override("experiment.seed.x=1"); }),
             Contains("'experiment.seed' is not a table (it is integer, at --set experiment.seed)"));
}

TEST_CASE("canonical() is stable under key order and number spelling", "[core][config]") {
  const auto a = ConfigView::from_string("b = 1\na = { y = 2.0, x = \"s\" }\nl = [1.5, 2]\n", "a.toml");
  const auto b = ConfigView::from_string("l = [1.5, 2.0]\nb = 1.0\n[a]\nx = \"s\"\ny = 2\n\n", "b.toml");
  CHECK(a.canonical() == b.canonical());
  CHECK(a.canonical() == R"({"a":{"x":"s","y":2},"b":1,"l":[1.5,2]})");
  CHECK(a.sub("a").canonical() == R"({"x":"s","y":2})");
  const auto c = ConfigView::from_string("b = 2\na = { y = 2.0, x = \"s\" }\nl = [1.5, 2]\n", "c.toml");
  CHECK(a.canonical() != c.canonical());
  // An override changes the canonical form exactly as editing the file would.
  auto d = ConfigView::from_string("b = 2\n", "d.toml");
  d.apply_override("b=1");
  CHECK(d.canonical() == R"({"b":1})");
  // The TOML text reads back to the same content.
  CHECK(ConfigView::from_string(a.to_toml(), "again").canonical() == a.canonical());
}

TEST_CASE("scalar-or-list getters accept both forms", "[core][config]") {
  const auto cfg = ConfigView::from_string(R"(
eta = 0.5
etas = [0.1, 0.9]
policy = "learned"
policies = ["learned", "random"]
bad = [true]
)", "s.toml");
  CHECK(cfg.get_double_or_list("eta", {}, "") == std::vector<double>{0.5});
  CHECK(cfg.get_double_or_list("etas", {}, "") == std::vector<double>{0.1, 0.9});
  CHECK(cfg.get_double_or_list("none", {0.3}, "") == std::vector<double>{0.3});
  CHECK(cfg.get_string_or_list("policy", {}, "") == std::vector<std::string>{"learned"});
  CHECK(cfg.get_string_or_list("policies", {}, "") == std::vector<std::string>{"learned", "random"});
  CHECK_THAT(config_error([&] { cfg.get_string_or_list("bad", {}, ""); }),
             Contains("must be a string or an array of strings, got boolean at index 0"));
  CHECK_THAT(config_error([&] { cfg.get_double_or_list("policy", {}, ""); }),
             Contains("must be a number or an array of numbers, got string"));
}

TEST_CASE("an empty view returns defaults and fail() carries the location", "[core][config]") {
  const ConfigView none;
  CHECK(none.empty());
  CHECK(none.get_int("x", 3, "") == 3);
  CHECK_NOTHROW(none.check_all_read());
  const auto cfg = ConfigView::from_string("[t]\nk = 1\n", "f.toml");
  CHECK(config_error([&] { cfg.sub("t").fail("k", "must be positive"); }) == "f.toml:2:1: t.k: must be positive");
}
