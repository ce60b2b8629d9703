// Logging and thread setup: one place, so the CLI, tests and benchmarks behave the same.
// Threads come from what the process may use (COLM_THREADS, else the smallest of the affinity mask,
// a cgroup CPU quota, SLURM_CPUS_PER_TASK and OMP_NUM_THREADS), never from the machine's core count.
#include "colm/runtime.hpp"

#include <sched.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

namespace colm {
namespace {

// A positive integer from an environment variable, or 0.
int env_count(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return 0;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (end && *end == '\0' && n > 0 && n < 1 << 20) ? static_cast<int>(n) : 0;
}

int affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
  return CPU_COUNT(&set);
}

// The process's cgroup CPU quota in whole CPUs (rounded up), or 0 when unlimited or unknown.
// cgroup v2: <mount>/<group>/cpu.max ("max 100000" or "QUOTA PERIOD"); v1: cpu.cfs_quota_us / period.
int cgroup_cpus() {
  std::ifstream cg("/proc/self/cgroup");
  std::string line, v2_path, v1_path;
  while (std::getline(cg, line)) {
    if (line.rfind("0::", 0) == 0) v2_path = line.substr(3);
    const auto colon = line.find(':');
    const auto second = line.find(':', colon + 1);
    if (colon != std::string::npos && second != std::string::npos) {
      const auto controllers = line.substr(colon + 1, second - colon - 1);
      if (controllers.find("cpu") != std::string::npos && controllers.find("cpuset") == std::string::npos)
        v1_path = line.substr(second + 1);
    }
  }
  auto quota_cpus = [](double quota, double period) {
    return quota > 0 && period > 0 ? std::max(1, static_cast<int>(std::ceil(quota / period))) : 0;
  };
  // Walk up from the process's group: a limit may be set on any ancestor.
  for (std::string p = v2_path; !v2_path.empty();) {
    std::ifstream f("/sys/fs/cgroup" + p + "/cpu.max");
    std::string quota;
    double period = 0;
    if (f >> quota >> period && quota != "max") return quota_cpus(std::atof(quota.c_str()), period);
    if (p.empty() || p == "/") break;
    p = p.substr(0, p.find_last_of('/'));
  }
  if (!v1_path.empty()) {
    for (const std::string root : {"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpu"}) {
      std::ifstream q(root + v1_path + "/cpu.cfs_quota_us"), pe(root + v1_path + "/cpu.cfs_period_us");
      double quota = 0, period = 0;
      if (q >> quota && pe >> period) return quota_cpus(quota, period);
    }
  }
  return 0;
}

}  // namespace

ThreadChoice choose_threads() {
  ThreadChoice c;
  if (const int n = env_count("COLM_THREADS")) {
    c.threads = n;
    c.source = "COLM_THREADS";
    return c;
  }
  const std::pair<int, const char*> limits[] = {{affinity_cpus(), "the CPU affinity mask"},
                                                {cgroup_cpus(), "the cgroup CPU quota"},
                                                {env_count("SLURM_CPUS_PER_TASK"), "SLURM_CPUS_PER_TASK"},
                                                {env_count("OMP_NUM_THREADS"), "OMP_NUM_THREADS"}};
  for (const auto& [n, what] : limits) {
    if (n <= 0) continue;
    if (c.threads == 0 || n < c.threads) c.threads = n, c.source = what;
  }
  if (c.threads == 0) {
    c.threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    c.source = "the machine's core count";
  }
  return c;
}

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
  std::string source = "the caller";
  if (threads <= 0) {
    const auto c = choose_threads();
    threads = c.threads;
    source = c.source;
  }
  at::set_num_threads(threads);
  static bool logged = false;
  if (!logged) {
    const char* wait = std::getenv("OMP_WAIT_POLICY");
    spdlog::info("[runtime] {} torch thread{} (from {}); OpenMP wait policy {}", threads, threads == 1 ? "" : "s",
                 source, wait ? wait : "default (spinning)");
    logged = true;
  }
}

int torch_threads() { return at::get_num_threads(); }

}  // namespace colm
