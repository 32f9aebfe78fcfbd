#include "util/cpu_topology.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "util/error.h"
#include "util/thread_pool.h"

namespace dsv4 {

// Containers may forbid sched_setaffinity; the pool then throws and these tests skip.
std::unique_ptr<ThreadPool> pinned_pool_or_skip(int n) {
  try {
    return std::make_unique<ThreadPool>(n, /*pin=*/true);
  } catch (const Error& e) {
    std::printf("pinning refused: %s\n", e.what());
    return nullptr;
  }
}

TEST(CpuTopology, SiblingsComeAfterOneCpuPerCore) {
  // Linux numbering on a 2-core SMT machine: CPUs 0,1 are the cores' first threads, 2,3 siblings.
  const CpuTopology t = group_cpus({{0, 0, 0}, {1, 0, 1}, {2, 0, 0}, {3, 0, 1}});
  EXPECT_EQ(t.physical_cores, 2);
  EXPECT_EQ(t.cpus, (std::vector<int>{0, 1, 2, 3}));
  // Adjacent numbering (0/1 siblings), two packages reusing core ids.
  const CpuTopology u = group_cpus({{0, 0, 0}, {1, 0, 0}, {2, 1, 0}, {3, 1, 0}, {4, 0, 5}});
  EXPECT_EQ(u.physical_cores, 3);
  EXPECT_EQ(u.cpus, (std::vector<int>{0, 2, 4, 1, 3}));
}

TEST(CpuTopology, CoversExactlyTheAllowedCpus) {
  const CpuTopology t = cpu_topology();
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  std::vector<int> allowed;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) allowed.push_back(c);
  std::vector<int> got = t.cpus;
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, allowed);
  EXPECT_GE(t.physical_cores, 1);
  EXPECT_LE(t.physical_cores, static_cast<int>(allowed.size()));
  EXPECT_EQ(ThreadPool().size(), t.physical_cores);  // the default pool: one thread per core
}

TEST(CpuTopology, PinnedPoolBindsEachThreadToItsCpu) {
  cpu_set_t before;
  ASSERT_EQ(sched_getaffinity(0, sizeof(before), &before), 0);
  const CpuTopology t = cpu_topology();
  const int n = 3;  // more threads than CPUs on a 2-CPU machine: assignment cycles
  std::vector<int> bound(n, -2);
  {
    std::unique_ptr<ThreadPool> p = pinned_pool_or_skip(n);
    if (!p) GTEST_SKIP() << "this system does not let threads be pinned";
    ThreadPool& pool = *p;
    pool.run_on_all([&](int i) {
      cpu_set_t s;
      CPU_ZERO(&s);
      pthread_getaffinity_np(pthread_self(), sizeof(s), &s);
      int only = -1;
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &s)) only = (only == -1) ? c : -3;  // -3: more than one CPU
      bound[i] = only;
    });
  }
  for (int i = 0; i < n; ++i) EXPECT_EQ(bound[i], t.cpus[i % t.cpus.size()]) << "thread " << i;
  // The test thread was pinned as thread 0; give it its old mask back.
  sched_setaffinity(0, sizeof(before), &before);
}

TEST(CpuTopology, PinnedPoolBindsTheThreadThatCallsIt) {
  // `dsv4 serve` builds its pool on the loading thread and calls it from the scheduler thread:
  // thread 0 is whoever calls.
  const CpuTopology t = cpu_topology();
  std::unique_ptr<ThreadPool> pool;
  std::thread([&] { pool = pinned_pool_or_skip(2); }).join();
  if (!pool) GTEST_SKIP() << "this system does not let threads be pinned";
  int bound = -2;
  std::thread([&] {
    pool->run_on_all([&](int i) {
      if (i != 0) return;
      cpu_set_t s;
      CPU_ZERO(&s);
      pthread_getaffinity_np(pthread_self(), sizeof(s), &s);
      bound = CPU_COUNT(&s) == 1 && CPU_ISSET(t.cpus[0], &s) ? t.cpus[0] : -1;
    });
  }).join();
  EXPECT_EQ(bound, t.cpus[0]);
}

}  // namespace dsv4
