// The plugin registry: opens lib*.so files with Boost.DLL, checks API version and build fingerprint,
// refuses bad files with a reason, and creates contract-checked objects that keep their library loaded.
#include "plugin/registry.hpp"

#include <dlfcn.h>
#include <elf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>

#include <boost/dll/shared_library.hpp>
#include <spdlog/spdlog.h>

#include "plugin/checked.hpp"

namespace fs = std::filesystem;

namespace colm {

namespace {

using Library = boost::dll::shared_library;

constexpr const char* kInfoSymbol = BOOST_STRINGIZE(COLM_PLUGIN_INFO_SYMBOL);
constexpr const char* kFactorySymbol = BOOST_STRINGIZE(COLM_PLUGIN_FACTORY_SYMBOL);

// Every library this process opened stays open until the process ends, on purpose: a plugin's
// code can be referenced from places no registry controls (autograd nodes and tensor deleters held
// by libtorch, thread_local destructors, function-local statics registered with atexit, objects
// owned by other static objects). dlclose()-ing it during static destruction, in whatever order the
// runtime picks, turns those into calls into unmapped memory. So the handles are leaked here, and the
// holder itself is never destroyed. Objects additionally hold their library through their deleter,
// which keeps them correct even if this policy changes.
std::mutex& keep_mutex() {
  static auto* m = new std::mutex();
  return *m;
}
void keep_forever(const std::shared_ptr<Library>& lib) {
  static auto* kept = new std::vector<std::shared_ptr<Library>>();
  std::lock_guard<std::mutex> lock(keep_mutex());
  kept->push_back(lib);
}

std::string canonical_or_same(const std::string& path) {
  std::error_code ec;
  auto c = fs::weakly_canonical(fs::absolute(path, ec), ec);
  return ec ? path : c.string();
}

bool valid_kind(int k) { return k >= 1 && k <= 3; }

std::string safe_str(const char* s) { return s ? std::string(s) : std::string("<null>"); }

// dlopen() maps an ELF file's segments as the headers describe them; a truncated library (a copy
// cut short, a half-written build output) maps pages past the end of the file and the first touch
// is a SIGBUS inside the loader. So the ranges are checked against the file size before dlopen.
// Files that are not 64-bit ELF are left to dlopen, whose own messages are clear and safe.
std::string elf_truncation_problem(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  Elf64_Ehdr eh{};
  if (size < sizeof eh || !in.read(reinterpret_cast<char*>(&eh), sizeof eh)) return "";
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64) return "";
  auto beyond = [&](uint64_t offset, uint64_t length) { return offset > size || length > size - offset; };
  auto describe = [&](const std::string& what, uint64_t offset, uint64_t length) {
    return "truncated ELF file: " + what + " spans bytes " + std::to_string(offset) + ".." +
           std::to_string(offset + length) + " but the file has " + std::to_string(size) + " bytes";
  };
  if (eh.e_phentsize != sizeof(Elf64_Phdr) && eh.e_phnum > 0) return "malformed ELF file: unexpected program header size";
  const uint64_t ph_bytes = uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr);
  if (beyond(eh.e_phoff, ph_bytes)) return describe("the program header table", eh.e_phoff, ph_bytes);
  if (eh.e_shnum > 0 && beyond(eh.e_shoff, uint64_t{eh.e_shnum} * eh.e_shentsize)) {
    return describe("the section header table", eh.e_shoff, uint64_t{eh.e_shnum} * eh.e_shentsize);
  }
  std::vector<Elf64_Phdr> ph(eh.e_phnum);
  in.seekg(static_cast<std::streamoff>(eh.e_phoff));
  if (!ph.empty() && !in.read(reinterpret_cast<char*>(ph.data()), static_cast<std::streamsize>(ph_bytes))) {
    return "unreadable ELF program headers";
  }
  for (size_t i = 0; i < ph.size(); ++i) {
    if (ph[i].p_type != PT_LOAD && ph[i].p_type != PT_DYNAMIC) continue;
    if (beyond(ph[i].p_offset, ph[i].p_filesz)) {
      return describe("segment " + std::to_string(i), ph[i].p_offset, ph[i].p_filesz);
    }
  }
  return "";
}

}  // namespace

