// The streaming safetensors writer: bytes written in any order, from several threads, in pieces
// that straddle its 2 MiB blocks, read back exactly; unwritten bytes are zero; a byte written twice
// is an error.
#include "runtime/safetensors_writer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "io/safetensors.h"
#include "test_support.h"
#include "util/error.h"
#include "util/huge_pages.h"

namespace dsv4 {
namespace {

uint8_t pattern(size_t tensor, size_t i) {
  return static_cast<uint8_t>(i * 7 + tensor * 31 + (i >> 11));
}

TEST(SafetensorsWriter, PiecesInAnyOrderFromSeveralThreadsReadBackExactly) {
  test::TempDir dir("writer");
  const std::string path = (dir.path() / "m.safetensors").string();
  // Sizes around and across the 2 MiB blocks; one tensor is left unwritten.
  const std::vector<SafetensorsWriter::Entry> entries = {
      {"a", DType::kU8, {int64_t(kHugePageBytes) * 2 + 777}},
      {"b", DType::kF32, {1000, 3}},
      {"c", DType::kU8, {int64_t(kHugePageBytes) - 5}},
      {"unwritten", DType::kU8, {100000}},
      {"d", DType::kBF16, {3, 5}},
  };
  {
    SafetensorsWriter w(path, entries);
    const std::vector<std::string> written = {"a", "b", "c", "d"};
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&, t] {
        for (size_t k = 0; k < written.size(); ++k) {
          const size_t n = w.tensor_bytes(written[k]);
          const size_t piece = 100003;  // not a divisor of anything here
          const size_t pieces = (n + piece - 1) / piece;
          for (size_t p = pieces; p-- > 0;) {  // back to front, every third piece per thread
            if (p % 3 != static_cast<size_t>(t)) continue;
            std::vector<uint8_t> buf(std::min(piece, n - p * piece));
            for (size_t i = 0; i < buf.size(); ++i) buf[i] = pattern(k, p * piece + i);
            w.write(written[k], p * piece, buf.data(), buf.size());
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    w.close();
  }
  auto ck = Checkpoint::open_file(path);
  const std::vector<std::string> written = {"a", "b", "c", "d"};
  for (size_t k = 0; k < written.size(); ++k) {
    const TensorInfo* t = ck->find(written[k]);
    ASSERT_NE(t, nullptr) << written[k];
    size_t bad = 0;
    for (size_t i = 0; i < t->nbytes; ++i) bad += t->data[i] != pattern(k, i);
    EXPECT_EQ(bad, 0u) << written[k];
  }
  const TensorInfo* u = ck->find("unwritten");
  ASSERT_NE(u, nullptr);
  size_t nonzero = 0;
  for (size_t i = 0; i < u->nbytes; ++i) nonzero += u->data[i] != 0;
  EXPECT_EQ(nonzero, 0u);
}

TEST(SafetensorsWriter, ByteWrittenTwiceIsAnError) {
  test::TempDir dir("writer-twice");
  const std::string path = (dir.path() / "m.safetensors").string();
  SafetensorsWriter w(path, {{"a", DType::kU8, {64}}});
  const std::vector<uint8_t> b(64, 1);
  w.write("a", 0, b.data(), 40);
  try {
    w.write("a", 30, b.data(), 34);  // all 64 bytes counted, 10 of them twice
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("written twice"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dsv4
