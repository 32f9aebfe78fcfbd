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

GoldenRun tiny_long() {
  for (auto& r : discover_golden_runs())
    if (r.config == "tiny" && r.run == "long") return r;
  return {};
}

// Heap allocations while a sequence decodes positions 72 … 599 of tiny/long (CSA, HCA, window
// wrap, indexer top-k past its k). A first sequence warms the per-thread buffers up to that
// context; the measured one has reserved its caches (SequenceState::reserve, as the generator
// does for a request): then nothing may allocate.
TEST(DecodeAllocation, WarmDecodeStepsAllocateNothing) {
  const GoldenRun run = tiny_long();
  ASSERT_GE(run.ids.size(), 600u) << "golden tiny/long not found or too short";
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

// The same for a batch: two sequences decoding together, one token each per forward call (the
// server's continuous batching), after a warm-up batch of the same shape.
TEST(DecodeAllocation, WarmBatchedDecodeStepsAllocateNothing) {
  const GoldenRun run = tiny_long();
  ASSERT_GE(run.ids.size(), 300u) << "golden tiny/long not found or too short";
  auto m = Model::load(run.dir.string());
  ThreadPool pool(2);
  ForwardResult res;
  auto decode_pair = [&](SequenceState& a, SequenceState& b, bool count) {
    for (SequenceState* s : {&a, &b}) {
      BatchItem it;
      it.seq = s;
      it.tokens = std::span<const int32_t>(run.ids.data(), s == &a ? 40 : 56);
      m->forward(std::span<const BatchItem>(&it, 1), pool, res);
    }
    g_allocations = 0;
    for (size_t i = 0; i < 240; ++i) {
      g_counting = count && i >= 8;
      BatchItem items[2];
      items[0].seq = &a;
      items[0].tokens = std::span<const int32_t>(run.ids.data() + 40 + i, 1);
      items[1].seq = &b;
      items[1].tokens = std::span<const int32_t>(run.ids.data() + 56 + i, 1);
      m->forward(std::span<const BatchItem>(items, 2), pool, res);
    }
    g_counting = false;
  };
  SequenceState w1 = m->new_sequence(), w2 = m->new_sequence();
  decode_pair(w1, w2, false);
  SequenceState a = m->new_sequence(), b = m->new_sequence();
  a.reserve(300);
  b.reserve(300);
  decode_pair(a, b, true);
  EXPECT_EQ(g_allocations.load(), 0u) << "heap allocations in 232 batched decode steps";
}

}  // namespace
}  // namespace dsv4::test
