// Process-wide runtime setup shared by the CLI, tests and benchmarks: logging format and level,
// Torch's thread count (LibTorch defaults to 1 thread here; colm uses every core unless told).
#pragma once
#include <string>

#include "colm/error.hpp"

namespace colm {

// level: trace, debug, info, warn, error, off. threads <= 0: COLM_THREADS, else all cores.
COLM_VISIBLE void init_runtime(const std::string& log_level = "info", int threads = 0);
COLM_VISIBLE int torch_threads();

}  // namespace colm
