// Decoding on a device (default cuda:0): the same random-weight Llama-shaped model in float32 and in
// bfloat16, greedy, at batch 1 and 8, with tokens/s and the peak device memory of each, printed side
// by side as bf16/f32 ratios. scripts/gpu-smoke.sh runs it; on a CPU it runs too (no device memory).
//   bench_device [DEVICE] [TOKENS] [D_MODEL] [LAYERS]     defaults: cuda:0 128 2048 16 (~1B parameters)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>

#include <torch/torch.h>

#if defined(COLM_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "colm/config.hpp"
#include "colm/plugin.hpp"
#include "colm/runtime.hpp"
#include "method/decode.hpp"
#include "no_eos.hpp"
#include "plugin/registry.hpp"

using namespace colm;
using colm::bench::NoEos;

namespace {

// Peak bytes the caching allocator handed out / reserved on the device since the last reset.
struct DeviceMemory {
  bool known = false;
  double allocated_gib = 0, reserved_gib = 0;
};

#if defined(COLM_WITH_CUDA)
int device_index(const torch::Device& d) { return d.has_index() ? d.index() : 0; }  // "cuda" is cuda:0
#endif

void reset_peak(const torch::Device& d) {
#if defined(COLM_WITH_CUDA)
  if (d.is_cuda()) {
    torch::cuda::synchronize(device_index(d));
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::resetPeakStats(device_index(d));
  }
#else
  (void)d;
#endif
}

DeviceMemory peak(const torch::Device& d) {
  DeviceMemory m;
#if defined(COLM_WITH_CUDA)
  if (d.is_cuda()) {
    torch::cuda::synchronize(device_index(d));
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device_index(d));
    m.known = true;
    m.allocated_gib = double(stats.allocated_bytes[0].peak) / double(1 << 30);  // [0]: aggregate over pools
    m.reserved_gib = double(stats.reserved_bytes[0].peak) / double(1 << 30);
  }
#else
  (void)d;
#endif
  return m;
}

struct Result {
  int64_t params = 0;
  double weights_gib = 0;  // parameters x bytes per element
  double tok_s_1 = 0, tok_s_8 = 0;
  DeviceMemory mem;
};

Result measure(const std::string& device, const std::string& dtype, int64_t tokens, int64_t d_model, int64_t layers) {
  const int64_t heads = std::max<int64_t>(1, d_model / 128);
  const std::string toml = "family = \"llama\"\nn_layer = " + std::to_string(layers) + "\nn_head = " +
                           std::to_string(heads) + "\nd_model = " + std::to_string(d_model) + "\nd_ff = " +
                           std::to_string(d_model * 11 / 4) + "\nmax_positions = 1024\nvocab = \"bytes\"\n" +
                           "vocab_size = 32000\ntie_embeddings = false\ninit_seed = 1\ndtype = \"" + dtype +
                           "\"\ndevice = \"" + device + "\"\n";
  const torch::Device dev(device);
  reset_peak(dev);
  PluginContext ctx;
  ctx.instance = "bench-" + dtype;
  NoEos model(default_registry().create_expert("transformer", ConfigView::from_string(toml, "bench_device"), ctx));
  Result r;
  r.params = model.info().num_parameters;
  r.weights_gib = double(r.params) * (dtype == "bfloat16" ? 2 : 4) / double(1 << 30);
  DecodeOptions o;
  o.max_tokens = tokens;
  auto run = [&](int64_t batch) {
    std::vector<std::string> prompts;
    for (int64_t i = 0; i < batch; ++i) prompts.push_back("Question " + std::to_string(i) + ": what is 12 + 30? Answer:");
    o.batch_size = batch;
    decode_single(model, prompts, {}, o);  // warm-up (allocator, kernels)
    const auto t0 = std::chrono::steady_clock::now();
    const auto res = decode_single(model, prompts, {}, o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int64_t n = 0;
    for (const auto& x : res) n += static_cast<int64_t>(x.ids.size());
    return double(n) / s;
  };
  r.tok_s_1 = run(1);
  r.tok_s_8 = run(8);
  r.mem = peak(dev);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  init_runtime("warn");
  const std::string device = argc > 1 ? argv[1] : "cuda:0";
  const int64_t tokens = argc > 2 ? std::atoll(argv[2]) : 128;
  const int64_t d_model = argc > 3 ? std::atoll(argv[3]) : 2048;
  const int64_t layers = argc > 4 ? std::atoll(argv[4]) : 16;
  if (device.rfind("cuda", 0) == 0 && !torch::cuda::is_available()) {
    std::fprintf(stderr, "[bench] %s requested but torch::cuda::is_available() is false (no GPU, or a CPU-only "
                         "LibTorch: build with the cuda preset)\n", device.c_str());
    return 2;
  }
#if !defined(COLM_WITH_CUDA)
  if (device.rfind("cuda", 0) == 0)
    std::fprintf(stderr, "[bench] built without COLM_CUDA: device memory is not reported\n");
#endif
  std::printf("[bench] device %s, %lld tokens per row, llama d_model %lld, %lld layers, vocab 32000 rows\n",
              device.c_str(), static_cast<long long>(tokens), static_cast<long long>(d_model),
              static_cast<long long>(layers));
  const Result f32 = measure(device, "float32", tokens, d_model, layers);
  const Result bf16 = measure(device, "bfloat16", tokens, d_model, layers);
  auto line = [](const char* name, const Result& r) {
    std::printf("%-9s %6.3fB params, weights %6.2f GiB, batch 1 %8.1f tok/s, batch 8 %8.1f tok/s", name,
                double(r.params) / 1e9, r.weights_gib, r.tok_s_1, r.tok_s_8);
    if (r.mem.known)
      std::printf(", peak device memory %6.2f GiB allocated (%.2fx weights), %6.2f GiB reserved\n",
                  r.mem.allocated_gib, r.mem.allocated_gib / r.weights_gib, r.mem.reserved_gib);
    else
      std::printf(", peak device memory n/a\n");
  };
  line("float32", f32);
  line("bfloat16", bf16);
  std::printf("bf16/f32: speed batch 1 %.2fx, batch 8 %.2fx", bf16.tok_s_1 / f32.tok_s_1, bf16.tok_s_8 / f32.tok_s_8);
  if (f32.mem.known) std::printf(", peak allocated %.2fx", bf16.mem.allocated_gib / f32.mem.allocated_gib);
  std::printf("\n");
  return 0;
}
