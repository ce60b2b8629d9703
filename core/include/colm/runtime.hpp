// Process-wide runtime setup shared by the CLI, tests and benchmarks: logging format and level,
// Torch's thread count (LibTorch defaults to 1 thread here; colm uses every core unless told).
#pragma once
#include <string>

#include "colm/error.hpp"

namespace colm {

// How many intra-op threads this process may use, and where that number came from: COLM_THREADS
// when set (> 0), else the smallest of the CPU affinity mask (sched_getaffinity), the cgroup CPU
// quota (rounded up), SLURM_CPUS_PER_TASK and OMP_NUM_THREADS; the core count when none is known.
struct ThreadChoice {
  int threads = 0;
  std::string source;
};
COLM_VISIBLE ThreadChoice choose_threads();

// level: trace, debug, info, warn, error, off. threads <= 0: choose_threads(). The choice is logged
// once per process (info).
COLM_VISIBLE void init_runtime(const std::string& log_level = "info", int threads = 0);
COLM_VISIBLE int torch_threads();

}  // namespace colm
