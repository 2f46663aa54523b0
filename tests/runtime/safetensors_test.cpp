// Tests of safetensors reading, writing, validation and atomic replacement.
#include "runtime/safetensors.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ir/diagnostic.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

namespace fs = std::filesystem;

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void spit(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64_le(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
  return out;
}

// A file made by hand: the length prefix (the header's true length unless
// `length` overrides it), the header text and the data section.
std::string raw_file(const std::string& header, const std::string& data, std::optional<uint64_t> length = {}) {
  return u64_le(length.value_or(header.size())) + header + data;
}

class SafeTensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("pf_safetensors_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

TEST_F(SafeTensorsTest, RoundTripsEveryDtypeAndShape) {
  const float f32[6] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f};
  const uint16_t f16[4] = {0x3c00, 0xc000, 0x0000, 0x7bff};  // 1, -2, 0, 65504 as bit patterns
  const uint16_t bf16[4] = {0x3f80, 0x4000, 0xbf80, 0x0001};
  const double f64 = 3.141592653589793;  // a scalar
  const int64_t i64[3] = {-1, int64_t{1} << 40, 7};
  const uint8_t flags[5] = {1, 0, 0, 1, 1};
  SafeTensors st;
  st.add("w", {DType::f32, {2, 3}}, f32);
  st.add("half", {DType::f16, {4}}, f16);
  st.add("brain", {DType::bf16, {2, 2}}, bf16);
  st.add("pi", {DType::f64, {}}, &f64);
  st.add("empty", {DType::i32, {0}}, nullptr);
  st.add("empty3d", {DType::i64, {2, 0, 3}}, nullptr);
  st.add("count", {DType::i64, {3}}, i64);
  st.add("mask", {DType::boolean, {5}}, flags);
  st.metadata["format"] = "pt";
  st.metadata["step"] = "12";
  st.write(path("all.safetensors"));

  SafeTensors back = SafeTensors::read(path("all.safetensors"));
  EXPECT_EQ(back.source(), path("all.safetensors"));
  EXPECT_EQ(back.names(), (std::vector<std::string>{"brain", "count", "empty", "empty3d", "half", "mask", "pi", "w"}));
  EXPECT_EQ(back.metadata, st.metadata);
  for (const std::string& name : st.names()) {
    EXPECT_EQ(back.at(name).type, st.at(name).type) << name;
    EXPECT_EQ(back.at(name).bytes, st.at(name).bytes) << name;
  }
  std::span<const float> w = back.at("w").view<float>();
  ASSERT_EQ(w.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(w[i], f32[i]);
  EXPECT_EQ(back.at("pi").view<double>()[0], f64);
  EXPECT_EQ(back.at("pi").type.str(), "f64[]");
  EXPECT_EQ(back.at("count").view<int64_t>()[1], int64_t{1} << 40);
  EXPECT_EQ(back.at("half").view<uint16_t>()[3], 0x7bff);
  EXPECT_EQ(back.at("mask").view<uint8_t>()[3], 1);
  EXPECT_TRUE(back.at("empty3d").bytes.empty());

  // Writing what was read gives the same bytes: the layout is canonical.
  back.write(path("again.safetensors"));
  EXPECT_EQ(slurp(path("again.safetensors")), slurp(path("all.safetensors")));
}

TEST_F(SafeTensorsTest, WritesTheExactByteLayout) {
  const float a[2] = {1.0f, 2.0f};
  const int64_t b = 5;
  SafeTensors st;
  st.add("b", {DType::i64, {}}, &b);  // added out of order: files list names sorted
  st.add("a", {DType::f32, {2}}, a);
  st.metadata["format"] = "pt";
  st.write(path("tiny.safetensors"));

  // 138 bytes of JSON, padded with 6 spaces to 144 so that data starts at
  // file offset 152, a multiple of 8.
  const std::string json = R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})";
  ASSERT_EQ(json.size(), 138u);
  const std::string expected = std::string("\x90\0\0\0\0\0\0\0", 8) + json + std::string(6, ' ') +
                               std::string("\0\0\x80\x3f\0\0\0\x40", 8) +  // 1.0f, 2.0f
                               std::string("\x05\0\0\0\0\0\0\0", 8);       // int64 5
  EXPECT_EQ(slurp(path("tiny.safetensors")), expected);
  EXPECT_FALSE(fs::exists(path("tiny.safetensors.tmp")));
}

