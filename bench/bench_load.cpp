// Peak resident memory of `colm generate` (load + decode) against the bytes of the weights, for a
// GPT-2-small-shaped f32 checkpoint (loaded as float32 and as bfloat16) and a Llama-shaped bf16
// checkpoint of about 1B parameters (TinyLlama's shape). Random weights, written by this benchmark
// with the transformer plugin's own save code into a temporary directory.
//
// Every measurement is a fresh `colm generate` process; its peak resident set comes from wait4's
// ru_maxrss (VmHWM). This process never loads a model itself (the checkpoints are written by a
// child, `bench_load --write ...`), so the little anonymous memory a forked child starts with stays
// far below what is measured. The fixed runtime (libraries, allocator) is measured the same way
// with a tiny model.
//
// usage: bench_load [--colm PATH] [--keep DIR] [--skip-llama] [--tokens N]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "colm/config.hpp"
#include "colm/plugin.hpp"
#include "colm/runtime.hpp"
#include "colm/safetensors.hpp"
#include "plugin/registry.hpp"

namespace fs = std::filesystem;

namespace {

constexpr double kMB = 1e6;

struct Shape {
  std::string name;  // directory name and label
  std::string toml;  // the transformer plugin's keys for a fresh model
};

// GPT-2 small: 124M parameters, vocab 50257 (byte-level tokenizer, padded output rows), f32: ~498 MB.
const Shape kGpt2Small{"gpt2-small-f32",
                       "family = \"gpt2\"\nn_layer = 12\nn_head = 12\nd_model = 768\nd_ff = 3072\n"
                       "max_positions = 1024\nvocab = \"bytes\"\nvocab_size = 50257\ndtype = \"float32\"\n"};
// TinyLlama-1.1B's shape: 22 layers, d 2048, 32 heads / 4 kv heads, d_ff 5632, vocab 32000, untied: ~2.2 GB in bf16.
const Shape kLlama1b{"llama-1b-bf16",
                     "family = \"llama\"\nn_layer = 22\nn_head = 32\nn_kv_head = 4\nd_model = 2048\nd_ff = 5632\n"
                     "max_positions = 2048\nvocab = \"bytes\"\nvocab_size = 32000\ntie_embeddings = false\n"
                     "dtype = \"bfloat16\"\n"};
// The fixed runtime: a model too small to matter (~0.2 MB).
const Shape kTiny{"tiny-f32",
                  "family = \"gpt2\"\nn_layer = 1\nn_head = 2\nd_model = 64\nd_ff = 128\nmax_positions = 64\n"
                  "vocab = \"bytes\"\ndtype = \"float32\"\n"};

std::string self_exe() { return fs::read_symlink("/proc/self/exe").string(); }

// Writes one random-weight checkpoint (in the `--write` child).
int write_checkpoint(const std::string& which, const std::string& dir) {
  colm::init_runtime("warn");
  const Shape* shape = which == kGpt2Small.name ? &kGpt2Small : which == kLlama1b.name ? &kLlama1b : &kTiny;
  colm::PluginContext ctx;
  ctx.instance = shape->name;
  ctx.seed = 1;
  auto expert = colm::default_registry().create_expert(
      "transformer", colm::ConfigView::from_string(shape->toml, shape->name), ctx);
  expert->save(dir);
  return 0;
}

struct Run {
  int status = -1;
  double peak_bytes = 0;
  double seconds = 0;
};

// Runs argv[0] with argv; stdout and stderr go to `log`. Peak RSS from wait4. fork (not vfork or
// posix_spawn, whose child starts from this process's memory map and inherits its peak): a forked
// child's copied map holds only this process's anonymous pages, so its peak starts from that.
Run run(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  Run r;
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("bench_load: fork");
    return r;
  }
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  struct rusage ru {};
  wait4(pid, &status, 0, &ru);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.peak_bytes = static_cast<double>(ru.ru_maxrss) * 1024.0;  // kilobytes on Linux
  return r;
}

double own_anon_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("RssAnon:", 0) == 0) return std::atof(line.c_str() + 8) * 1024.0;
  return 0;
}

