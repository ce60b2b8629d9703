// Catch2 main for every test executable: sets up logging and Torch threads like the CLI does.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "colm/runtime.hpp"

int main(int argc, char* argv[]) {
  colm::init_runtime("warn", 2);
  return Catch::Session().run(argc, argv);
}
