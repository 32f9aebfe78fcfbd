// The small per-token kernels around the matrix products, at V4-Flash shapes (spec §2): RMSNorm,
// RoPE, the indexer's Hadamard rotation, attention's softmax with the sink, the experts' clamped
// SwiGLU, mHC's mix-in (hc_pre, with its Sinkhorn normalisation) and write-back (hc_post), the
// compressor's gated pooling, and the KV cache codec. Separate from
// the tests; run by hand:
//   ./build/model_ops_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "kv/kv_codec.h"
#include "kv/sequence_state.h"
#include "model/compressor.h"
#include "model/config.h"
#include "model/mhc.h"
#include "util/thread_pool.h"

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Items (floats) per second as a counter, for kernels that stream a vector.
void count_floats(benchmark::State& state, double floats_per_iteration) {
  state.counters["Gfloat/s"] = benchmark::Counter(floats_per_iteration * state.iterations() / 1e9,
                                                  benchmark::Counter::kIsRate);
}

// RMSNorm of one row of range(0) values (4096: Flash's dim; 7168: Pro's; 512: a KV entry).
void BM_RmsNorm(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const auto x = random_floats(n, 1), w = random_floats(n, 2);
  std::vector<float> y(n);
  for (auto _ : state) {
    dsv4::rms_norm(x.data(), w.data(), n, 1e-6f, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  count_floats(state, static_cast<double>(n));
}

// RoPE on the last 64 dims of each of a decode token's 64 query heads (head_dim 512).
void BM_RopeQueryHeads(benchmark::State& state) {
  constexpr size_t kHeads = 64, kHeadDim = 512, kRope = 64;
  auto q = random_floats(kHeads * kHeadDim, 3);
  const auto cs = random_floats(kRope / 2, 4), sn = random_floats(kRope / 2, 5);
  for (auto _ : state) {
    for (size_t h = 0; h < kHeads; ++h)
      dsv4::rope_apply(q.data() + h * kHeadDim + (kHeadDim - kRope), cs.data(), sn.data(),
                       kRope / 2, false);
    benchmark::DoNotOptimize(q.data());
  }
  count_floats(state, static_cast<double>(kHeads * kRope));
}

// The indexer's Hadamard rotation of a query's 64 heads of 128 dims.
void BM_HadamardIndexerQuery(benchmark::State& state) {
  constexpr size_t kHeads = 64, kDim = 128;
  auto q = random_floats(kHeads * kDim, 6);
  for (auto _ : state) {
    for (size_t h = 0; h < kHeads; ++h) dsv4::hadamard_transform(q.data() + h * kDim, kDim);
    benchmark::DoNotOptimize(q.data());
  }
  count_floats(state, static_cast<double>(kHeads * kDim));
}

dsv4::ModelConfig flash_hc_config() {
  dsv4::ModelConfig c;
  c.dim = 4096;
  c.hc_mult = 4;
  c.hc_sinkhorn_iters = 20;
  return c;
}

// mHC for range(0) tokens on one thread: hc_pre (mixer product with the 24 × 16384 F32 matrix,
// Sinkhorn over the 4 × 4 combination, the weighted mix of the 4 streams) and hc_post.
struct HcSetup {
  dsv4::ModelConfig cfg = flash_hc_config();
  size_t width = static_cast<size_t>(cfg.hc_mult) * cfg.dim;
  size_t m = static_cast<size_t>((2 + cfg.hc_mult) * cfg.hc_mult);
  std::vector<float> fn = random_floats(m * width, 7, 0.01f), base = random_floats(m, 8),
                     scale = random_floats(3, 9);
  dsv4::HcParams p;
  explicit HcSetup() {
    p.fn.format = dsv4::WeightFormat::kF32;
    p.fn.rows = m;
    p.fn.cols = width;
    p.fn.data = fn.data();
    p.base = base.data();
    p.scale = scale.data();
  }
};

void BM_HcPre(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  HcSetup s;
  dsv4::ThreadPool pool(1);
  const auto h = random_floats(n * s.width, 10);
  const int hc = s.cfg.hc_mult;
  std::vector<float> x(n * s.cfg.dim), post(n * hc), comb(n * hc * hc);
  for (auto _ : state) {
    dsv4::hc_pre(s.cfg, s.p, h.data(), n, x.data(), post.data(), comb.data(), pool);
    benchmark::DoNotOptimize(x.data());
  }
  count_floats(state, static_cast<double>(n * s.width));
}

void BM_HcPost(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  HcSetup s;
  dsv4::ThreadPool pool(1);
  const int hc = s.cfg.hc_mult;
  auto h = random_floats(n * s.width, 11);
  const auto o = random_floats(n * s.cfg.dim, 12), post = random_floats(n * hc, 13),
             comb = random_floats(n * hc * hc, 14, 0.5f);
  for (auto _ : state) {
    dsv4::hc_post(s.cfg, o.data(), post.data(), comb.data(), n, h.data(), pool);
    benchmark::DoNotOptimize(h.data());
  }
  count_floats(state, static_cast<double>(n * s.width));
}

// The compressor's gated pooling, one token per iteration: ratio 4 (overlapping windows, two
// series of 512: width 1024) or ratio 128 (width 512). A window closes every `ratio` tokens.
void BM_CompressorPush(benchmark::State& state) {
  const int ratio = static_cast<int>(state.range(0)), d = 512;
  dsv4::CompressorState c;
  c.ratio = ratio;
  c.width = ratio == 4 ? 2 * d : d;
  c.rows = ratio == 4 ? 8 : ratio;
  c.kv.resize(static_cast<size_t>(c.rows) * c.width);
  c.score.resize(c.kv.size());
  c.reset();
  const auto k = random_floats(c.width, 15), z = random_floats(c.width, 16),
             ape = random_floats(static_cast<size_t>(ratio) * c.width, 17);
  std::vector<float> pooled(d);
  int64_t pos = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        dsv4::compressor_push(c, k.data(), z.data(), ape.data(), pos++, pooled.data()));
  }
  count_floats(state, static_cast<double>(c.width));
}

