// Content hashes (SHA-1 hex) for artifact keys, run identities and fingerprints.
#pragma once
#include <string>

#include "colm/error.hpp"

namespace colm {

COLM_VISIBLE std::string sha1_hex(const std::string& data);
// Hash of a file's bytes (streamed); throws colm::Error when it cannot be read.
COLM_VISIBLE std::string sha1_file(const std::string& path);

// Incremental hashing of several fields (each length-prefixed, so ("ab","c") != ("a","bc")).
class COLM_VISIBLE Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher& add(const std::string& field);
  Hasher& add(int64_t value);
  Hasher& add(double value);
  std::string hex() const;

 private:
  std::string buffer_;
};

}  // namespace colm
