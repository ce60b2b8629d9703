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

std::string model_fingerprint(NetworkImpl& net, torch::Dtype dtype, const Tokenizer& tokenizer) {
  Hasher h;
  h.add(std::string("colm.transformer"));
  h.add(config_to_hf(net.config(), dtype).dump());
  for (const auto& [name, t] : checkpoint_tensors(net)) {
    // Stream each tensor's bytes through SHA-1 instead of copying them into the Hasher's buffer.
    boost::uuids::detail::sha1 sha;
    sha.process_bytes(t.data_ptr(), t.numel() * t.element_size());
    boost::uuids::detail::sha1::digest_type d;
    sha.get_digest(d);
    std::string digest;
    for (unsigned word : d) digest += std::to_string(word) + ".";
    h.add(name).add(std::string(c10::toString(t.scalar_type())));
    for (auto s : t.sizes()) h.add(static_cast<int64_t>(s));
    h.add(digest);
  }
  h.add(tokenizer.valid() ? tokenizer.fingerprint() : std::string("no tokenizer"));
  return h.hex();
}

}  // namespace colm::transformer
