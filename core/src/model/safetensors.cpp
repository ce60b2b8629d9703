// Safetensors files (memory-mapped reader, atomic writer) and Hugging Face checkpoint directories.
// Header validation lives in safetensors_header.cpp; this file maps bytes and builds tensors.
#include "colm/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "model/safetensors_internal.hpp"

// The format is little-endian; colm reads the mapped bytes as native values.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "colm's safetensors code assumes a little-endian host");

namespace colm {

namespace fs = std::filesystem;

namespace {

torch::Dtype torch_dtype(const std::string& dtype) {
  if (dtype == "F64") return torch::kFloat64;
  if (dtype == "F32") return torch::kFloat32;
  if (dtype == "F16") return torch::kFloat16;
  if (dtype == "BF16") return torch::kBFloat16;
  if (dtype == "I64") return torch::kInt64;
  if (dtype == "I32") return torch::kInt32;
  if (dtype == "I16") return torch::kInt16;
  if (dtype == "I8") return torch::kInt8;
  if (dtype == "U8") return torch::kUInt8;
  if (dtype == "BOOL") return torch::kBool;
  throw Error("safetensors dtype " + dtype + " has no torch equivalent");  // unreachable after parsing
}

// The safetensors name of a torch dtype, or "" when the format (as colm writes it) has none.
std::string safetensors_dtype(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat64: return "F64";
    case torch::kFloat32: return "F32";
    case torch::kFloat16: return "F16";
    case torch::kBFloat16: return "BF16";
    case torch::kInt64: return "I64";
    case torch::kInt32: return "I32";
    case torch::kInt16: return "I16";
    case torch::kInt8: return "I8";
    case torch::kUInt8: return "U8";
    case torch::kBool: return "BOOL";
    default: return "";
  }
}

std::string errno_text() { return std::strerror(errno); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

namespace {

// Conversions and streams go through the file in pieces of this many bytes (about): reading a
// tensor never needs a second resident copy of it, only of one piece.
constexpr size_t kPieceBytes = size_t{2} << 20;

}  // namespace

struct SafetensorsFile::Impl {
  std::string path;
  SafetensorsHeader header;
  // The whole file, mapped private and writable: writes through an aliasing tensor copy the page
  // (copy-on-write) and never reach the file. nullptr for an empty file.
  uint8_t* base = nullptr;
  size_t mapped = 0;
  size_t page = 4096;

  mutable std::mutex mutex;
  mutable std::map<std::string, int64_t> aliases;  // live tensors from map() per tensor name

  ~Impl() {
    if (base != nullptr) munmap(base, mapped);
  }
  uint8_t* data_section() const { return base + 8 + header.header_size; }

  const TensorEntry& entry(const std::string& name) const {
    auto it = header.tensors.find(name);
    COLM_CHECK(it != header.tensors.end(), path << ": no tensor \"" << name << "\"");
    return it->second;
  }

  bool is_aliased(const std::string& name) const {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = aliases.find(name);
    return it != aliases.end() && it->second > 0;
  }

  // Drops the whole pages inside [from, to) from the process's resident memory; the next read
  // faults them back in from the page cache. Only for bytes that no live tensor aliases: on a
  // private mapping, a page some tensor has written would lose the writes.
  void drop_pages(const uint8_t* from, const uint8_t* to) const {
    const auto lo = (reinterpret_cast<uintptr_t>(from) + page - 1) / page * page;
    const auto hi = reinterpret_cast<uintptr_t>(to) / page * page;
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  }

  void check_bool(const TensorEntry& e, const uint8_t* src, size_t nbytes) const {
    if (e.dtype != "BOOL") return;
    // torch assumes bools are 0 or 1; any other byte would make later arithmetic undefined.
    for (size_t i = 0; i < nbytes; ++i)
      COLM_CHECK(src[i] <= 1, path << ": tensor \"" << e.name << "\": BOOL byte " << i << " has value "
                                   << int(src[i]) << " (must be 0 or 1)");
  }

  // Visits the tensor's bytes in pieces of whole elements (a multiple of `granule` of them, e.g.
  // whole rows): visit(src, first element, count). The source pages behind each piece are dropped
  // afterwards unless `keep` (a live alias holds them).
  template <class F>
  void pieces(const TensorEntry& e, bool keep, F&& visit, size_t granule = 1) const {
    const uint8_t* src = data_section() + e.begin;
    const size_t nbytes = static_cast<size_t>(e.end - e.begin);
    const size_t elem = detail::safetensors_dtype_size(e.dtype);
    const size_t per_piece = std::max<size_t>(1, kPieceBytes / (elem * granule)) * granule;
    const size_t count = nbytes / elem;
    for (size_t first = 0; first < count; first += per_piece) {
      const size_t n = std::min(per_piece, count - first);
      visit(src + first * elem, first, n);
      // Pages are dropped up to the end of this piece; a page it shares with the next piece is
      // dropped with that one (and a page shared with a neighbouring tensor never).
      if (!keep) drop_pages(src, src + (first + n) * elem);
    }
  }

  // A piece of the tensor as a tensor of its stored dtype: a view of the mapping, or a copy in
  // `bounce` when the offset is not aligned for the element type (safetensors only promises bytes).
  torch::Tensor source_piece(const TensorEntry& e, const uint8_t* src, size_t n, torch::Tensor& bounce) const {
    const auto options = torch::TensorOptions().dtype(torch_dtype(e.dtype));
    const size_t elem = detail::safetensors_dtype_size(e.dtype);
    const auto len = static_cast<int64_t>(n);
    if (reinterpret_cast<uintptr_t>(src) % elem == 0) return torch::from_blob(const_cast<uint8_t*>(src), {len}, options);
    if (!bounce.defined() || bounce.numel() < len) bounce = torch::empty({len}, options);
    auto piece = bounce.narrow(0, 0, len);
    std::memcpy(piece.data_ptr(), src, n * elem);
    return piece;
  }

  // Converts the tensor (stored dtype -> `out`'s dtype) into `out`, contiguous in the stored shape.
  void convert_into(const TensorEntry& e, torch::Tensor& out) const {
    auto flat = out.view({-1});
    torch::Tensor bounce;
    pieces(e, is_aliased(e.name), [&](const uint8_t* src, size_t first, size_t n) {
      flat.narrow(0, static_cast<int64_t>(first), static_cast<int64_t>(n)).copy_(source_piece(e, src, n, bounce));
    });
  }

  // The same for a matrix stored [rows, cols] into `out` [cols, rows]: whole rows per piece.
  void transpose_into(const TensorEntry& e, torch::Tensor& out) const {
    const int64_t cols = e.shape[1];
    torch::Tensor bounce;
    pieces(
        e, is_aliased(e.name),
        [&](const uint8_t* src, size_t first, size_t n) {
          const auto rows = static_cast<int64_t>(n) / cols;
          auto piece = source_piece(e, src, n, bounce).view({rows, cols});
          out.narrow(1, static_cast<int64_t>(first) / cols, rows).copy_(piece.t());
        },
        static_cast<size_t>(cols));
  }
};

SafetensorsFile::SafetensorsFile() : impl_(std::make_unique<Impl>()) {}
SafetensorsFile::~SafetensorsFile() = default;

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  Impl& impl = *file->impl_;
  impl.path = path;
  const long page = sysconf(_SC_PAGESIZE);
  if (page > 0) impl.page = static_cast<size_t>(page);

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  COLM_CHECK(fd >= 0, path << ": cannot open safetensors file: " << errno_text());
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const std::string why = S_ISDIR(st.st_mode) ? "is a directory" : "is not a regular file";
    ::close(fd);
    throw Error(path + ": cannot read safetensors file: " + why);
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size > 0) {
    // Private + writable on a read-only descriptor: copy-on-write pages, nothing written back.
    // MAP_NORESERVE: no swap is reserved for pages that are only ever read.
    void* p = mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string why = errno_text();
      ::close(fd);
      throw Error(path + ": cannot memory-map safetensors file: " + why);
    }
    impl.base = static_cast<uint8_t*>(p);
    impl.mapped = file_size;
  }
  ::close(fd);  // the mapping keeps the file alive

  // An empty file has no bytes to map; the parser reports it as too short.
  static const uint8_t kNothing[1] = {0};
  impl.header = parse_safetensors_header(impl.base != nullptr ? impl.base : kNothing,
                                         static_cast<size_t>(file_size), file_size, path);
  spdlog::debug("[safetensors] {}: {} tensors, header {} bytes", path, impl.header.tensors.size(),
                impl.header.header_size);
  return file;
}

