// Safetensors reader/writer and checkpoint directories: round trips, every header validation rule
// (with its message), and the shared model fixtures (fp32, and bf16 sharded through the index).
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <torch/torch.h>

#include "colm/safetensors.hpp"
#include "support.hpp"

namespace fs = std::filesystem;
using Catch::Contains;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int b = 0; b < 8; ++b) s[b] = static_cast<char>((v >> (8 * b)) & 0xff);
  return s;
}

// A hand-made file: correct length prefix (unless overridden), the header text, data_bytes zeros.
std::string make_file(const std::string& dir, const std::string& header, size_t data_bytes,
                      std::optional<uint64_t> prefix = std::nullopt, const std::string& name = "t.safetensors") {
  const std::string path = dir + "/" + name;
  write_bytes(path, le64(prefix ? *prefix : header.size()) + header + std::string(data_bytes, '\0'));
  return path;
}

// A file whose F32 tensor "x" = {1.5, -3.25} starts at data offset 2 (the header is padded so that
// the data section itself is 8-aligned): its values are not aligned for float.
std::string unaligned_file(const std::string& dir) {
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  const float values[2] = {1.5f, -3.25f};
  std::string data(2, '\0');
  data.append(reinterpret_cast<const char*>(values), sizeof(values));
  const std::string path = dir + "/u.safetensors";
  write_bytes(path, le64(header.size()) + header + data);
  return path;
}

}  // namespace

TEST_CASE("save_safetensors round-trips F32, F16, BF16, I64 and I32 with metadata", "[core][safetensors]") {
  const std::string dir = colm::test::temp_dir("st-roundtrip");
  const std::string path = dir + "/m.safetensors";
  torch::manual_seed(7);
  const auto f32 = torch::randn({3, 5});
  const auto f16 = torch::randn({4}).to(torch::kFloat16);
  const auto bf16 = torch::randn({2, 3, 2}).to(torch::kBFloat16);
  const auto i64 = torch::arange(-3, 4, torch::kInt64);
  const auto i32 = torch::tensor({7, -8, 1 << 30}, torch::kInt32);
  const auto scalar = torch::tensor(2.5f).reshape({});
  // Given out of order and non-contiguous: stored sorted by name, contiguous.
  colm::save_safetensors(path,
                         {{"z.f32", f32.t()}, {"b.bf16", bf16}, {"a.i64", i64}, {"c.f16", f16},
                          {"d.i32", i32}, {"s", scalar}},
                         {{"format", "pt"}, {"note", "round trip"}});

  auto file = colm::SafetensorsFile::open(path);
  const auto& h = file->header();
  CHECK(h.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"note", "round trip"}});
  CHECK(h.tensors.size() == 6);
  CHECK(h.tensors.at("b.bf16").dtype == "BF16");
  CHECK(h.tensors.at("c.f16").dtype == "F16");
  CHECK(h.tensors.at("a.i64").dtype == "I64");
  CHECK(h.tensors.at("d.i32").dtype == "I32");
  CHECK(h.tensors.at("z.f32").shape == std::vector<int64_t>{5, 3});
  CHECK(h.tensors.at("s").shape.empty());

  // The data section starts 8-byte aligned and the file is exactly prefix + header + data.
  CHECK((8 + h.header_size) % 8 == 0);
  const std::string bytes = read_bytes(path);
  uint64_t data_total = 0;
  for (const auto& [name, e] : h.tensors) data_total += e.end - e.begin;
  CHECK(bytes.size() == 8 + h.header_size + data_total);
  CHECK(bytes.substr(8, 16) == "{\"__metadata__\":");

  // Offsets follow name order with no gaps.
  uint64_t expected_begin = 0;
  for (const auto& [name, e] : h.tensors) {  // std::map iterates in name order
    CHECK(e.begin == expected_begin);
    expected_begin = e.end;
  }

  CHECK(torch::equal(file->load("z.f32"), f32.t()));
  CHECK(torch::equal(file->load("a.i64", torch::kInt64), i64));
  CHECK(torch::equal(file->load("d.i32", torch::kInt32), i32));
  CHECK(file->load("s").item<float>() == 2.5f);
  // Half types upcast exactly, and can be read back in their own dtype.
  CHECK(torch::equal(file->load("c.f16"), f16.to(torch::kFloat32)));
  CHECK(torch::equal(file->load("b.bf16"), bf16.to(torch::kFloat32)));
  CHECK(file->load("b.bf16", torch::kBFloat16).scalar_type() == torch::kBFloat16);
  CHECK(torch::equal(file->load("b.bf16", torch::kBFloat16), bf16));

  // Loaded tensors own their memory: they outlive the mapping and are writable.
  auto kept = file->load("z.f32", torch::kFloat32);
  file.reset();
  kept.add_(1.0);
  CHECK(torch::allclose(kept, f32.t() + 1.0));
  // Saving over an existing file replaces it and leaves no temp file behind.
  colm::save_safetensors(path, {{"only", torch::ones({2})}});
  CHECK(colm::SafetensorsFile::open(path)->header().tensors.size() == 1);
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 1);
}

