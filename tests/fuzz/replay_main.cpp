// Replays fuzz inputs without libFuzzer: feeds each file named on the command line to
// LLVMFuzzerTestOneInput (fuzz_safetensors_header.cpp), so CTest checks the seed corpus with gcc.
// An invariant violation traps (non-zero exit); the fuzzing itself stays with clang (CMakeLists.txt).
// With --expect-valid every file must also parse (the seeds are valid files): a parser that starts
// refusing good headers fails here, not only one that crashes.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "colm/safetensors_header.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  int first = 1;
  const bool expect_valid = argc > 1 && std::string(argv[1]) == "--expect-valid";
  if (expect_valid) ++first;
  if (argc <= first) {
    std::fprintf(stderr, "usage: %s [--expect-valid] FILE...\n", argv[0]);
    return 2;
  }
  for (int i = first; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot read\n", argv[i]);
      return 2;
    }
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    size_t tensors = 0;
    if (expect_valid) {
      try {
        tensors = colm::parse_safetensors_header(bytes.data(), bytes.size(), bytes.size(), argv[i]).tensors.size();
      } catch (const colm::Error& e) {
        std::fprintf(stderr, "%s: refused, but it is a valid seed: %s\n", argv[i], e.what());
        return 1;
      }
    }
    std::printf("%s: %zu bytes, %zu tensors, ok\n", argv[i], bytes.size(), tensors);
  }
  return 0;
}