const SafetensorsHeader& SafetensorsFile::header() const { return impl_->header; }
const std::string& SafetensorsFile::path() const { return impl_->path; }
bool SafetensorsFile::has(const std::string& name) const { return impl_->header.tensors.count(name) > 0; }

torch::Tensor SafetensorsFile::load(const std::string& name, torch::Dtype dtype) const {
  const TensorEntry& e = impl_->entry(name);
  const size_t nbytes = static_cast<size_t>(e.end - e.begin);
  auto out = torch::empty(e.shape, torch::TensorOptions().dtype(dtype));
  if (nbytes == 0) return out;
  impl_->check_bool(e, impl_->data_section() + e.begin, nbytes);
  impl_->convert_into(e, out);
  return out;
}

torch::Tensor SafetensorsFile::load_transposed(const std::string& name, torch::Dtype dtype) const {
  const TensorEntry& e = impl_->entry(name);
  COLM_CHECK(e.shape.size() == 2, impl_->path << ": tensor \"" << name << "\" has " << e.shape.size()
                                             << " dimensions; only a matrix can be loaded transposed");
  auto out = torch::empty({e.shape[1], e.shape[0]}, torch::TensorOptions().dtype(dtype));
  if (e.end == e.begin) return out;
  impl_->check_bool(e, impl_->data_section() + e.begin, static_cast<size_t>(e.end - e.begin));
  impl_->transpose_into(e, out);
  return out;
}