TEST_CASE("save_safetensors refuses bad input before writing", "[core][safetensors]") {
  const std::string dir = colm::test::temp_dir("st-save-bad");
  const std::string path = dir + "/m.safetensors";
  CHECK_THROWS_WITH(colm::save_safetensors(path, {{"a", torch::ones({1})}, {"a", torch::ones({1})}}),
                    Contains("\"a\" given twice"));
  CHECK_THROWS_WITH(colm::save_safetensors(path, {{"__metadata__", torch::ones({1})}}), Contains("reserved"));
  CHECK_THROWS_WITH(colm::save_safetensors(path, {{"c", torch::ones({1}, torch::kComplexFloat)}}),
                    Contains("cannot store"));
  CHECK_THROWS_WITH(colm::save_safetensors(dir + "/missing/m.safetensors", {{"a", torch::ones({1})}}),
                    Contains("does not exist"));
  CHECK_FALSE(fs::exists(path));
}

TEST_CASE("unaligned data offsets are loaded correctly", "[core][safetensors]") {
  const std::string dir = colm::test::temp_dir("st-unaligned");
  const std::string path = unaligned_file(dir);
  auto file = colm::SafetensorsFile::open(path);
  const auto t = file->load("x");
  CHECK(t[0].item<float>() == 1.5f);
  CHECK(t[1].item<float>() == -3.25f);
  CHECK(torch::equal(file->load("x", torch::kFloat64), torch::tensor({1.5, -3.25}, torch::kFloat64)));
}