TEST_F(SafeTensorsTest, NoTensorsIsAValidFile) {
  SafeTensors().write(path("none.safetensors"));
  EXPECT_EQ(slurp(path("none.safetensors")), u64_le(8) + "{}      ");
  EXPECT_EQ(SafeTensors::read(path("none.safetensors")).size(), 0u);
}

// Every defect a reader can meet, each with the message that must name it.
TEST_F(SafeTensorsTest, RejectsCorruptFiles) {
  const std::string f32x2 = std::string(8, '\0');  // 8 bytes: two f32 zeros
  const auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape, int begin,
                        int end) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
           std::to_string(begin) + "," + std::to_string(end) + "]}";
  };
  struct Case {
    std::string name;
    std::string bytes;
    std::string message;  // expected after "<path>: "
  };
  const std::vector<Case> cases = {
      {"tiny", "abc", "file is 3 bytes, too short for the 8-byte header length"},
      {"huge_header", u64_le(uint64_t{1} << 40) + "{}",
       "header length 1099511627776 exceeds the limit of 100000000 bytes (corrupt file?)"},
      {"short_header", raw_file("{}", "", 100),
       "header length is 100 bytes but only 2 bytes follow it (truncated file?)"},
      {"not_json", raw_file("{\"a\": ", ""), "header is not valid JSON: parse error"},
      {"not_utf8", raw_file("{\"\xff\":1}", ""), "header is not valid JSON"},
      {"not_object", raw_file("[1,2]", ""), "header is JSON but not an object"},
      {"entry_not_object", raw_file("{\"a\":7}", ""), "tensor 'a': header entry must be an object, got 7"},
      {"no_offsets", raw_file(R"({"a":{"dtype":"F32","shape":[2]}})", f32x2),
       "tensor 'a': header entry has no 'data_offsets'"},
      {"unknown_dtype", raw_file("{" + entry("a", "F8_E4M3", "[8]", 0, 8) + "}", f32x2),
       "tensor 'a' has dtype 'F8_E4M3', which pipeforge does not support (supported: F32, F16, BF16, F64, I32, I64, "
       "BOOL)"},
      {"negative_dim", raw_file("{" + entry("a", "F32", "[-2]", 0, 8) + "}", f32x2),
       "tensor 'a': shape must hold non-negative integers, got -2"},
      {"float_dim", raw_file("{" + entry("a", "F32", "[2.0]", 0, 8) + "}", f32x2),
       "tensor 'a': shape must hold non-negative integers, got 2.0"},
      {"wrong_size", raw_file("{" + entry("a", "F32", "[2]", 0, 4) + "}", std::string(4, '\0')),
       "tensor 'a': data_offsets [0, 4] span 4 bytes but f32[2] needs 8"},
      {"backwards", raw_file("{" + entry("a", "F32", "[2]", 8, 0) + "}", f32x2),
       "tensor 'a': data_offsets [8, 0] end before they begin"},
      {"truncated_data", raw_file("{" + entry("a", "F32", "[2]", 0, 8) + "}", std::string(5, '\0')),
       "tensor 'a': data_offsets [0, 8] run past the end of the data section (5 bytes)"},
      {"overlap",
       raw_file("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}",
                std::string(12, '\0')),
       "tensors 'a' and 'b' overlap in the data section (bytes [0, 8) and [4, 12))"},
      {"gap",
       raw_file("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 12, 20) + "}",
                std::string(20, '\0')),
       "bytes [8, 12) of the data section belong to no tensor (before 'b')"},
      {"trailing", raw_file("{" + entry("a", "F32", "[2]", 0, 8) + "}", std::string(16, '\0')),
       "the data section has 16 bytes but the tensors cover only 8"},
      {"duplicate", raw_file("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("a", "F32", "[2]", 0, 8) + "}", f32x2),
       "tensor 'a' appears twice in the header"},
      {"duplicate_key", raw_file(R"({"a":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}})", f32x2),
       "key 'dtype' appears twice in one header entry"},
      {"bad_metadata", raw_file(R"({"__metadata__":{"step":3}})", ""),
       "__metadata__ value of 'step' must be a string, got 3"},
  };
  for (const Case& c : cases) {
    const std::string file = path(c.name + ".safetensors");
    spit(file, c.bytes);
    const std::string message = error_of([&] { SafeTensors::read(file); });
    EXPECT_TRUE(message.starts_with(file + ": " + c.message)) << c.name << ": " << message;
  }
  EXPECT_EQ(error_of([&] { SafeTensors::read(path("absent.safetensors")); }),
            "cannot open '" + path("absent.safetensors") + "': No such file or directory");
  EXPECT_EQ(error_of([&] { SafeTensors::read(dir_.string()); }), dir_.string() + ": not a regular file");
}

