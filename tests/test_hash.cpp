// Content hashes: known SHA-1 vectors and field separation.
#include <catch2/catch.hpp>

#include "colm/hash.hpp"

TEST_CASE("sha1_hex matches the standard test vectors", "[core][hash]") {
  CHECK(colm::sha1_hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  CHECK(colm::sha1_hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d");
}

TEST_CASE("Hasher separates fields so concatenations do not collide", "[core][hash]") {
  CHECK(colm::Hasher().add("ab").add("c").hex() != colm::Hasher().add("a").add("bc").hex());
  CHECK(colm::Hasher().add(int64_t{1}).hex() == colm::Hasher().add(int64_t{1}).hex());
}
