// test::cached_dir, the per-build-tree cache the runtime, server and CLI tests keep their
// synthetic checkpoint in: made once, then reused; a failed make leaves nothing behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "test_support.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

TEST(TestCache, MadeOnceThenReused) {
  int calls = 0;
  auto make = [&](const fs::path& dir) {
    ++calls;
    std::ofstream(dir / "payload") << "x";
  };
  // A run before this one may already have made it (that is the point of the cache).
  const fs::path& a = test::cached_dir("cache-test", make);
  EXPECT_LE(calls, 1);
  const int after_first = calls;
  const fs::path& b = test::cached_dir("cache-test", make);
  EXPECT_EQ(calls, after_first);
  EXPECT_EQ(a, b);
  EXPECT_TRUE(fs::exists(a / "payload"));
}

TEST(TestCache, FailedMakeLeavesNoDirectory) {
  fs::path made;
  auto make = [&](const fs::path& dir) {
    made = dir;
    std::ofstream(dir / "half-written") << "x";
    throw std::runtime_error("make failed");
  };
  EXPECT_THROW(test::cached_dir("cache-test-fails", make), std::runtime_error);
  ASSERT_FALSE(made.empty());
  EXPECT_FALSE(fs::exists(made));
  for (const auto& e : fs::directory_iterator(made.parent_path()))
    EXPECT_EQ(e.path().filename().string().find("cache-test-fails"), std::string::npos) << e.path();
}

}  // namespace
}  // namespace dsv4