TEST_F(SafeTensorsTest, MissingTensorListsSomePresentOnes) {
  const float x = 1;
  SafeTensors st;
  EXPECT_EQ(error_of([&] { st.at("w"); }), "<memory>: no tensor 'w' (the file holds no tensors)");
  for (const char* name : {"h.0.w", "h.1.w", "h.2.w", "h.3.w", "h.4.w", "h.5.w"}) st.add(name, {DType::f32, {}}, &x);
  EXPECT_EQ(error_of([&] { st.at("blocks.0.w"); }),
            "<memory>: no tensor 'blocks.0.w'; present: h.0.w, h.1.w, h.2.w, h.3.w, h.4.w, ... (6 in all)");
  EXPECT_TRUE(st.contains("h.5.w"));
  EXPECT_FALSE(st.contains("h.6.w"));
}

TEST_F(SafeTensorsTest, RejectsBadNamesAndViews) {
  const float x[2] = {1, 2};
  SafeTensors st;
  st.add("w", {DType::f32, {2}}, x);
  EXPECT_EQ(error_of([&] { st.add("w", {DType::f32, {2}}, x); }), "safetensors: tensor 'w' is already present");
  EXPECT_EQ(error_of([&] {
              st.add("__metadata__", {DType::f32, {2}}, x);
            }),
            "safetensors: '__metadata__' is reserved and cannot name a tensor");
  EXPECT_EQ(error_of([&] { st.add("", {DType::f32, {2}}, x); }), "safetensors: tensor names must not be empty");
  EXPECT_EQ(error_of([&] { st.add("v", {DType::f32, {2}}, nullptr); }), "safetensors: tensor 'v' (f32[2]) has no data");
  EXPECT_EQ(error_of([&] { st.at("w").view<int32_t>(); }),
            "cannot view a f32[2] tensor as a signed integer type of 4 bytes");
  EXPECT_EQ(error_of([&] { st.at("w").view<double>(); }),
            "cannot view a f32[2] tensor as a floating-point type of 8 bytes");
}