// Bytes of the weights at `dtype` (what the model must hold): the file's tensor bytes rescaled by
// element size. Read from the header alone.
double weight_bytes(const std::string& dir, const std::string& dtype) {
  const auto file = colm::SafetensorsFile::open(dir + "/model.safetensors");
  const double to = dtype == "bfloat16" ? 2 : 4;
  double total = 0;
  for (const auto& [name, e] : file->header().tensors) {
    const double from = e.dtype == "F32" ? 4 : 2;
    total += static_cast<double>(e.end - e.begin) * to / from;
  }
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--write") return write_checkpoint(argv[2], argv[3]);

  std::string colm_bin = (fs::path(self_exe()).parent_path() / "colm").string();
  std::string keep;
  bool llama = true;
  int tokens = 8;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--colm" && i + 1 < argc) colm_bin = argv[++i];
    else if (a == "--keep" && i + 1 < argc) keep = argv[++i];
    else if (a == "--skip-llama") llama = false;
    else if (a == "--tokens" && i + 1 < argc) tokens = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_load [--colm PATH] [--keep DIR] [--skip-llama] [--tokens N]\n");
      return 2;
    }
  }
  if (!fs::exists(colm_bin)) {
    std::fprintf(stderr, "bench_load: %s does not exist (build the colm target, or give --colm PATH)\n", colm_bin.c_str());
    return 2;
  }
  std::string root = keep;
  if (root.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "colm-bench-load-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::perror("bench_load: mkdtemp");
      return 1;
    }
    root = tmpl;
  }
  fs::create_directories(root);

  std::vector<const Shape*> shapes{&kTiny, &kGpt2Small};
  if (llama) shapes.push_back(&kLlama1b);
  for (const Shape* s : shapes) {
    const std::string dir = root + "/" + s->name;
    if (fs::exists(dir + "/model.safetensors")) continue;  // --keep from an earlier run
    const Run w = run({self_exe(), "--write", s->name, dir}, root + "/write-" + s->name + ".log");
    if (w.status != 0) {
      std::fprintf(stderr, "bench_load: writing %s failed (see %s/write-%s.log)\n", s->name.c_str(), root.c_str(),
                   s->name.c_str());
      return 1;
    }
    std::printf("[bench] wrote %s in %.1f s\n", dir.c_str(), w.seconds);
  }
  std::printf("[bench] this process: %.0f MB of anonymous memory (a floor for what a child's ru_maxrss can report)\n",
              own_anon_bytes() / kMB);

  auto generate = [&](const std::string& name, const std::string& dtype) {
    const std::string dir = root + "/" + name;
    const std::string log = root + "/generate-" + name + "-" + dtype + ".log";
    return run({colm_bin, "generate", dir, "--prompt", "The quick brown fox", "--max-tokens", std::to_string(tokens),
                "--dtype", dtype},
               log);
  };
  const Run base = generate(kTiny.name, "float32");
  if (base.status != 0) {
    std::fprintf(stderr, "bench_load: colm generate failed on the tiny model (see %s)\n", root.c_str());
    return 1;
  }
  const double runtime = base.peak_bytes;
  std::printf("[bench] fixed runtime (colm generate on a %.1f MB model): peak %.0f MB (limit 250 MB)\n",
              fs::file_size(root + "/" + kTiny.name + "/model.safetensors") / kMB, runtime / kMB);

  struct Case {
    const Shape* shape;
    std::string label, dtype;
  };
  std::vector<Case> cases{{&kGpt2Small, "gpt2-small f32", "float32"}, {&kGpt2Small, "gpt2-small f32", "bfloat16"}};
  if (llama) cases.push_back({&kLlama1b, "llama-1.1b bf16", "bfloat16"});
  bool all_met = true;
  for (const auto& c : cases) {
    const std::string dir = root + "/" + c.shape->name;
    const double file = static_cast<double>(fs::file_size(dir + "/model.safetensors"));
    const double weights = weight_bytes(dir, c.dtype);
    const Run r = generate(c.shape->name, c.dtype);
    if (r.status != 0) {
      std::printf("load %s as %s: colm generate failed (exit %d, see %s)\n", c.label.c_str(), c.dtype.c_str(),
                  r.status, root.c_str());
      all_met = false;
      continue;
    }
    const double target = 1.15 * weights + 250 * kMB;
    const bool met = r.peak_bytes <= target;
    all_met = all_met && met;
    std::printf("load %s as %s: file %.0f MB, weights at %s %.0f MB, peak %.0f MB, peak/weights %.2f, "
                "(peak - runtime)/weights %.2f, %.1f s (target 1.15 x weights + 250 MB = %.0f MB: %s)\n",
                c.label.c_str(), c.dtype.c_str(), file / kMB, c.dtype.c_str(), weights / kMB, r.peak_bytes / kMB,
                r.peak_bytes / weights, (r.peak_bytes - runtime) / weights, r.seconds, target / kMB,
                met ? "met" : "NOT met");
  }
  if (keep.empty()) {
    std::error_code ec;
    fs::remove_all(root, ec);
  } else {
    std::printf("[bench] checkpoints and logs kept in %s\n", root.c_str());
  }
  return all_met ? 0 : 1;
}