TEST_CASE("malformed safetensors files give errors naming the file and the tensor", "[core][safetensors]") {
  const std::string dir = colm::test::temp_dir("st-bad");
  auto open = [](const std::string& p) { return colm::SafetensorsFile::open(p); };

  SECTION("empty file") {
    const std::string p = dir + "/empty.safetensors";
    write_bytes(p, "");
    CHECK_THROWS_WITH(open(p), Contains(p) && Contains("too short for the 8-byte header length"));
  }
  SECTION("file shorter than the length prefix") {
    const std::string p = dir + "/short.safetensors";
    write_bytes(p, "abc");
    CHECK_THROWS_WITH(open(p), Contains("3 bytes, too short"));
  }
  SECTION("missing file") {
    CHECK_THROWS_WITH(open(dir + "/nope.safetensors"), Contains("nope.safetensors") && Contains("cannot open"));
  }
  SECTION("header length larger than the file") {
    const auto p = make_file(dir, R"({})", 0, uint64_t{1000});
    CHECK_THROWS_WITH(open(p), Contains("header length 1000 is larger than the file (10 bytes)"));
  }
  SECTION("header length above the 100 MB limit") {
    const auto p = make_file(dir, R"({})", 0, uint64_t{1} << 40);
    CHECK_THROWS_WITH(open(p), Contains("exceeds the 100000000-byte limit"));
  }
  SECTION("bad header JSON") {
    const auto p = make_file(dir, R"({"x":{"dtype":"F32",)", 0);
    CHECK_THROWS_WITH(open(p), Contains(p) && Contains("invalid JSON"));
  }
  SECTION("header is not an object") {
    const auto p = make_file(dir, R"([1,2,3])", 0);
    CHECK_THROWS_WITH(open(p), Contains("the header must be a JSON object, got [1,2,3]"));
  }
  SECTION("tensor info is not an object") {
    const auto p = make_file(dir, R"({"w":7})", 0);
    CHECK_THROWS_WITH(open(p), Contains("tensor \"w\": expected an object"));
  }
  SECTION("metadata must map strings to strings") {
    const auto p = make_file(dir, R"({"__metadata__":{"format":1}})", 0);
    CHECK_THROWS_WITH(open(p), Contains("\"__metadata__\" value of \"format\" must be a string"));
    const auto q = make_file(dir, R"({"__metadata__":[]})", 0, std::nullopt, "q.safetensors");
    CHECK_THROWS_WITH(open(q), Contains("\"__metadata__\" must be an object"));
  }
  SECTION("a tensor listed twice") {
    const auto p = make_file(dir,
                             R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                             2);
    CHECK_THROWS_WITH(open(p), Contains("key \"w\" appears twice"));
  }
  SECTION("unknown and unsupported dtypes") {
    const auto p = make_file(dir, R"({"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}})", 1);
    CHECK_THROWS_WITH(open(p), Contains("tensor \"w\"") && Contains("unknown dtype \"Q4_K\""));
    const auto q = make_file(dir, R"({"w":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}})", 1,
                             std::nullopt, "q.safetensors");
    CHECK_THROWS_WITH(open(q), Contains("dtype F8_E4M3 is not supported"));
    const auto r = make_file(dir, R"({"w":{"dtype":5,"shape":[1],"data_offsets":[0,1]}})", 1,
                             std::nullopt, "r.safetensors");
    CHECK_THROWS_WITH(open(r), Contains("\"dtype\" must be a string"));
  }
  SECTION("missing fields") {
    const auto p = make_file(dir, R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4);
    CHECK_THROWS_WITH(open(p), Contains("tensor \"w\": missing \"shape\""));
    const auto q = make_file(dir, R"({"w":{"dtype":"F32","shape":[1]}})", 4, std::nullopt, "q.safetensors");
    CHECK_THROWS_WITH(open(q), Contains("tensor \"w\": missing \"data_offsets\""));
  }
  SECTION("negative, fractional and huge shapes") {
    const auto p = make_file(dir, R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,4]}})", 4);
    CHECK_THROWS_WITH(open(p), Contains("tensor \"w\": shape[1] must be a non-negative integer, got -1"));
    const auto q = make_file(dir, R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4,
                             std::nullopt, "q.safetensors");
    CHECK_THROWS_WITH(open(q), Contains("shape[0] must be a non-negative integer, got 1.5"));
    // 2^32 * 2^32 overflows uint64.
    const auto r = make_file(dir, R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
                             4, std::nullopt, "r.safetensors");
    CHECK_THROWS_WITH(open(r), Contains("tensor \"w\"") && Contains("overflows the element count"));
    // 2^62 elements fit int64 but not 2^62 * 4 bytes.
    const auto s = make_file(dir, R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})",
                             4, std::nullopt, "s.safetensors");
    CHECK_THROWS_WITH(open(s), Contains("overflows the byte count"));
    const auto t = make_file(dir, R"({"w":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,4]}})",
                             4, std::nullopt, "t.safetensors");
    CHECK_THROWS_WITH(open(t), Contains("shape[0] = 18446744073709551615 is too large"));
  }
  SECTION("offsets out of range") {
    const auto p = make_file(dir, R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4);
    CHECK_THROWS_WITH(open(p), Contains("tensor \"w\": data_offsets end 8 is past the end of the data section (4 bytes)"));
  }
  SECTION("offsets reversed or malformed") {
    const auto p = make_file(dir, R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", 4);
    CHECK_THROWS_WITH(open(p), Contains("data_offsets begin 4 > end 0"));
    const auto q = make_file(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 8,
                             std::nullopt, "q.safetensors");
    CHECK_THROWS_WITH(open(q), Contains("\"data_offsets\" must be [begin, end]"));
    const auto r = make_file(dir, R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 8,
                             std::nullopt, "r.safetensors");
    CHECK_THROWS_WITH(open(r), Contains("data_offsets must be non-negative integers"));
  }
  SECTION("byte count does not match shape x dtype") {
    const auto p = make_file(dir, R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", 8);
    CHECK_THROWS_WITH(open(p), Contains("tensor \"w\": data_offsets cover 8 bytes but dtype BF16 with shape [3] needs 6"));
  }
  SECTION("overlapping tensors") {
    const auto p = make_file(dir,
                             R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             12);
    CHECK_THROWS_WITH(open(p), Contains("tensors \"a\" [0, 8) and \"b\" [4, 12) overlap"));
  }
  SECTION("truncated file") {
    const std::string good = dir + "/good.safetensors";
    colm::save_safetensors(good, {{"w", torch::ones({4, 4})}});
    const std::string bytes = read_bytes(good);
    const std::string p = dir + "/cut.safetensors";
    write_bytes(p, bytes.substr(0, bytes.size() - 5));
    CHECK_THROWS_WITH(open(p), Contains(p) && Contains("tensor \"w\"") && Contains("past the end of the data section"));
    // Cut inside the header: the length prefix now points past the end.
    write_bytes(p, bytes.substr(0, 20));
    CHECK_THROWS_WITH(open(p), Contains("is larger than the file (20 bytes)"));
  }
  SECTION("BOOL bytes other than 0 and 1 are refused at load") {
    const std::string header = R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})";
    const std::string p = dir + "/bool.safetensors";
    write_bytes(p, le64(header.size()) + header + std::string("\x01\x00\x02", 3));
    auto file = open(p);
    CHECK_THROWS_WITH(file->load("m", torch::kBool), Contains("tensor \"m\": BOOL byte 2 has value 2"));
    CHECK_THROWS_WITH(file->load("nope"), Contains("no tensor \"nope\""));
  }
}

