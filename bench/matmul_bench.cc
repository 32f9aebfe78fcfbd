// Microbenchmarks of matmul() at DeepSeek-V4-Flash shapes, per weight format, n ∈
// {1,4,16,32,96,192,512} (96 ≈ tokens per routed expert in a 512-token prefill), 1 and 2 threads;
// wq_b (K = 1024) is the widest FP8 projection and has short rows, wo_b (K = 8192) the longest.
// Counters: "GB/s" = weight bytes streamed per second (the decode roofline quantity; several copies
// of the matrix are cycled so they come from DRAM, not cache) and "GFLOP/s" = 2·rows·cols·n per
// second. Run: ./matmul_bench [--benchmark_filter=...] Also registers the membench roofline numbers
// (read-only / triad GB/s, peak FMA FLOP/s).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/fp8_code_map.h"
#include "kernels/matmul.h"
#include "kernels/matmul_internal.h"
#include "kernels/membench.h"
#include "numerics/formats.h"
#include "util/huge_pages.h"
#include "util/thread_pool.h"

namespace {

using dsv4::MatrixView;
using dsv4::ThreadPool;
using dsv4::WeightFormat;

struct Case {
  const char* name;
  WeightFormat fmt;
  size_t rows, cols;
  bool in_cache = false;  // one 512 KiB matrix read over and over from L2: the decoding work alone
};

// V4-Flash: hidden 4096, routed expert intermediate 2048; the BF16 case is a 16384-row slice of
// the 129,280 × 4096 output head; F32 a small projection.
const Case kCases[] = {
    {"fp8_4096x4096", WeightFormat::kFp8Block128, 4096, 4096},
    {"fp8_wq_b_32768x1024", WeightFormat::kFp8Block128, 32768, 1024},
    {"fp8_wo_b_4096x8192", WeightFormat::kFp8Block128, 4096, 8192},
    {"fp4_expert_2048x4096", WeightFormat::kFp4Block32, 2048, 4096},
    {"fp4_expert_4096x2048", WeightFormat::kFp4Block32, 4096, 2048},
    {"bf16_head_16384x4096", WeightFormat::kBF16, 16384, 4096},
    {"f32_1024x4096", WeightFormat::kF32, 1024, 4096},
};

// Single-token GEMV on weights held in L2 (V4 rows of 4096): how fast one core decodes each
// format when memory is not the limit, i.e. the compute ceiling of decode per core (each call
// also packs x, a few microseconds, as in decode).
const Case kInCacheCases[] = {
    {"fp4_in_cache_256x4096", WeightFormat::kFp4Block32, 256, 4096, true},
    {"fp8_in_cache_128x4096", WeightFormat::kFp8Block128, 128, 4096, true},
    {"bf16_in_cache_64x4096", WeightFormat::kBF16, 64, 4096, true},
};

uint64_t next(uint64_t& s) {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// `copies` random matrices with valid encodings (scales near 1, no NaN codes).
struct Weights {
  // 2 MiB pages, as the checkpoint mappings (util/huge_pages.h).
  std::vector<std::unique_ptr<dsv4::MappedBuffer>> data;
  std::vector<std::unique_ptr<uint8_t[]>> scales;
  std::vector<std::unique_ptr<dsv4::Fp8CodeMap>> maps;
  std::vector<MatrixView> views;
};

Weights make_weights(const Case& c, size_t copies) {
  Weights w;
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (size_t k = 0; k < copies; ++k) {
    MatrixView v;
    v.format = c.fmt;
    v.rows = c.rows;
    v.cols = c.cols;
    size_t nbytes = 0, nscales = 0;
    switch (c.fmt) {
      case WeightFormat::kF32:
        nbytes = c.rows * c.cols * 4;
        break;
      case WeightFormat::kBF16:
        nbytes = c.rows * c.cols * 2;
        break;
      case WeightFormat::kFp8Block128:
        nbytes = c.rows * c.cols;
        v.scale_stride = (c.cols + 127) / 128;
        nscales = (c.rows + 127) / 128 * v.scale_stride;
        break;
      case WeightFormat::kFp4Block32:
        nbytes = c.rows * c.cols / 2;
        v.scale_stride = c.cols / 32;
        nscales = c.rows * v.scale_stride;
        break;
    }
    auto buf = std::make_unique<dsv4::MappedBuffer>(nbytes);
    uint8_t* d = buf->as<uint8_t>();
    for (size_t i = 0; i < nbytes; i += 8) {
      uint64_t r = next(s);
      // FP8: normal codes (exponents 1, 3, 5, 7; no NaN), and in one word of 800 a first code
      // with exponent 0 (subnormal or zero): ~1.6·10^-4 of codes, about a real checkpoint's
      // share (a bell-shaped 128×128 block scaled to e4m3's 448 has ~1.3·10^-4 of its values
      // below the smallest normal, 2^-6), so that as many groups take the slow decode as in a
      // model (kernels/fp8_code_map.h). F32/BF16: normal values with |w| in [2^-7, 2): random
      // exponents would make some subnormal, and a multiply with a subnormal operand costs
      // Intel cores a ~100-cycle assist, which real weights never see.
      if (c.fmt == WeightFormat::kFp8Block128) {
        r = (r & 0xbebebebebebebebeull) | 0x0808080808080808ull;
        if (next(s) % 800 == 0) r &= ~uint64_t{0x78};
      }
      if (c.fmt == WeightFormat::kF32)
        r = (r & 0x83ff'ffff'83ff'ffffull) | 0x3c00'0000'3c00'0000ull;
      if (c.fmt == WeightFormat::kBF16)
        r = (r & 0x83ff'83ff'83ff'83ffull) | 0x3c00'3c00'3c00'3c00ull;
      std::memcpy(d + i, &r, std::min<size_t>(8, nbytes - i));
    }
    auto sc = std::make_unique<uint8_t[]>(nscales + 1);
    for (size_t i = 0; i < nscales; ++i) sc[i] = static_cast<uint8_t>(120 + next(s) % 8);
    v.data = d;
    v.scales = nscales ? sc.get() : nullptr;
    if (c.fmt == WeightFormat::kFp8Block128) {  // as the model's views; built before timing
      w.maps.push_back(std::make_unique<dsv4::Fp8CodeMap>(d, c.rows, c.cols));
      w.maps.back()->bits(nullptr);
      v.fp8_map = w.maps.back().get();
    }
    w.views.push_back(v);
    w.data.push_back(std::move(buf));
    w.scales.push_back(std::move(sc));
  }
  return w;
}

void BM_Matmul(benchmark::State& state, Case c) {
  const size_t n = static_cast<size_t>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  ThreadPool pool(threads);
  const size_t one =
      make_weights({c.name, c.fmt, 128, c.cols}, 1).views[0].bytes() * (c.rows / 128);
  // GEMV cycles ≥ 512 MB of weights so they stream from DRAM; GEMM is compute bound, one copy.
  const size_t copies = n >= 16 || c.in_cache ? 1 : std::max<size_t>(1, (512u << 20) / one);
  Weights w = make_weights(c, copies);
  std::vector<float> x(n * c.cols), y(n * c.rows);
  uint64_t s = 42;
  for (auto& v : x) v = static_cast<float>(static_cast<int64_t>(next(s) % 2001) - 1000) / 1000.0f;
  size_t k = 0;
  for (auto _ : state) {
    dsv4::matmul(w.views[k], x.data(), n, y.data(), &pool);
    benchmark::DoNotOptimize(y.data());
    k = (k + 1) % copies;
  }
  const double iters = static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(w.views[0].bytes()) * iters / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * c.rows * c.cols * n * iters / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(dsv4::matmul_target_name()));
}

void BM_Roofline(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  double read = 0, triad = 0, flops = 0;
  for (auto _ : state) {
    read = dsv4::measure_read_gbps(pool, size_t{1} << 30, 5);
    triad = dsv4::measure_triad_gbps(pool, size_t{1} << 30, 5);
    flops = dsv4::measure_peak_flops(pool, 0.3);
  }
  state.counters["read_GB/s"] = read;
  state.counters["triad_GB/s"] = triad;
  state.counters["peak_GFLOP/s"] = flops / 1e9;
  state.SetLabel(dsv4::membench_target_name());
}

// What 2 MiB pages gain over 4 KiB ones for a read-only stream (util/huge_pages.h): the same
// 1 GiB sum on both page sizes, alternated within each iteration so both see the same machine.
void BM_ReadPages(benchmark::State& state) {
  ThreadPool pool(static_cast<int>(state.range(0)));
  double huge = 0, small = 0;
  for (auto _ : state) {
    for (int round = 0; round < 3; ++round) {
      small =
          std::max(small, dsv4::measure_read_gbps(pool, size_t{1} << 30, 3, dsv4::Pages::kSmall));
      huge = std::max(huge, dsv4::measure_read_gbps(pool, size_t{1} << 30, 3, dsv4::Pages::kHuge));
    }
  }
  state.counters["read_2MiB_GB/s"] = huge;
  state.counters["read_4KiB_GB/s"] = small;
}

int register_all() {
  for (const Case& c : kCases) {
    auto* b = benchmark::RegisterBenchmark((std::string("matmul/") + c.name).c_str(), BM_Matmul, c);
    b->ArgNames({"n", "threads"})->UseRealTime()->Unit(benchmark::kMillisecond);
    for (int n : {1, 4, 16, 32, 96, 192, 512})
      for (int t : {1, 2}) b->Args({n, t});
  }
  for (const Case& c : kInCacheCases) {
    benchmark::RegisterBenchmark((std::string("gemv/") + c.name).c_str(), BM_Matmul, c)
        ->ArgNames({"n", "threads"})
        ->Args({1, 1})
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::RegisterBenchmark("roofline", BM_Roofline)
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->Iterations(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("read_pages", BM_ReadPages)
      ->ArgName("threads")
      ->Arg(2)
      ->Iterations(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  return 0;
}
const int registered = register_all();

}  // namespace

BENCHMARK_MAIN();