struct Registry::Impl {
  struct Entry {
    LoadedPlugin plugin;
    std::string canonical_path;
    std::shared_ptr<Library> library;
    void* factory = nullptr;  // ExpertFactory*, PolicyFactory* or TaskFactory*, by plugin.kind
  };
  mutable std::mutex mutex;
  std::vector<Entry> entries;
  std::vector<LoadedPlugin> loaded;
  std::vector<RefusedPlugin> refused;

  const Entry* find(PluginKind kind, const std::string& name) const {
    for (const auto& e : entries) {
      if (e.plugin.kind == kind && e.plugin.name == name) return &e;
    }
    return nullptr;
  }
  void refuse(const std::string& path, const std::string& reason) {
    spdlog::warn("[plugin] {}: {}", path, reason);
    refused.push_back(RefusedPlugin{path, reason});
  }
};

namespace {

// The checks shared by inspect() and load_file(). On success `library` and `factory` are set.
PluginInspection inspect_impl(const std::string& path, std::shared_ptr<Library>* library, void** factory) {
  PluginInspection r;
  r.path = path;
  auto fail = [&](const std::string& check, const std::string& detail, const std::string& reason) {
    r.checks.push_back(PluginCheck{check, false, detail});
    r.accepted = false;
    r.reason = reason;
    return r;
  };

  // 1. A regular, readable file. symlink_status first so a dangling link is named as such.
  std::error_code ec;
  const auto lst = fs::symlink_status(path, ec);
  if (ec || !fs::exists(lst)) return fail("file", "no such file", "no such file");
  const auto st = fs::status(path, ec);
  if (fs::is_symlink(lst) && (ec || !fs::exists(st))) {
    return fail("file", "dangling symbolic link", "not a regular file: dangling symbolic link");
  }
  if (!fs::is_regular_file(st)) {
    const std::string what = fs::is_directory(st) ? "a directory" : "not a regular file (device, socket or fifo)";
    return fail("file", what, "not a regular file: " + what);
  }
  if (::access(path.c_str(), R_OK) != 0) {
    const std::string why = std::strerror(errno);
    return fail("file", "not readable: " + why, "not readable: " + why);
  }
  r.checks.push_back(PluginCheck{"file", true, "regular file, readable"});

  // 2. A shared library. A raw dlopen first, only for dlerror()'s text: Boost.DLL reports every
  // failure as "bad file descriptor", which tells the user nothing. The object is then opened
  // (reference-counted, so it is the same mapping) through Boost.DLL with the same flags.
  {
    if (const auto problem = elf_truncation_problem(path); !problem.empty()) {
      return fail("shared library", problem, "not a loadable shared library: " + problem);
    }
    ::dlerror();
    void* raw = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!raw) {
      const char* err = ::dlerror();
      std::string text = err ? err : "dlopen failed";
      // dlerror repeats the path; drop it so the reason reads "<path>: not a shared library: ...".
      const std::string prefix = path + ": ";
      if (text.rfind(prefix, 0) == 0) text = text.substr(prefix.size());
      return fail("shared library", text, "not a loadable shared library: " + text);
    }
    auto lib = std::make_shared<Library>();
    boost::dll::fs::error_code bec;
    lib->load(boost::dll::fs::path(path), boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, bec);
    ::dlclose(raw);
    if (bec || !lib->is_loaded()) {
      return fail("shared library", bec.message(), "not a loadable shared library: " + bec.message());
    }
    keep_forever(lib);
    *library = lib;
  }
  r.checks.push_back(PluginCheck{"shared library", true, "dlopen(RTLD_NOW | RTLD_LOCAL) succeeded"});