TEST_CASE("a zero-element tensor and gaps between tensors are accepted", "[core][safetensors]") {
  const std::string dir = colm::test::temp_dir("st-edge");
  const auto p = make_file(dir,
                           R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},)"
                           R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                           R"("b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                           8);
  auto file = colm::SafetensorsFile::open(p);
  CHECK(file->load("e").sizes().vec() == std::vector<int64_t>{0, 3});
  CHECK(file->load("b", torch::kUInt8).sizes().vec() == std::vector<int64_t>{2});
}

TEST_CASE("map() aliases the file where the dtype matches and converts otherwise", "[core][safetensors]") {
  const std::string dir = colm::test::temp_dir("st-map");
  const std::string path = dir + "/m.safetensors";
  torch::manual_seed(3);
  // Large enough to span many pages and several conversion pieces (8 MB each).
  const auto big = torch::randn({1536, 2048});
  const auto small = torch::randn({3, 5}).to(torch::kBFloat16);
  colm::save_safetensors(path, {{"big", big}, {"small", small}});
  const std::string before = read_bytes(path);
  auto file = colm::SafetensorsFile::open(path);

  SECTION("aliasing, copy-on-write") {
    CHECK_FALSE(file->aliased("big"));
    {
      auto t = file->map("big", torch::kFloat32);
      CHECK(file->aliased("big"));
      CHECK(t.is_contiguous());
      CHECK(torch::equal(t, big));
      // Writes stay in this process (private mapping): the file keeps its bytes.
      t.mul_(2).add_(1);
      CHECK(torch::equal(t, big * 2 + 1));
      auto again = colm::SafetensorsFile::open(path);
      CHECK(torch::equal(again->load("big"), big));
      file->release("big");  // refused while aliased: the written pages must survive
      CHECK(torch::equal(t, big * 2 + 1));
    }
    CHECK_FALSE(file->aliased("big"));  // the last view is gone
    CHECK(read_bytes(path) == before);
  }
  SECTION("the mapping outlives the file object and the file's name") {
    auto t = file->map("small", torch::kBFloat16);
    file.reset();
    fs::remove(path);
    CHECK(torch::equal(t, small));
  }
  SECTION("conversion copies, piece by piece, and does not alias") {
    auto half = file->map("big", torch::kBFloat16);
    CHECK_FALSE(file->aliased("big"));
    CHECK(half.scalar_type() == torch::kBFloat16);
    CHECK(torch::equal(half, big.to(torch::kBFloat16)));
    CHECK(torch::equal(file->map("small", torch::kFloat32), small.to(torch::kFloat32)));
    CHECK(torch::equal(file->load("big"), big));  // load() is always a copy
    CHECK_FALSE(file->aliased("big"));
  }
  SECTION("load_transposed() converts and transposes, whole rows per piece") {
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      INFO(dtype);
      const auto t = file->load_transposed("big", dtype);
      CHECK(t.is_contiguous());
      CHECK(t.sizes().vec() == std::vector<int64_t>{2048, 1536});
      CHECK(torch::equal(t, big.t().to(dtype)));
    }
    CHECK_FALSE(file->aliased("big"));
    CHECK(torch::equal(file->load_transposed("small", torch::kBFloat16), small.t()));
  }
  SECTION("stream() gives the values at the dtype asked for, in pieces") {
    for (auto dtype : {torch::kFloat32, torch::kBFloat16, torch::kFloat64}) {
      INFO(dtype);
      std::string bytes;
      size_t calls = 0;
      file->stream("big", dtype, [&](const void* p, size_t n) {
        bytes.append(static_cast<const char*>(p), n);
        ++calls;
      });
      const auto expected = big.to(dtype).contiguous();
      REQUIRE(bytes.size() == static_cast<size_t>(expected.numel() * expected.element_size()));
      CHECK(std::memcmp(bytes.data(), expected.data_ptr(), bytes.size()) == 0);
      CHECK(calls >= 2);
    }
  }
  SECTION("errors name the tensor") {
    CHECK_THROWS_WITH(file->map("nope", torch::kFloat32), Contains("no tensor \"nope\""));
    CHECK_THROWS_WITH(file->stream("nope", torch::kFloat32, [](const void*, size_t) {}), Contains("no tensor \"nope\""));
  }
}

