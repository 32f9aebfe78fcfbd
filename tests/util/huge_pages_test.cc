#include "util/huge_pages.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "test_support.h"
#include "util/error.h"
#include "util/process_stats.h"

namespace dsv4 {
namespace {

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kHugePageBytes == 0; }

TEST(HugePages, AnonymousMemoryIsAlignedZeroedAndWritable) {
  for (size_t bytes : {size_t{1}, size_t{4096} + 3, kHugePageBytes, 3 * kHugePageBytes + 5}) {
    void* p = map_aligned(bytes, -1);
    ASSERT_NE(p, nullptr) << bytes;
    EXPECT_TRUE(aligned(p)) << bytes;
    auto* b = static_cast<uint8_t*>(p);
    EXPECT_EQ(b[0], 0);
    EXPECT_EQ(b[bytes - 1], 0);
    b[bytes - 1] = 2;
    b[0] = 1;
    EXPECT_EQ(b[0], 1);
    if (bytes > 1) {
      EXPECT_EQ(b[bytes - 1], 2);
    }
    unmap_pages(p, bytes);
  }
}

TEST(HugePages, BuffersCarryTheirPageAdvice) {
  MappedBuffer huge(3 * kHugePageBytes), small(3 * kHugePageBytes, Pages::kSmall);
  const std::string h = mapping_vm_flags(huge.as<char>()) + " ";
  const std::string s = mapping_vm_flags(small.as<char>()) + " ";
  EXPECT_NE(h.find(" hg "), std::string::npos) << h;
  EXPECT_NE(s.find(" nh "), std::string::npos) << s;
  EXPECT_EQ(s.find(" hg "), std::string::npos) << s;
  EXPECT_EQ(mapping_vm_flags(nullptr), "");
}

TEST(HugePages, ImpossibleSizeIsAnErrorNotACrash) {
  errno = 0;
  EXPECT_EQ(map_aligned(0, -1), nullptr);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(map_aligned(size_t{1} << 62, -1), nullptr);
  try {
    MappedBuffer b(size_t{1} << 62);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4611686018427387904 bytes"), std::string::npos)
        << e.what();
  }
}

// A file mapped in place reads back byte for byte from an aligned start, and its resident pages
// are counted under its directory only.
TEST(HugePages, MappedFileIsAlignedAndCountedUnderItsDirectory) {
  test::TempDir dir("huge-pages");
  const auto path = dir.path() / "w.bin";
  const size_t bytes = 2 * kHugePageBytes + 12345;
  std::vector<uint8_t> data(bytes);
  for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(bytes));
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  const auto* m = static_cast<const uint8_t*>(map_aligned(bytes, fd));
  ::close(fd);  // the mapping keeps the file
  ASSERT_NE(m, nullptr);
  EXPECT_TRUE(aligned(m));
  uint64_t mismatches = 0;
  for (size_t i = 0; i < bytes; ++i) mismatches += m[i] != data[i];
  EXPECT_EQ(mismatches, 0u);

  const auto canon = std::filesystem::canonical(dir.path()).string();
  const MappedResidency r = file_mapping_residency(canon);
  EXPECT_GE(r.resident_bytes, bytes - 4096);  // every page was just read
  EXPECT_LE(r.resident_bytes, bytes + 4096);
  EXPECT_LE(r.huge_bytes, r.resident_bytes);
  const MappedResidency other = file_mapping_residency(canon + "-other");  // a name prefix only
  EXPECT_EQ(other.resident_bytes, 0u);
  unmap_pages(m, bytes);
  EXPECT_EQ(file_mapping_residency(canon).resident_bytes, 0u);
}

}  // namespace
}  // namespace dsv4
