// Picks the faster of two bit-identical kernel paths per weight shape by timing real calls.
// Which one wins depends on the CPU as much as on the shape. For FP8 at n ≥ 64 tokens, the tile
// GEMM against the GEMV with the scale on x (weights decoded in registers for every token block):
// on Zen 5, whose integer vector pipes decode beside the FMAs, the GEMM won some V4 shapes
// (≥ 2048 rows, K ≤ 4096) and lost others by up to 25 % (wo_b with K = 8192, 1024 and 512 rows;
// since its K blocks went, the GEMM wins 4096×4096 and wq_b by ~20 % and loses wo_b by ~8 %);
// on a Xeon, where decode and FMA share two ports, it was 1.3-1.7× faster on every shape
// (a throwaway harness alternating both in one process, n = 64-512, 2 threads). Both paths give
// the same bits, so the choice changes speed only, never results. matmul() also uses it to pick
// how many rows the single-token GEMV interleaves (kernels/matmul.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_set>
#include <utility>

namespace dsv4 {

class PathTuner {
 public:
  // Timed calls of each path before the faster one (by its best time per unit of work) is kept.
  static constexpr int kTrials = 2;

  // The path (0 or 1) for the next call with this key: trials alternate, path 0 first; then the
  // faster, except that the slower is tried again at the 4th, 8th, 16th … call after the trials,
  // so that a trial slowed by a cold start (weights faulted in, disk reads) is outlived at a cost
  // that shrinks to nothing. Report every call's cost.
  int choose(uint64_t key) {
    std::lock_guard<std::mutex> lock(mu_);
    Entry& e = table_[key];
    if (e.runs[0] < kTrials || e.runs[1] < kTrials) return e.runs[1] < e.runs[0] ? 1 : 0;
    const uint64_t c = ++e.calls;
    const int faster = e.best[1] < e.best[0] ? 1 : 0;
    return c >= 4 && (c & (c - 1)) == 0 ? 1 - faster : faster;
  }

  // True on the first call for this matrix (its weights' address), which its caller should run on
  // path 0 untimed: a matrix's first product pays for faulting its pages in and, for FP8, for
  // building its code map, and timing it made that path look slower than it is. Keys are shapes,
  // shared by every matrix of that shape, so one cold trial decided for all of them (in a flash-4l
  // prefill every matrix's first call falls in the first prompt).
  bool first_use(const void* matrix) {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_.insert(matrix).second;
  }

  // Reports how long a call of `path` took per unit of work (e.g. seconds per token).
  void report(uint64_t key, int path, double cost) {
    std::lock_guard<std::mutex> lock(mu_);
    Entry& e = table_[key];
    if (e.runs[path] == 0 || cost < e.best[path]) e.best[path] = cost;
    ++e.runs[path];
  }

 private:
  struct Entry {
    double best[2] = {0.0, 0.0};
    int runs[2] = {0, 0};
    uint64_t calls = 0;  // after the trials
  };
  std::mutex mu_;
  std::map<uint64_t, Entry> table_;
  std::unordered_set<const void*> seen_;
};

}  // namespace dsv4