// The KV cache codec: a 512-dim entry (448 FP8 + 64 bf16 RoPE dims) or a 128-dim FP4 indexer
// key; range(1) = 0 stores (rounds and encodes), 1 decodes.
void BM_KvCodec(benchmark::State& state) {
  const bool index_key = state.range(0) != 0, decode = state.range(1) != 0;
  const int dim = index_key ? 128 : 512;
  const dsv4::KvCodec codec(
      index_key ? dsv4::KvCodec::Kind::kIndexKey : dsv4::KvCodec::Kind::kKvEntry,
      dsv4::KvStorage::kNative, dim, 64);
  const auto src = random_floats(dim, 18, 4.0f);
  std::vector<float> v(src);
  std::vector<uint8_t> bytes(codec.entry_bytes());
  codec.store(v.data(), bytes.data());
  for (auto _ : state) {
    if (decode) {
      codec.decode(bytes.data(), v.data());
    } else {
      v = src;
      codec.store(v.data(), bytes.data());
    }
    benchmark::DoNotOptimize(v.data());
    benchmark::DoNotOptimize(bytes.data());
  }
  count_floats(state, static_cast<double>(dim));
}

// Attention's softmax with the sink for one head over range(0) entries (128: the window alone;
// 640: a CSA layer's window + top-512; 8320: an HCA layer at 1M tokens).
void BM_SoftmaxWithSink(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const auto src = random_floats(n, 19, 30.0f);
  std::vector<float> z(n);
  for (auto _ : state) {
    std::copy(src.begin(), src.end(), z.begin());
    dsv4::softmax_with_sink(z.data(), n, 0.0441941738f, 0.5f);
    benchmark::DoNotOptimize(z.data());
  }
  count_floats(state, static_cast<double>(n));
}

// One token's activation of a routed expert (moe_inter_dim 2048), clamp at 10.
void BM_SwigluClamp(benchmark::State& state) {
  constexpr size_t kInter = 2048;
  const auto g0 = random_floats(kInter, 20, 12.0f), u = random_floats(kInter, 21, 12.0f);
  std::vector<float> g(kInter);
  for (auto _ : state) {
    std::copy(g0.begin(), g0.end(), g.begin());
    dsv4::swiglu_clamp(g.data(), u.data(), kInter, 10.0f, 0.3f);
    benchmark::DoNotOptimize(g.data());
  }
  count_floats(state, static_cast<double>(kInter));
}

BENCHMARK(BM_RmsNorm)->Arg(512)->Arg(4096)->Arg(7168);
BENCHMARK(BM_RopeQueryHeads);
BENCHMARK(BM_HadamardIndexerQuery);
BENCHMARK(BM_SoftmaxWithSink)->ArgName("entries")->Arg(128)->Arg(640)->Arg(8320);
BENCHMARK(BM_SwigluClamp);
BENCHMARK(BM_HcPre)->ArgName("tokens")->Arg(1)->Arg(16);
BENCHMARK(BM_HcPost)->ArgName("tokens")->Arg(1)->Arg(16);
BENCHMARK(BM_CompressorPush)->ArgName("ratio")->Arg(4)->Arg(128);
BENCHMARK(BM_KvCodec)->ArgNames({"index_key", "decode"})->ArgsProduct({{0, 1}, {0, 1}});

}  // namespace

BENCHMARK_MAIN();
