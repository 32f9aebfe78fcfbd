// Picks the faster of two bit-identical kernel paths per weight shape by timing real calls.
// Which one wins depends on the CPU, not on the shape alone: for FP8 at n ≥ 64 tokens the GEMV
// with the scale on x (weights decoded in registers for every token block) beat the tile GEMM on
// most V4 shapes on Zen 5, whose integer vector pipes decode beside the FMAs, while on a Xeon,
// where decode and FMA share two ports, the tile GEMM was 1.3-1.7× faster on every shape
// (/tmp harness, n = 64-512, 2 threads). Both paths give the same bits, so the choice changes
// speed only, never results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

namespace dsv4 {

class PathTuner {
 public:
  // Timed calls of each path before the faster one is kept (its best time per unit of work).
  static constexpr int kTrials = 2;

  struct Choice {
    int path;    // 0 or 1
    bool timed;  // still a trial: report() the call's cost
  };

  // The path for the next call with this key: trials alternate, path 0 first; then the faster.
  Choice choose(uint64_t key) {
    std::lock_guard<std::mutex> lock(mu_);
    const Entry& e = table_[key];
    if (e.runs[0] < kTrials || e.runs[1] < kTrials) return {e.runs[1] < e.runs[0] ? 1 : 0, true};
    return {e.best[1] < e.best[0] ? 1 : 0, false};
  }

  // Reports how long a timed call of `path` took per unit of work (e.g. seconds per token).
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
  };
  std::mutex mu_;
  std::map<uint64_t, Entry> table_;
};

}  // namespace dsv4
