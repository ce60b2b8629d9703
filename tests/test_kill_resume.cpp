// Runs scripts/kill-resume-check.sh: `colm run` killed with SIGKILL at 5 random moments and rerun
// each time must end with the same runs, metrics and examples as an uninterrupted run.
#include <catch2/catch.hpp>

#include "support.hpp"

using namespace colm;

TEST_CASE("colm run killed at random moments and rerun equals an uninterrupted run", "[runner][kill]") {
  if (test::run_command("command -v sqlite3 > /dev/null && command -v bc > /dev/null") != 0)
    COLM_SKIP("scripts/kill-resume-check.sh needs the sqlite3 CLI and bc (scripts/setup.sh installs them)");
  std::string out;
  const int rc = test::run_command("bash " + test::source_dir() + "/scripts/kill-resume-check.sh --colm " +
                                       test::colm_binary() + " --kills 5 --seed 4242",
                                   &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("kill-resume-check: ok: 5 kills") != std::string::npos);
  CHECK(out.find("kill 5 at") != std::string::npos);
}
