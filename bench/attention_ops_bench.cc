// Attention-side kernels (src/kernels/ops.h): the Lightning Indexer's scores of one query's heads
// against many keys, two ways (lanes over keys with a transpose, or over heads: what the model
// uses), and the probability-weighted sum of entries. Separate from the tests; run by hand:
//   ./build/attention_ops_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/ops.h"

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// V4's indexer: 64 heads × 128 dims; keys per call = range(0).
constexpr size_t kHeads = 64, kDim = 128;

// range(1) = 0: dot_rows_seq (lanes over keys, keys transposed per block of lanes);
// 1: dot_rows_seq_t (lanes over heads, what the model uses).
void BM_IndexScores(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const bool lanes_over_heads = state.range(1) != 0;
  const auto q = random_floats(kHeads * kDim, 1), e = random_floats(n * kDim, 2);
  std::vector<float> s(kHeads * n);
  for (auto _ : state) {
    if (lanes_over_heads)
      dsv4::dot_rows_seq_t(q.data(), kDim, kHeads, e.data(), kDim, n, kDim, s.data(), kHeads);
    else
      dsv4::dot_rows_seq(q.data(), kDim, kHeads, e.data(), kDim, n, kDim, s.data(), n);
    benchmark::DoNotOptimize(s.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * kHeads * kDim * n * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}

// Decode attention's scores as attention.cc runs them: all 64 heads × 512 dims against 640
// entries (a CSA layer's window + top-512) in the shares of 64 entries the pool hands out;
// range(0) = 0: the queries transposed again for every share (dot_rows_seq_t from Q), 1:
// transposed once (transpose_queries, what the model does). The same bits either way.
void BM_AttentionScoresShares(benchmark::State& state) {
  const bool once = state.range(0) != 0;
  constexpr size_t heads = 64, dim = 512, n = 640, share = 64;
  const auto q = random_floats(heads * dim, 5), e = random_floats(n * dim, 6);
  std::vector<float> s(n * heads), tbuf(dsv4::transposed_queries_floats(heads, dim));
  for (auto _ : state) {
    if (once) {
      const dsv4::TransposedQueries qt =
          dsv4::transpose_queries(q.data(), dim, heads, dim, tbuf.data());
      for (size_t b = 0; b < n; b += share)
        dsv4::dot_rows_seq_t(qt, e.data() + b * dim, dim, share, s.data() + b * heads, heads);
    } else {
      for (size_t b = 0; b < n; b += share)
        dsv4::dot_rows_seq_t(q.data(), dim, heads, e.data() + b * dim, dim, share, dim,
                             s.data() + b * heads, heads);
    }
    benchmark::DoNotOptimize(s.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * heads * dim * n * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}

// Decode attention's weighted sum as attention.cc runs it: all 64 heads, one thread's share of
// the 512 dims (range(1)), over range(0) entries (640: a CSA layer's window + top-512; 8320: an
// HCA layer at 1M tokens).
void BM_AttentionWeightedSum(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0)), cols = static_cast<size_t>(state.range(1));
  const size_t heads = 64, dim = 512;
  const auto p = random_floats(heads * n, 3), e = random_floats(n * dim, 4);
  std::vector<float> o(heads * dim);
  for (auto _ : state) {
    dsv4::weighted_rows_sum(p.data(), n, heads, e.data(), dim, n, cols, o.data(), dim);
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * heads * cols * n * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}

BENCHMARK(BM_IndexScores)
    ->ArgNames({"keys", "lanes_over_heads"})
    ->ArgsProduct({{64, 1024, 16384}, {0, 1}});
BENCHMARK(BM_AttentionScoresShares)->ArgNames({"transposed_once"})->Arg(0)->Arg(1);
BENCHMARK(BM_AttentionWeightedSum)->Args({640, 256})->Args({8320, 256})->Args({8320, 64});

}  // namespace

BENCHMARK_MAIN();
