#include "util/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <vector>

namespace dsv4 {

TEST(ThreadPool, ParallelForCoversRangeOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    for (size_t n : {0u, 1u, 7u, 64u, 1000u}) {
      std::vector<std::atomic<int>> hits(n);
      pool.parallel_for(n, [&](size_t b, size_t e, int t) {
        EXPECT_LT(t, pool.size());
        for (size_t i = b; i < e; ++i) hits[i]++;
      }, 4);
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
    }
  }
}

TEST(ThreadPool, RunOnAllReachesEveryThread) {
  ThreadPool pool(4);
  std::atomic<int> mask{0};
  pool.run_on_all([&](int t) { mask |= 1 << t; });
  EXPECT_EQ(mask.load(), 0xF);
}

}  // namespace dsv4
