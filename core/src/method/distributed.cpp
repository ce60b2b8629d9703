// c10d process groups for data-parallel training (distributed.hpp): the store that rendezvouses the
// processes (FileStore or TCPStore) and a ProcessGroupGloo over it.
#include "method/distributed.hpp"

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include <spdlog/spdlog.h>
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "colm/error.hpp"

namespace colm {

struct DataParallel::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (!end || *end != '\0' || x < 0) throw Error(std::string(name) + "='" + v + "': expected an integer >= 0");
  return int(x);
}

std::string env_text(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

}  // namespace

DataParallel::DataParallel(int rank, int world_size, const std::string& init, double timeout_s)
    : impl_(std::make_unique<Impl>()), rank_(rank), world_size_(world_size) {
  COLM_CHECK(world_size >= 1 && rank >= 0 && rank < world_size,
             "[dist] rank " << rank << " of world size " << world_size << ": need 0 <= rank < size");
  const auto timeout = std::chrono::milliseconds(int64_t(timeout_s * 1000));
  try {
    if (init.rfind("file://", 0) == 0) {
      const auto path = init.substr(7);
      if (std::filesystem::path(path).has_parent_path())
        std::filesystem::create_directories(std::filesystem::path(path).parent_path());
      impl_->store = c10::make_intrusive<c10d::FileStore>(path, world_size);
    } else if (init.rfind("tcp://", 0) == 0) {
      const auto hostport = init.substr(6);
      const auto colon = hostport.rfind(':');
      COLM_CHECK(colon != std::string::npos, "[dist] '" << init << "': expected tcp://host:port");
      c10d::TCPStoreOptions o;
      o.port = uint16_t(std::stoi(hostport.substr(colon + 1)));
      o.isServer = rank == 0;
      o.numWorkers = size_t(world_size);
      o.timeout = timeout;
      impl_->store = c10::make_intrusive<c10d::TCPStore>(hostport.substr(0, colon), o);
    } else {
      throw Error("[dist] '" + init + "': expected file:///path or tcp://host:port");
    }
    impl_->store->setTimeout(timeout);
    auto options = c10d::ProcessGroupGloo::Options::create();
    options->timeout = timeout;
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, rank, world_size, options);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error("[dist] rank " + std::to_string(rank) + " of " + std::to_string(world_size) +
                " could not join the process group at " + init + ": " + e.what());
  }
  spdlog::info("[dist] rank {} of {} joined ({} through {})", rank, world_size, backend_, init);
}

DataParallel::~DataParallel() = default;

std::shared_ptr<DataParallel> DataParallel::from_environment() {
  int rank = 0, size = 1;
  std::string init = env_text("COLM_DIST_INIT");
  if (!env_text("COLM_WORLD_SIZE").empty()) {
    size = env_int("COLM_WORLD_SIZE", 1);
    rank = env_int("COLM_RANK", 0);
  } else if (!env_text("SLURM_NTASKS").empty() && !env_text("SLURM_PROCID").empty()) {
    size = env_int("SLURM_NTASKS", 1);
    rank = env_int("SLURM_PROCID", 0);
    if (init.empty() && size > 1)
      init = "file://" + (std::filesystem::current_path() / (".colm-dist-" + env_text("SLURM_JOB_ID") + "." +
                                                              env_text("SLURM_STEP_ID"))).string();
  }
  if (size <= 1) return nullptr;
  COLM_CHECK(!init.empty(), "[dist] COLM_WORLD_SIZE=" << size << " but no COLM_DIST_INIT (file:///path or tcp://host:port)");
  return std::make_shared<DataParallel>(rank, size, init);
}

void DataParallel::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) return;
  // One flat buffer: one collective per call, whatever the number of tensors.
  std::vector<torch::Tensor> flat;
  for (const auto& t : tensors) flat.push_back(t.detach().to(torch::kCPU, torch::kFloat32).reshape({-1}));
  std::vector<torch::Tensor> buffer{torch::cat(flat)};
  impl_->group->allreduce(buffer)->wait();
  int64_t offset = 0;
  for (auto& t : tensors) {
    const auto n = t.numel();
    t.copy_(buffer[0].narrow(0, offset, n).view(t.sizes()).to(t.device(), t.scalar_type()));
    offset += n;
  }
}

double DataParallel::all_reduce_sum(double value) {
  std::vector<torch::Tensor> t{torch::tensor({value}, torch::kFloat64)};
  impl_->group->allreduce(t)->wait();
  return t[0].item<double>();
}

void DataParallel::barrier() { impl_->group->barrier()->wait(); }

}  // namespace colm
