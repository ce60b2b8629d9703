// SHA-1 content hashes through Boost's header-only implementation.
#include "colm/hash.hpp"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include <boost/uuid/detail/sha1.hpp>

namespace colm {
namespace {

std::string digest_hex(boost::uuids::detail::sha1& h) {
  boost::uuids::detail::sha1::digest_type d;
  h.get_digest(d);
  char out[41];
  for (int i = 0; i < 5; ++i) std::snprintf(out + 8 * i, 9, "%08x", d[i]);
  return std::string(out, 40);
}

}  // namespace

std::string sha1_hex(const std::string& data) {
  boost::uuids::detail::sha1 h;
  h.process_bytes(data.data(), data.size());
  return digest_hex(h);
}

std::string sha1_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  COLM_CHECK(in, "cannot read '" << path << "' to hash it");
  boost::uuids::detail::sha1 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.process_bytes(buf.data(), static_cast<size_t>(in.gcount()));
  }
  return digest_hex(h);
}

Hasher::Hasher() = default;
Hasher::~Hasher() = default;
Hasher& Hasher::add(const std::string& field) {
  buffer_ += std::to_string(field.size());
  buffer_ += ':';
  buffer_ += field;
  return *this;
}
Hasher& Hasher::add(int64_t value) { return add(std::to_string(value)); }
Hasher& Hasher::add(double value) {
  std::ostringstream os;
  os.precision(17);
  os << value;
  return add(os.str());
}
std::string Hasher::hex() const { return sha1_hex(buffer_); }

}  // namespace colm