torch::Tensor SafetensorsFile::map(const std::string& name, torch::Dtype dtype) const {
  const TensorEntry& e = impl_->entry(name);
  const size_t nbytes = static_cast<size_t>(e.end - e.begin);
  uint8_t* src = impl_->data_section() + e.begin;
  const torch::Dtype stored = torch_dtype(e.dtype);
  const size_t elem = detail::safetensors_dtype_size(e.dtype);
  if (nbytes == 0 || stored != dtype || reinterpret_cast<uintptr_t>(src) % elem != 0) return load(name, dtype);
  impl_->check_bool(e, src, nbytes);
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    ++impl_->aliases[name];
  }
  // The tensor's storage holds the file (and so the mapping) until the last view of it is gone.
  auto self = shared_from_this();
  auto unalias = [self, name](void*) {
    std::lock_guard<std::mutex> lock(self->impl_->mutex);
    --self->impl_->aliases[name];
  };
  return torch::from_blob(src, e.shape, unalias, torch::TensorOptions().dtype(stored));
}

void SafetensorsFile::stream(const std::string& name, torch::Dtype dtype,
                             const std::function<void(const void*, size_t)>& sink) const {
  const TensorEntry& e = impl_->entry(name);
  const size_t nbytes = static_cast<size_t>(e.end - e.begin);
  if (nbytes == 0) return;
  const torch::Dtype stored = torch_dtype(e.dtype);
  const bool keep = impl_->is_aliased(name);
  const size_t elem = detail::safetensors_dtype_size(e.dtype);
  if (stored == dtype) {
    impl_->pieces(e, keep, [&](const uint8_t* src, size_t, size_t n) { sink(src, n * elem); });
    return;
  }
  impl_->check_bool(e, impl_->data_section() + e.begin, nbytes);
  torch::Tensor bounce, converted;
  impl_->pieces(e, keep, [&](const uint8_t* src, size_t, size_t n) {
    const auto len = static_cast<int64_t>(n);
    if (!converted.defined() || converted.numel() < len) converted = torch::empty({len}, torch::TensorOptions().dtype(dtype));
    auto piece = converted.narrow(0, 0, len);
    piece.copy_(impl_->source_piece(e, src, n, bounce));
    sink(piece.data_ptr(), n * piece.element_size());
  });
}

