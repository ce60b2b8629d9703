// Artifact directories shared by processes that may run on different machines over NFS, without
// flock: a builder claims a directory by creating `<dir>.claim` exclusively, writes, then commits
// with a `DONE` marker renamed into place; everyone else polls for the marker with a timeout.
// What an artifact contains and how it is keyed is the runner's business (runner.cpp).
#pragma once
#include <filesystem>
#include <optional>
#include <string>

namespace colm {

// The marker that says an artifact directory is complete (written last, by atomic rename).
inline constexpr const char* kArtifactDoneFile = "DONE";

bool artifact_done(const std::filesystem::path& dir);
// Writes <dir>/DONE through a temporary file and rename(2): never seen half-written.
void mark_artifact_done(const std::filesystem::path& dir);
// Writes `text` to `path` through `<path>.tmp.<host>.<pid>` and rename(2), creating parent dirs.
void write_file_atomic(const std::filesystem::path& path, const std::string& text);

// An exclusive right to build one artifact directory: `<dir>.claim` created with O_EXCL (atomic on
// local file systems and NFSv3+), holding "host pid"; removed when the claim is destroyed. A claim
// left by a process that died on this host is taken over, by one process only (under
// `<dir>.claim.takeover`, also O_EXCL); one from another host is not (its owner cannot be checked
// from here): the waiter's timeout error names the file to delete.
class ArtifactClaim {
 public:
  // Takes the claim, or returns nullopt when another live process holds it.
  static std::optional<ArtifactClaim> try_take(const std::filesystem::path& dir);
  ArtifactClaim(ArtifactClaim&& other) noexcept;
  ArtifactClaim& operator=(ArtifactClaim&& other) noexcept;
  ArtifactClaim(const ArtifactClaim&) = delete;
  ~ArtifactClaim();

 private:
  explicit ArtifactClaim(std::filesystem::path file) : file_(std::move(file)) {}
  std::filesystem::path file_;
};

// How long a process waits for an artifact another process builds: COLM_ARTIFACT_WAIT seconds when
// set (a number >= 0), else `fallback_s`.
double artifact_wait_seconds(double fallback_s);

// Waits until <dir>/DONE exists, polling (0.2 s at first, up to 5 s apart). After timeout_s a
// colm::Error names the artifact (`what`), the directory, who holds its claim (if anyone) and `hint`.
void wait_for_artifact(const std::filesystem::path& dir, const std::string& what, double timeout_s,
                       const std::string& hint);

// The builder's side: nullopt when the artifact is DONE (perhaps after waiting for the process that
// claimed it), else the claim under which the caller builds it and then calls mark_artifact_done.
std::optional<ArtifactClaim> claim_or_wait(const std::filesystem::path& dir, const std::string& what,
                                           double timeout_s);

}  // namespace colm
