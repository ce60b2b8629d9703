// Claims, DONE markers and polling for artifact directories (artifacts.hpp): no flock, so that
// shards on several machines sharing an NFS directory agree on who builds what.
#include "harness/artifacts.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include "colm/error.hpp"

namespace fs = std::filesystem;

namespace colm {
namespace {

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown-host";
  return buf;
}

fs::path claim_file(const fs::path& dir) { return fs::path(dir.string() + ".claim"); }

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// A claim whose holder ran on this host and no longer exists.
bool claim_is_stale(const std::string& holder) {
  std::istringstream in(holder);
  std::string host;
  long pid = 0;
  if (!(in >> host >> pid) || pid <= 0) return false;  // being written, or unreadable: assume alive
  if (host != host_name()) return false;
  return ::kill(pid_t(pid), 0) != 0 && errno == ESRCH;
}

std::string holder_text() { return host_name() + " " + std::to_string(::getpid()) + "\n"; }

// Removes a claim whose holder is gone, if it still names that holder. Only the process holding
// `<claim>.takeover` may do so: two processes that see the same dead claim at once must not both
// remove "it" (the second unlink would delete the claim the first one has just made, and both would
// build the artifact). Returns whether the stale claim is gone.
bool remove_stale_claim(const fs::path& file, const std::string& holder) {
  const auto lock = fs::path(file.string() + ".takeover");
  const int fd = ::open(lock.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno != EEXIST) throw Error("[artifacts] cannot create " + lock.string() + ": " + std::strerror(errno));
    // Another process is taking the claim over; if it died doing so, its lock goes for the next try.
    if (claim_is_stale(read_text(lock))) ::unlink(lock.c_str());
    return false;
  }
  const auto me = holder_text();
  const bool written = ::write(fd, me.data(), me.size()) == ssize_t(me.size());
  ::close(fd);
  const bool same = written && read_text(file) == holder;
  if (same) ::unlink(file.c_str());
  ::unlink(lock.c_str());
  return same;
}

}  // namespace

bool artifact_done(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / kArtifactDoneFile, ec);
}

void write_file_atomic(const fs::path& path, const std::string& text) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  const auto tmp = fs::path(path.string() + ".tmp." + host_name() + "." + std::to_string(::getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw Error("[artifacts] cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error("[artifacts] cannot rename " + tmp.string() + " to " + path.string());
  }
}

void mark_artifact_done(const fs::path& dir) { write_file_atomic(dir / kArtifactDoneFile, "ok\n"); }

std::optional<ArtifactClaim> ArtifactClaim::try_take(const fs::path& dir) {
  const auto file = claim_file(dir);
  if (file.has_parent_path()) fs::create_directories(file.parent_path());
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(file.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const auto holder = holder_text();
      const bool ok = ::write(fd, holder.data(), holder.size()) == ssize_t(holder.size());
      ::close(fd);
      if (!ok) {
        ::unlink(file.c_str());
        throw Error("[artifacts] cannot write claim file " + file.string());
      }
      return ArtifactClaim(file);
    }
    if (errno != EEXIST) throw Error("[artifacts] cannot create claim file " + file.string() + ": " + std::strerror(errno));
    const auto holder = read_text(file);
    if (attempt > 0 || !claim_is_stale(holder) || !remove_stale_claim(file, holder)) return std::nullopt;
    spdlog::warn("[artifacts] {}: its claim by '{}' was left by a process that no longer runs; taking it over",
                 dir.string(), holder);
  }
  return std::nullopt;
}

ArtifactClaim::ArtifactClaim(ArtifactClaim&& other) noexcept : file_(std::move(other.file_)) { other.file_.clear(); }

ArtifactClaim& ArtifactClaim::operator=(ArtifactClaim&& other) noexcept {
  if (this != &other) {
    if (!file_.empty()) ::unlink(file_.c_str());
    file_ = std::move(other.file_);
    other.file_.clear();
  }
  return *this;
}

ArtifactClaim::~ArtifactClaim() {
  if (!file_.empty()) ::unlink(file_.c_str());
}

double artifact_wait_seconds(double fallback_s) {
  if (const char* v = std::getenv("COLM_ARTIFACT_WAIT"); v && *v) {
    char* end = nullptr;
    const double s = std::strtod(v, &end);
    if (end && *end == '\0' && s >= 0) return s;
    throw Error(std::string("COLM_ARTIFACT_WAIT='") + v + "': expected a number of seconds >= 0");
  }
  return fallback_s;
}

namespace {

// Polls `ready` until it holds or timeout_s passes; returns whether it held.
template <class Ready>
bool poll_until(Ready ready, double timeout_s, const std::string& what) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto delay = std::chrono::milliseconds(200);
  auto next_log = start + std::chrono::seconds(30);
  while (!ready()) {
    const double waited = std::chrono::duration<double>(clock::now() - start).count();
    if (waited >= timeout_s) return false;
    if (clock::now() >= next_log) {
      spdlog::info("[artifacts] still waiting for {} ({:.0f} s of {:.0f} s)", what, waited, timeout_s);
      next_log = clock::now() + std::chrono::seconds(30);
    }
    std::this_thread::sleep_for(std::min(delay, std::chrono::milliseconds(int64_t(1000 * (timeout_s - waited)) + 1)));
    delay = std::min(delay * 2, std::chrono::milliseconds(5000));
  }
  return true;
}

std::string claim_note(const fs::path& dir) {
  const auto file = claim_file(dir);
  std::error_code ec;
  if (!fs::exists(file, ec)) return "nobody is building it";
  return "it is claimed by '" + read_text(file) + "' (" + file.string() +
         "; delete that file if its process is gone)";
}

}  // namespace

void wait_for_artifact(const fs::path& dir, const std::string& what, double timeout_s, const std::string& hint) {
  if (artifact_done(dir)) return;
  spdlog::info("[artifacts] waiting up to {:.0f} s for {} ({})", timeout_s, what, dir.string());
  if (poll_until([&] { return artifact_done(dir); }, timeout_s, what)) return;
  throw Error(fmt::format("[artifacts] {} is not ready after {:.0f} s: {} has no {} marker and {}. {}", what, timeout_s,
                          dir.string(), kArtifactDoneFile, claim_note(dir), hint));
}

std::optional<ArtifactClaim> claim_or_wait(const fs::path& dir, const std::string& what, double timeout_s) {
  std::optional<ArtifactClaim> claim;
  bool logged = false;
  const bool ready = poll_until(
      [&] {
        if (artifact_done(dir)) return true;
        claim = ArtifactClaim::try_take(dir);
        if (!claim) {
          if (!logged) spdlog::info("[artifacts] {} is being built by another process; waiting", what);
          logged = true;
          return false;
        }
        if (artifact_done(dir)) claim.reset();  // finished between the two checks
        return true;
      },
      timeout_s, what);
  if (!ready)
    throw Error(fmt::format("[artifacts] {} is not ready after {:.0f} s: {} has no {} marker and {}", what, timeout_s,
                            dir.string(), kArtifactDoneFile, claim_note(dir)));
  return claim;
}

}  // namespace colm
