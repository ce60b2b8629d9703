// Data-parallel training across processes with LibTorch's c10d: a process group (Gloo) that
// all-reduces gradients. Who starts the processes (colm train-expert --nproc, srun) and how the
// loop splits a batch is the caller's business (train.cpp); this file only joins the group.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace colm {

class DataParallel {
 public:
  // Joins the group `rank` of `world_size` rendezvousing through `init`: "file:///path" (a c10d
  // FileStore: one machine, or a shared file system) or "tcp://host:port" (a c10d TCPStore served by
  // rank 0). Blocks until every rank has joined (timeout_s).
  DataParallel(int rank, int world_size, const std::string& init, double timeout_s = 300);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // The group this process belongs to according to its environment, or null for a single process:
  // COLM_RANK, COLM_WORLD_SIZE, COLM_DIST_INIT (set by `--nproc`), else srun's SLURM_PROCID and
  // SLURM_NTASKS with COLM_DIST_INIT or, by default, a store file in the working directory named
  // after SLURM_JOB_ID and SLURM_STEP_ID (every task must share that directory).
  static std::shared_ptr<DataParallel> from_environment();

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const std::string& backend() const { return backend_; }

  // Sums the tensors over every process, in place. Gloo reduces CPU tensors; tensors on a GPU go
  // through a CPU copy (this libtorch is built without NCCL).
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  double all_reduce_sum(double value);
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_size_ = 1;
  std::string backend_ = "gloo";
};

}  // namespace colm