bool SafetensorsFile::aliased(const std::string& name) const {
  impl_->entry(name);
  return impl_->is_aliased(name);
}

void SafetensorsFile::release(const std::string& name) const {
  const TensorEntry& e = impl_->entry(name);
  if (e.end == e.begin || impl_->is_aliased(name)) return;
  const uint8_t* src = impl_->data_section() + e.begin;
  impl_->drop_pages(src, src + (e.end - e.begin));
}

// ---------------------------------------------------------------------------------------------
// Writer

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Validate everything before touching the disk.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return tensors[a].first < tensors[b].first; });
  std::vector<torch::Tensor> data(tensors.size());
  for (size_t k = 0; k < order.size(); ++k) {
    const auto& [name, t] = tensors[order[k]];
    COLM_CHECK(!name.empty(), path << ": cannot save a tensor with an empty name");
    COLM_CHECK(name != "__metadata__", path << ": \"__metadata__\" is reserved, not a tensor name");
    COLM_CHECK(k == 0 || tensors[order[k - 1]].first != name, path << ": tensor \"" << name << "\" given twice");
    COLM_CHECK(t.defined(), path << ": tensor \"" << name << "\" is undefined");
    COLM_CHECK(!safetensors_dtype(t.scalar_type()).empty(),
               path << ": tensor \"" << name << "\" has dtype " << t.scalar_type()
                    << ", which safetensors (as colm writes it) cannot store");
    data[order[k]] = t.detach().to(torch::kCPU).contiguous();
  }

  // Header: __metadata__ first, then the tensors in name order with consecutive offsets.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  for (size_t i : order) {
    const torch::Tensor& t = data[i];
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    nlohmann::ordered_json entry;
    entry["dtype"] = safetensors_dtype(t.scalar_type());
    entry["shape"] = t.sizes().vec();
    entry["data_offsets"] = {offset, offset + nbytes};
    header[tensors[i].first] = std::move(entry);
    offset += nbytes;
  }
  std::string text = header.dump();
  // Pad with spaces so the data section starts 8-byte aligned (prefix is 8 bytes).
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t prefix[8];
  for (int b = 0; b < 8; ++b) prefix[b] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * b));

  // Temp file in the same directory, then rename: readers never see a half-written file.
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  COLM_CHECK(fs::is_directory(dir), path << ": cannot save: directory " << dir.string() << " does not exist");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  COLM_CHECK(f != nullptr, tmp << ": cannot create: " << errno_text());
  bool ok = std::fwrite(prefix, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (size_t i : order) {
    if (!ok) break;
    const torch::Tensor& t = data[i];
    const size_t nbytes = static_cast<size_t>(t.numel()) * t.element_size();
    ok = nbytes == 0 || std::fwrite(t.data_ptr(), 1, nbytes, f) == nbytes;
  }
  ok = ok && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const std::string why = ok ? "" : errno_text();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error(path + ": writing failed: " + (why.empty() ? errno_text() : why));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = errno_text();
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename " + tmp + " into place: " + err);
  }
  spdlog::debug("[safetensors] wrote {} ({} tensors, {} data bytes)", path, tensors.size(), offset);
}

// ---------------------------------------------------------------------------------------------
// Checkpoint

namespace {

std::string read_text_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  COLM_CHECK(in, p.string() << ": cannot read: " << errno_text());
  std::ostringstream ss;
  ss << in.rdbuf();
  COLM_CHECK(!in.bad(), p.string() << ": read error");
  return ss.str();
}

