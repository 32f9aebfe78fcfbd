// A decode step allocates nothing on the heap once its buffers are warm (issue: "no allocation
// in the decode loop"): every operator new in this binary is counted while a step runs.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>

#include "golden_util.h"
#include "model/model.h"
#include "test_support.h"
#include "util/thread_pool.h"

#ifdef DSV4_ALLOC_TRACE
#include <execinfo.h>
#endif

namespace {
std::atomic<bool> g_counting{false};
std::atomic<size_t> g_allocations{0};

void* counted_alloc(std::size_t n, std::size_t align) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
#ifdef DSV4_ALLOC_TRACE
    void* frames[24];
    backtrace_symbols_fd(frames, backtrace(frames, 24), 2);
    std::fputs("----\n", stderr);
#endif
  }
  if (n == 0) n = 1;
  void* p = align <= alignof(std::max_align_t)
                ? std::malloc(n)
                : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (!p) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t n) { return counted_alloc(n, 0); }
void* operator new[](std::size_t n) { return counted_alloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace dsv4::test {
namespace {

// Heap allocations while a sequence decodes positions 72 … 599 of tiny/long (CSA, HCA, window
// wrap, indexer top-k past its k). A first sequence warms the per-thread buffers up to that
// context; the measured one has reserved its caches (SequenceState::reserve, as the generator
// does for a request): then nothing may allocate.
TEST(DecodeAllocation, WarmDecodeStepsAllocateNothing) {
  GoldenRun run;
  for (auto& r : discover_golden_runs())
    if (r.config == "tiny" && r.run == "long") run = r;
  ASSERT_FALSE(run.ids.empty()) << "golden tiny/long not found";
  ASSERT_GE(run.ids.size(), 600u);
  auto m = Model::load(run.dir.string());
  ThreadPool pool(2);
  ForwardResult res;
  auto decode = [&](SequenceState& s, bool count) {
    auto step = [&](size_t from, size_t n) {
      BatchItem it;
      it.seq = &s;
      it.tokens = std::span<const int32_t>(run.ids.data() + from, n);
      m->forward(std::span<const BatchItem>(&it, 1), pool, res);
    };
    step(0, 64);
    for (size_t i = 64; i < 72; ++i) step(i, 1);
    g_allocations = 0;
    g_counting = count;
    for (size_t i = 72; i < 600; ++i) step(i, 1);
    g_counting = false;
  };
  SequenceState warm = m->new_sequence();
  decode(warm, false);
  SequenceState s = m->new_sequence();
  s.reserve(600);
  decode(s, true);
  EXPECT_EQ(g_allocations.load(), 0u) << "heap allocations in 528 decode steps";
}

}  // namespace
}  // namespace dsv4::test
