// Logging and thread setup: one place, so the CLI, tests and benchmarks behave the same.
#include "colm/runtime.hpp"

#include <cstdlib>
#include <thread>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

namespace colm {

void init_runtime(const std::string& log_level, int threads) {
  auto level = spdlog::level::from_str(log_level);
  if (level == spdlog::level::off && log_level != "off") {
    throw Error("unknown log level '" + log_level + "' (use trace, debug, info, warn, error or off)");
  }
  static bool logger_made = false;
  if (!logger_made) {
    // Logs go to stderr so stdout stays clean for JSON and generated text.
    auto logger = spdlog::stderr_color_mt("colm");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%^%l%$ %v");
    logger_made = true;
  }
  spdlog::set_level(level);
  if (threads <= 0) {
    if (const char* env = std::getenv("COLM_THREADS")) threads = std::atoi(env);
  }
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
}

int torch_threads() { return at::get_num_threads(); }

}  // namespace colm