nlohmann::json read_json_object(const fs::path& p) {
  const std::string text = read_text_file(p);
  nlohmann::json j = detail::parse_json_strict(text.data(), text.size(), p.string());
  COLM_CHECK(j.is_object(), p.string() << ": expected a JSON object, got " << detail::brief_json(j));
  return j;
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& dir) {
  const fs::path root(dir);
  COLM_CHECK(fs::is_directory(root), "checkpoint " << dir << ": not a directory");
  Checkpoint ck;
  ck.dir_ = dir;

  const fs::path config = root / "config.json";
  COLM_CHECK(fs::exists(config), "checkpoint " << dir << ": config.json is missing (a Hugging Face "
                                                  "checkpoint has config.json + model.safetensors or "
                                                  "model.safetensors.index.json)");
  ck.config_ = read_json_object(config);

  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  if (fs::exists(single)) {
    auto file = SafetensorsFile::open(single.string());
    for (const auto& [name, e] : file->header().tensors) ck.where_[name] = file;
  } else if (fs::exists(index)) {
    const std::string what = index.string();
    const nlohmann::json j = read_json_object(index);  // strict: a tensor listed twice is an error
    auto wm = j.find("weight_map");
    COLM_CHECK(wm != j.end() && wm->is_object(), what << ": \"weight_map\" (tensor -> shard file) is missing "
                                                         "or not an object");
    COLM_CHECK(!wm->empty(), what << ": \"weight_map\" is empty");
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
    for (const auto& [tensor, shard_json] : wm->items()) {
      COLM_CHECK(shard_json.is_string(), what << ": weight_map[\"" << tensor << "\"] must be a file name, got "
                                              << detail::brief_json(shard_json));
      const std::string shard = shard_json.get<std::string>();
      // Shards live beside the index; refuse paths that would read elsewhere.
      COLM_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
                 what << ": weight_map[\"" << tensor << "\"] = \"" << shard
                      << "\" is not a file name in the checkpoint directory");
      auto it = shards.find(shard);
      if (it == shards.end()) {
        const fs::path shard_path = root / shard;
        COLM_CHECK(fs::exists(shard_path), what << ": shard " << shard << " (holding \"" << tensor
                                                << "\") does not exist in " << dir);
        it = shards.emplace(shard, SafetensorsFile::open(shard_path.string())).first;
      }
      COLM_CHECK(it->second->has(tensor), what << ": the index puts \"" << tensor << "\" in " << shard
                                               << ", but that shard has no such tensor");
      ck.where_[tensor] = it->second;
    }
  } else {
    throw Error("checkpoint " + dir + ": neither model.safetensors nor model.safetensors.index.json exists");
  }
  spdlog::info("[checkpoint] {}: {} tensors, stored as {}", dir, ck.where_.size(), ck.stored_dtype());
  return ck;
}

bool Checkpoint::has(const std::string& name) const { return where_.count(name) > 0; }

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

namespace {
const std::shared_ptr<SafetensorsFile>& file_of(const std::map<std::string, std::shared_ptr<SafetensorsFile>>& where,
                                                const std::string& dir, const std::string& name) {
  auto it = where.find(name);
  COLM_CHECK(it != where.end(), "checkpoint " << dir << ": no tensor \"" << name << "\"");
  return it->second;
}
}  // namespace

const TensorEntry& Checkpoint::entry(const std::string& name) const {
  return file_of(where_, dir_, name)->header().tensors.at(name);
}

torch::Tensor Checkpoint::load(const std::string& name, torch::Dtype dtype) const {
  return file_of(where_, dir_, name)->load(name, dtype);
}

torch::Tensor Checkpoint::load_transposed(const std::string& name, torch::Dtype dtype) const {
  return file_of(where_, dir_, name)->load_transposed(name, dtype);
}

torch::Tensor Checkpoint::map(const std::string& name, torch::Dtype dtype) const {
  return file_of(where_, dir_, name)->map(name, dtype);
}

void Checkpoint::stream(const std::string& name, torch::Dtype dtype,
                        const std::function<void(const void*, size_t)>& sink) const {
  file_of(where_, dir_, name)->stream(name, dtype, sink);
}

bool Checkpoint::aliased(const std::string& name) const { return file_of(where_, dir_, name)->aliased(name); }
void Checkpoint::release(const std::string& name) const { file_of(where_, dir_, name)->release(name); }

std::string Checkpoint::stored_dtype() const {
  std::string dtype;
  for (const auto& [name, file] : where_) {
    const std::string& d = file->header().tensors.at(name).dtype;
    if (dtype.empty()) dtype = d;
    else if (dtype != d) return "mixed";
  }
  return dtype;
}

}  // namespace colm