  // 3. Both exported symbols.
  std::vector<std::string> missing;
  if (!(*library)->has(kInfoSymbol)) missing.push_back(kInfoSymbol);
  if (!(*library)->has(kFactorySymbol)) missing.push_back(kFactorySymbol);
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    const std::string detail = "missing " + list + " (a plugin exports both with COLM_PLUGIN(...))";
    return fail("symbols", detail, "not a colm plugin: " + detail);
  }
  r.checks.push_back(PluginCheck{"symbols", true, std::string(kInfoSymbol) + ", " + kFactorySymbol});

  // 4. API version. Only the first int of PluginInfo is read before the version is known to match:
  // the rest of the layout is only trusted for the version the core was compiled with.
  const PluginInfo* info = nullptr;
  try {
    auto& info_fn = (*library)->get_alias<PluginInfoFunction>(kInfoSymbol);
    info = info_fn();
  } catch (const std::exception& e) {
    return fail("API version", std::string("colm_plugin_info failed: ") + e.what(),
                std::string("colm_plugin_info failed: ") + e.what());
  }
  if (!info) return fail("API version", "colm_plugin_info returned null", "colm_plugin_info returned null");
  const PluginInfo core = core_build_info();
  r.api_version = info->api_version;
  if (info->api_version != core.api_version) {
    const std::string what = "incompatible API version (plugin " + std::to_string(info->api_version) + ", core " +
                             std::to_string(core.api_version) + ")";
    return fail("API version", "plugin " + std::to_string(info->api_version) + ", core " + std::to_string(core.api_version),
                what);
  }
  r.checks.push_back(PluginCheck{"API version", true, "plugin " + std::to_string(info->api_version) + ", core " +
                                                          std::to_string(core.api_version)});
  r.info_read = true;
  r.kind = static_cast<int>(info->kind);
  r.name = info->name ? info->name : "";
  r.version = info->version ? info->version : "";
  r.compiler = safe_str(info->compiler);
  r.cxx11_abi = info->cxx11_abi;
  r.torch_version = safe_str(info->torch_version);

  // 5. Build fingerprint: one libtorch and one libstdc++ ABI per process, so every field must match.
  std::vector<std::string> diffs;
  if (r.compiler != core.compiler) diffs.push_back("compiler (plugin " + r.compiler + ", core " + core.compiler + ")");
  if (r.cxx11_abi != core.cxx11_abi) {
    diffs.push_back("C++11 ABI flag (plugin " + std::to_string(r.cxx11_abi) + ", core " + std::to_string(core.cxx11_abi) + ")");
  }
  if (r.torch_version != core.torch_version) {
    diffs.push_back("Torch version (plugin " + r.torch_version + ", core " + core.torch_version + ")");
  }
  if (!diffs.empty()) {
    std::string list;
    for (const auto& d : diffs) list += (list.empty() ? "" : "; ") + d;
    return fail("fingerprint", list, "incompatible build: " + list);
  }
  r.checks.push_back(PluginCheck{"fingerprint", true, "compiler " + r.compiler + ", C++11 ABI flag " +
                                                          std::to_string(r.cxx11_abi) + ", Torch " + r.torch_version +
                                                          " (same as core)"});

  // 6. Kind.
  if (!valid_kind(r.kind)) {
    const std::string d = "unknown plugin kind " + std::to_string(r.kind) + " (expected expert, policy or task)";
    return fail("kind", d, d);
  }
  r.checks.push_back(PluginCheck{"kind", true, to_string(static_cast<PluginKind>(r.kind))});

  // 7. A usable name.
  if (r.name.empty()) return fail("name", "empty plugin name", "empty plugin name");
  r.checks.push_back(PluginCheck{"name", true, r.name + " " + r.version});

  *factory = reinterpret_cast<void*>(&(*library)->get_alias<void()>(kFactorySymbol));
  r.accepted = true;
  return r;
}

