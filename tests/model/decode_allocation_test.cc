// A decode step allocates nothing on the heap once its buffers are warm (issue: "no allocation
// in the decode loop"): every operator new in this binary is counted while a step runs.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

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

// Heap allocations while B sequences of golden tiny/long decode side by side, one token each per
// forward call (B > 1: the server's continuous batching), after prompts of 64 + 16·b tokens;
// counted over steps 8 … steps-1. A first round warms the per-thread buffers to the same context;
// the counted round's sequences have reserved their caches (SequenceState::reserve, as the
// generator does for a request).
size_t decode_allocations(size_t B, size_t steps) {
  const GoldenRun run = find_golden_run("tiny", "long");
  if (run.ids.size() < 64 + 16 * (B - 1) + steps) {
    ADD_FAILURE() << "golden tiny/long too short";
    return 0;
  }
  auto m = Model::load(run.dir.string());
  ThreadPool pool(2);
  ForwardResult res;
  std::vector<BatchItem> items(B);
  auto round = [&](bool count) {
    std::vector<SequenceState> seqs;
    for (size_t b = 0; b < B; ++b) seqs.push_back(m->new_sequence());
    for (size_t b = 0; b < B; ++b) {
      if (count) seqs[b].reserve(static_cast<int64_t>(64 + 16 * b + steps));
      items[b].seq = &seqs[b];
      items[b].tokens = std::span<const int32_t>(run.ids.data(), 64 + 16 * b);
      m->forward(std::span<const BatchItem>(&items[b], 1), pool, res);
    }
    for (size_t i = 0; i < steps; ++i) {
      for (size_t b = 0; b < B; ++b)
        items[b].tokens = std::span<const int32_t>(run.ids.data() + 64 + 16 * b + i, 1);
      g_counting = count && i >= 8;
      m->forward(std::span<const BatchItem>(items), pool, res);
    }
    g_counting = false;
  };
  round(false);
  g_allocations = 0;
  round(true);
  return g_allocations.load();
}

// Positions 72 … 599: CSA entries, HCA entries, window wrap-around, indexer top-k past its k.
TEST(DecodeAllocation, WarmDecodeStepsAllocateNothing) {
  EXPECT_EQ(decode_allocations(1, 536), 0u) << "heap allocations in 528 decode steps";
}

TEST(DecodeAllocation, WarmBatchedDecodeStepsAllocateNothing) {
  EXPECT_EQ(decode_allocations(2, 240), 0u)
      << "heap allocations in 232 decode steps of a batch of 2";
}

}  // namespace
}  // namespace dsv4::test
