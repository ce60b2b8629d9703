// Writing a model as a Hugging Face checkpoint directory, and the content fingerprint (config,
// raw weight bytes, tokenizer) that artifact keys use.
#include <filesystem>
#include <fstream>

#include <boost/uuid/detail/sha1.hpp>
#include <spdlog/spdlog.h>

#include "colm/hash.hpp"
#include "colm/tokenizer.hpp"
#include "save.hpp"

namespace colm::transformer {
namespace fs = std::filesystem;

void save_checkpoint(const std::string& dir, NetworkImpl& net, torch::Dtype dtype, const Tokenizer& tokenizer) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  COLM_CHECK(!ec, "cannot create checkpoint directory '" << dir << "': " << ec.message());
  // A stale shard index would make loaders read the old shards instead of the new single file.
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index, ec)) {
    spdlog::info("[transformer] {}: removing the old shard index (the model is written as one file)", dir);
    fs::remove(index, ec);
  }
  save_safetensors((fs::path(dir) / "model.safetensors").string(), checkpoint_tensors(net), {{"format", "pt"}});
  const auto cfg_path = (fs::path(dir) / "config.json").string();
  const auto tmp = cfg_path + ".tmp";
  {
    std::ofstream out(tmp);
    COLM_CHECK(out, "cannot write '" << tmp << "'");
    out << config_to_hf(net.config(), dtype).dump(2) << "\n";
    COLM_CHECK(out.good(), "error writing '" << tmp << "'");
  }
  fs::rename(tmp, cfg_path, ec);
  COLM_CHECK(!ec, "cannot rename '" << tmp << "' to '" << cfg_path << "': " << ec.message());
  if (tokenizer.valid()) tokenizer.save((fs::path(dir) / "tokenizer.json").string());
  spdlog::info("[transformer] saved {} model to {}", to_string(net.config().family), dir);
}

std::string model_fingerprint(NetworkImpl& net, torch::Dtype dtype, const Tokenizer& tokenizer,
                              const Checkpoint* checkpoint, const std::vector<std::string>& sources) {
  Hasher h;
  h.add(std::string("colm.transformer"));
  h.add(config_to_hf(net.config(), dtype).dump());
  const auto specs = net.weights();
  COLM_CHECK(checkpoint == nullptr || sources.size() == specs.size(),
             "[transformer] fingerprint: " << sources.size() << " checkpoint names for " << specs.size() << " weights");
  const std::string dtype_text = c10::toString(dtype);
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& spec = specs[i];
    // Each tensor's bytes go through SHA-1 in pieces; only its digest enters the Hasher.
    boost::uuids::detail::sha1 sha;
    std::vector<int64_t> shape;
    if (checkpoint != nullptr) {
      checkpoint->stream(sources[i], dtype, [&](const void* p, size_t n) { sha.process_bytes(p, n); });
      shape = checkpoint->entry(sources[i]).shape;
    } else {
      auto t = spec.param.detach();
      if (spec.conv1d) t = t.t();
      t = t.to(torch::kCPU).contiguous();  // a copy of this one tensor at most (a fresh Conv1D weight, a GPU)
      COLM_CHECK(t.scalar_type() == dtype, "[transformer] fingerprint: " << spec.name << " is " << t.scalar_type()
                                                                         << ", not the model's " << dtype_text);
      sha.process_bytes(t.data_ptr(), t.numel() * t.element_size());
      shape = t.sizes().vec();
    }
    boost::uuids::detail::sha1::digest_type d;
    sha.get_digest(d);
    std::string digest;
    for (unsigned word : d) digest += std::to_string(word) + ".";
    h.add(spec.name).add(dtype_text);
    for (auto s : shape) h.add(static_cast<int64_t>(s));
    h.add(digest);
  }
  h.add(tokenizer.valid() ? tokenizer.fingerprint() : std::string("no tokenizer"));
  return h.hex();
}

}  // namespace colm::transformer