TEST_F(SafeTensorsTest, CheckTensorsReportsEveryProblemAtOnce) {
  const float x[4] = {};
  SafeTensors st;
  st.add("h.0.attn.b", {DType::f32, {4}}, x);
  st.add("h.1.mlp.b", {DType::f32, {3}}, x);
  st.add("h.1.mlp.w", {DType::f16, {2}}, x);
  st.add("h.9.w", {DType::f32, {1}}, x);
  const std::vector<std::pair<std::string, TensorType>> expected = {
      {"h.0.attn.w", {DType::f32, {2, 2}}},
      {"h.0.attn.b", {DType::f32, {4}}},
      {"h.1.mlp.b", {DType::f32, {4}}},
      {"h.1.mlp.w", {DType::f32, {2}}},
  };
  EXPECT_EQ(error_of([&] { check_tensors(st, expected, "w.safetensors"); }),
            "w.safetensors: missing h.0.attn.w; h.1.mlp.b is f32[3] here but the model expects f32[4]; "
            "h.1.mlp.w is f16[2] here but the model expects f32[2]; unexpected h.9.w");
  EXPECT_EQ(error_of([&] { check_tensors(st, expected, "w.safetensors", /*allow_unexpected=*/true); }),
            "w.safetensors: missing h.0.attn.w; h.1.mlp.b is f32[3] here but the model expects f32[4]; "
            "h.1.mlp.w is f16[2] here but the model expects f32[2]");
  // A file that matches passes.
  check_tensors(st,
                {{"h.0.attn.b", {DType::f32, {4}}},
                 {"h.1.mlp.b", {DType::f32, {3}}},
                 {"h.1.mlp.w", {DType::f16, {2}}},
                 {"h.9.w", {DType::f32, {1}}}},
                "w.safetensors");
}

// --- Atomic replacement: a failed write must leave the previous file whole.

SafeTensors big_tensors(float value) {
  std::vector<float> data(1 << 18, value);  // 1 MiB
  SafeTensors st;
  st.add("big", {DType::f32, {1 << 18}}, data.data());
  return st;
}

TEST_F(SafeTensorsTest, OverwritesAndLeavesNoTemporary) {
  const std::string file = path("ckpt.safetensors");
  big_tensors(1.0f).write(file);
  big_tensors(2.0f).write(file);
  EXPECT_EQ(SafeTensors::read(file).at("big").view<float>()[100], 2.0f);
  EXPECT_FALSE(fs::exists(file + ".tmp"));
}

TEST_F(SafeTensorsTest, FailedCreateKeepsThePreviousFile) {
  const std::string file = path("ckpt.safetensors");
  big_tensors(1.0f).write(file);
  const std::string before = slurp(file);
  // A directory where the temporary file must go: open() fails.
  fs::create_directory(file + ".tmp");
  EXPECT_EQ(error_of([&] { big_tensors(2.0f).write(file); }),
            "cannot write '" + file + "': cannot create '" + file + ".tmp': Is a directory");
  EXPECT_EQ(slurp(file), before);
  EXPECT_TRUE(fs::is_directory(file + ".tmp"));  // not ours: left alone

  const std::string nowhere = path("no/such/dir/ckpt.safetensors");
  EXPECT_EQ(error_of([&] { big_tensors(2.0f).write(nowhere); }),
            "cannot write '" + nowhere + "': cannot create '" + nowhere + ".tmp': No such file or directory");
}

// Restores the file size limit and SIGXFSZ's disposition however the test ends.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    // Without this the kernel kills the process at the limit instead of
    // failing the write with EFBIG.
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lower = saved_;
    lower.rlim_cur = bytes;
    ok_ = ::setrlimit(RLIMIT_FSIZE, &lower) == 0;
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = nullptr;
  bool ok_ = false;
};

TEST_F(SafeTensorsTest, FailureMidWriteKeepsThePreviousFile) {
  const std::string file = path("ckpt.safetensors");
  big_tensors(1.0f).write(file);
  const std::string before = slurp(file);
  std::string message;
  {
    // The file system refuses bytes past 64 KiB, as a full disk would.
    FileSizeLimit limit(64 << 10);
    ASSERT_TRUE(limit.ok());
    message = error_of([&] { big_tensors(2.0f).write(file); });
  }
  EXPECT_EQ(message, "cannot write '" + file + "': writing '" + file + ".tmp' failed: File too large");
  EXPECT_EQ(slurp(file), before);
  EXPECT_FALSE(fs::exists(file + ".tmp"));
}

}  // namespace
}  // namespace pf