TEST_CASE("map() of an unaligned tensor converts instead of aliasing", "[core][safetensors]") {
  const std::string dir = colm::test::temp_dir("st-map-unaligned");
  const std::string path = unaligned_file(dir);
  auto file = colm::SafetensorsFile::open(path);
  const auto t = file->map("x", torch::kFloat32);
  CHECK_FALSE(file->aliased("x"));
  CHECK(torch::equal(t, torch::tensor({1.5f, -3.25f})));
  std::vector<float> streamed;
  file->stream("x", torch::kFloat32, [&](const void* p, size_t n) {
    std::vector<float> piece(n / sizeof(float));
    std::memcpy(piece.data(), p, n);
    streamed.insert(streamed.end(), piece.begin(), piece.end());
  });
  CHECK(streamed == std::vector<float>{1.5f, -3.25f});
}

TEST_CASE("the bf16 sharded fixture equals llama-tiny-gqa rounded to bf16", "[core][safetensors][fixtures]") {
  const std::string models = colm::test::fixture("models");
  const auto fp32 = colm::Checkpoint::open(models + "/llama-tiny-gqa");
  const auto bf16 = colm::Checkpoint::open(models + "/llama-tiny-gqa-bf16-sharded");
  CHECK(fp32.stored_dtype() == "F32");
  CHECK(bf16.stored_dtype() == "BF16");
  CHECK(bf16.config().at("num_key_value_heads") == 4);
  REQUIRE(fp32.names() == bf16.names());
  CHECK(bf16.names().size() == 21);
  for (const auto& name : bf16.names()) {
    INFO(name);
    CHECK(bf16.entry(name).shape == fp32.entry(name).shape);
    const auto expected = fp32.load(name).to(torch::kBFloat16).to(torch::kFloat32);
    CHECK(torch::equal(bf16.load(name), expected));
  }
  // Reading the bf16 bits as anything else would not be this close to the fp32 weights.
  const auto w32 = fp32.load("lm_head.weight");
  const auto w16 = bf16.load("lm_head.weight");
  CHECK((w32 - w16).abs().max().item<float>() < 4e-3f);
  CHECK_THROWS_WITH(bf16.load("model.layers.9.mlp.up_proj.weight"), Contains("no tensor"));
}