std::string available_list(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

Registry::Registry() : impl_(std::make_unique<Impl>()) {}
Registry::~Registry() = default;

std::vector<std::string> Registry::default_dirs(const std::vector<std::string>& extra, const std::string& argv0) {
  std::error_code ec;
  fs::path exe;
  if (!argv0.empty() && argv0.find('/') != std::string::npos) exe = fs::weakly_canonical(fs::absolute(argv0, ec), ec);
  // A bare argv0 was found through PATH; /proc/self/exe names the real file in both cases.
  if (exe.empty() || ec) exe = fs::read_symlink("/proc/self/exe", ec);
  struct Candidate {
    std::string dir;
    bool explicit_;  // the user asked for it: warn when missing
  };
  std::vector<Candidate> candidates;
  if (!exe.empty()) {
    const auto bin = exe.parent_path();
    candidates.push_back({(bin / ".." / "plugins").lexically_normal().string(), false});
    candidates.push_back({(bin / ".." / "lib" / "colm" / "plugins").lexically_normal().string(), false});
  }
  if (const char* env = std::getenv("COLM_PLUGIN_PATH")) {
    std::stringstream ss(env);
    std::string item;
    while (std::getline(ss, item, ':')) {
      if (!item.empty()) candidates.push_back({item, true});
    }
  }
  for (const auto& e : extra) candidates.push_back({e, true});

  std::vector<std::string> dirs;
  std::set<std::string> seen;
  for (const auto& c : candidates) {
    if (!fs::is_directory(c.dir, ec)) {
      if (c.explicit_) {
        spdlog::warn("[plugin] plugin directory {} does not exist; skipped", c.dir);
      } else {
        spdlog::debug("[plugin] default plugin directory {} does not exist; skipped", c.dir);
      }
      continue;
    }
    const auto key = canonical_or_same(c.dir);
    if (seen.insert(key).second) dirs.push_back(c.dir);
  }
  return dirs;
}

void Registry::scan(const std::vector<std::string>& dirs) {
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      spdlog::debug("[plugin] {} is not a directory; skipped", dir);
      continue;
    }
    std::vector<std::string> files;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const auto name = it->path().filename().string();
      if (name.size() > 6 && name.rfind("lib", 0) == 0 && name.compare(name.size() - 3, 3, ".so") == 0) {
        files.push_back(it->path().string());
      }
    }
    if (ec) spdlog::warn("[plugin] cannot list plugin directory {}: {}", dir, ec.message());
    // Sorted, so "first wins" between duplicate names does not depend on the file system's order.
    std::sort(files.begin(), files.end());
    spdlog::debug("[plugin] scanning {} ({} candidate files)", dir, files.size());
    for (const auto& f : files) load_file(f);
  }
}

PluginInspection Registry::inspect(const std::string& path) {
  std::shared_ptr<Library> lib;
  void* factory = nullptr;
  return inspect_impl(path, &lib, &factory);
}

bool Registry::load_file(const std::string& path) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const auto canonical = canonical_or_same(path);
  for (const auto& e : impl_->entries) {
    if (e.canonical_path == canonical) return true;  // the same file reached twice (e.g. a symlinked dir)
  }
  std::shared_ptr<Library> lib;
  void* factory = nullptr;
  const auto r = inspect_impl(path, &lib, &factory);
  if (!r.accepted) {
    // The exact line the design asks for; refuse() logs the rest the same way ("<path>: <reason>").
    impl_->refuse(path, r.reason);
    return false;
  }
  const auto kind = static_cast<PluginKind>(r.kind);
  if (const auto* first = impl_->find(kind, r.name)) {
    impl_->refuse(path, std::string("duplicate ") + to_string(kind) + " plugin '" + r.name + "': already loaded from " +
                            first->plugin.path);
    return false;
  }
  Impl::Entry e;
  e.plugin = LoadedPlugin{kind, r.name, r.version, path};
  e.canonical_path = canonical;
  e.library = lib;
  e.factory = factory;
  impl_->entries.push_back(e);
  impl_->loaded.push_back(e.plugin);
  spdlog::debug("[plugin] loaded {} plugin {} {} from {}", to_string(kind), r.name, r.version, path);
  return true;
}

const std::vector<LoadedPlugin>& Registry::loaded() const { return impl_->loaded; }
const std::vector<RefusedPlugin>& Registry::refused() const { return impl_->refused; }

bool Registry::has(PluginKind kind, const std::string& name) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->find(kind, name) != nullptr;
}