TEST_CASE("every model fixture opens as a checkpoint", "[core][safetensors][fixtures]") {
  for (const char* name : {"gpt2-tiny", "llama-tiny-gqa", "stories260k"}) {
    INFO(name);
    const auto ck = colm::Checkpoint::open(colm::test::fixture(std::string("models/") + name));
    CHECK(ck.stored_dtype() == "F32");
    CHECK(ck.config().at("vocab_size") == (std::string(name) == "gpt2-tiny" ? 1000 : 512));
  }
  const auto gpt2 = colm::Checkpoint::open(colm::test::fixture("models/gpt2-tiny"));
  CHECK(gpt2.has("transformer.wte.weight"));
  CHECK_FALSE(gpt2.has("lm_head.weight"));
  CHECK(gpt2.load("transformer.wte.weight").sizes().vec() == std::vector<int64_t>{1000, 64});
}

TEST_CASE("broken checkpoint directories give clear errors", "[core][safetensors][fixtures]") {
  const fs::path src = colm::test::fixture("models/llama-tiny-gqa-bf16-sharded");
  const std::string dir = colm::test::temp_dir("st-ckpt");
  fs::copy(src, dir, fs::copy_options::recursive);
  REQUIRE_NOTHROW(colm::Checkpoint::open(dir));
  const std::string index = dir + "/model.safetensors.index.json";
  const std::string index_text = read_bytes(index);

  SECTION("missing shard") {
    fs::remove(dir + "/model-00002-of-00002.safetensors");
    CHECK_THROWS_WITH(colm::Checkpoint::open(dir),
                      Contains("shard model-00002-of-00002.safetensors") && Contains("does not exist"));
  }
  SECTION("config.json missing") {
    fs::remove(dir + "/config.json");
    CHECK_THROWS_WITH(colm::Checkpoint::open(dir), Contains(dir) && Contains("config.json is missing"));
  }
  SECTION("config.json invalid") {
    write_bytes(dir + "/config.json", "{\"vocab_size\": 512,");
    CHECK_THROWS_WITH(colm::Checkpoint::open(dir), Contains("config.json") && Contains("invalid JSON"));
    write_bytes(dir + "/config.json", "[]");
    CHECK_THROWS_WITH(colm::Checkpoint::open(dir), Contains("config.json: expected a JSON object"));
  }
  SECTION("index names a tensor its shard does not hold") {
    std::string t = index_text;
    const std::string from = R"("model.norm.weight": "model-00002-of-00002.safetensors")";
    REQUIRE(t.find(from) != std::string::npos);
    t.replace(t.find(from), from.size(), R"("model.norm.weight": "model-00001-of-00002.safetensors")");
    write_bytes(index, t);
    CHECK_THROWS_WITH(colm::Checkpoint::open(dir),
                      Contains("puts \"model.norm.weight\" in model-00001-of-00002.safetensors"));
  }
  SECTION("a tensor listed twice in the index") {
    std::string t = index_text;
    const std::string anchor = R"("model.norm.weight": "model-00002-of-00002.safetensors")";
    t.replace(t.find(anchor), anchor.size(), anchor + ",\n    " + anchor);
    write_bytes(index, t);
    CHECK_THROWS_WITH(colm::Checkpoint::open(dir), Contains("\"model.norm.weight\" appears twice"));
  }
  SECTION("shard path escaping the directory") {
    std::string t = index_text;
    const std::string from = R"("model.norm.weight": "model-00002-of-00002.safetensors")";
    t.replace(t.find(from), from.size(), R"("model.norm.weight": "../model-00002-of-00002.safetensors")");
    write_bytes(index, t);
    CHECK_THROWS_WITH(colm::Checkpoint::open(dir), Contains("is not a file name in the checkpoint directory"));
  }
  SECTION("no weights at all") {
    fs::remove(index);
    CHECK_THROWS_WITH(colm::Checkpoint::open(dir),
                      Contains("neither model.safetensors nor model.safetensors.index.json exists"));
  }
  SECTION("not a directory") {
    CHECK_THROWS_WITH(colm::Checkpoint::open(dir + "/nothing-here"), Contains("not a directory"));
  }
}