std::vector<std::string> Registry::names(PluginKind kind) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  std::vector<std::string> out;
  for (const auto& e : impl_->entries) {
    if (e.plugin.kind == kind) out.push_back(e.plugin.name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string Registry::path_of(PluginKind kind, const std::string& name) const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  const auto* e = impl_->find(kind, name);
  return e ? e->plugin.path : std::string();
}

namespace {

// Finds the entry or throws the "unknown plugin" error listing what is available.
template <typename EntryT>
const EntryT& require_entry(const EntryT* e, PluginKind kind, const std::string& name,
                            const std::vector<std::string>& available) {
  if (!e) {
    if (available.empty()) {
      throw Error(std::string("[plugin] unknown ") + to_string(kind) + " plugin '" + name + "': no " + to_string(kind) +
                  " plugins are loaded (see `colm plugins`; add directories with --plugin-dir or COLM_PLUGIN_PATH)");
    }
    throw Error(std::string("[plugin] unknown ") + to_string(kind) + " plugin '" + name +
                "'; available: " + available_list(available));
  }
  return *e;
}

// Calls a factory, translating anything it throws into colm::Error (ConfigError stays a ConfigError,
// so the CLI still exits 2 and the message keeps its file:line:column).
template <typename T, typename F>
std::unique_ptr<T> call_factory(F* factory, const std::string& name, const std::string& path, const ConfigView& config,
                                const PluginContext& ctx) {
  const std::string prefix = "[plugin] " + name + " (" + path + "): factory failed: ";
  std::unique_ptr<T> obj;
  try {
    obj = factory(config, ctx);
  } catch (const ConfigError& e) {
    throw ConfigError(prefix + e.what());
  } catch (const std::exception& e) {
    throw Error(prefix + e.what());
  } catch (...) {
    throw Error(prefix + "unknown exception");
  }
  if (!obj) throw Error("[plugin] " + name + " (" + path + "): factory returned no object");
  return obj;
}

// The deleter holds the library: the object's code (its vtable, its destructor) stays mapped for as
// long as the object lives, whatever happens to the registry that made it.
template <typename T>
std::shared_ptr<T> hold_library(std::unique_ptr<T> obj, std::shared_ptr<Library> lib) {
  return std::shared_ptr<T>(obj.release(), [lib = std::move(lib)](T* p) { delete p; });
}

}  // namespace

std::shared_ptr<Expert> Registry::create_expert(const std::string& name, const ConfigView& config,
                                                const PluginContext& ctx) const {
  Impl::Entry entry;
  {
    const auto available = names(PluginKind::expert);
    std::lock_guard<std::mutex> lock(impl_->mutex);
    entry = require_entry(impl_->find(PluginKind::expert, name), PluginKind::expert, name, available);
  }
  auto obj = call_factory<Expert>(reinterpret_cast<ExpertFactory*>(entry.factory), name, entry.plugin.path, config, ctx);
  return hold_library<Expert>(make_checked_expert(std::move(obj), name), entry.library);
}

std::shared_ptr<DeferralPolicy> Registry::create_policy(const std::string& name, const ConfigView& config,
                                                        const PluginContext& ctx) const {
  Impl::Entry entry;
  {
    const auto available = names(PluginKind::policy);
    std::lock_guard<std::mutex> lock(impl_->mutex);
    entry = require_entry(impl_->find(PluginKind::policy, name), PluginKind::policy, name, available);
  }
  auto obj = call_factory<DeferralPolicy>(reinterpret_cast<PolicyFactory*>(entry.factory), name, entry.plugin.path,
                                          config, ctx);
  return hold_library<DeferralPolicy>(make_checked_policy(std::move(obj), name, ctx.num_assistants), entry.library);
}

std::shared_ptr<Task> Registry::create_task(const std::string& name, const ConfigView& config,
                                            const PluginContext& ctx) const {
  Impl::Entry entry;
  {
    const auto available = names(PluginKind::task);
    std::lock_guard<std::mutex> lock(impl_->mutex);
    entry = require_entry(impl_->find(PluginKind::task, name), PluginKind::task, name, available);
  }
  auto obj = call_factory<Task>(reinterpret_cast<TaskFactory*>(entry.factory), name, entry.plugin.path, config, ctx);
  return hold_library<Task>(std::move(obj), entry.library);
}

Registry& default_registry() {
  // Never destroyed: objects created from it may live in other static objects, destroyed in any order.
  static Registry* registry = [] {
    auto* r = new Registry();
    r->scan(Registry::default_dirs({}));
    return r;
  }();
  return *registry;
}

}  // namespace colm
