// Roofline measurements (see membench.h). The inner loops are Highway code dispatched at run
// time like the matmul kernels, so they use the same vector width and FMA instruction.

#include "kernels/membench.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/membench.cc"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "util/huge_pages.h"
#include "util/thread_pool.h"

HWY_BEFORE_NAMESPACE();
namespace dsv4 {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Combines the whole vectors of p[0..n) into one with `op` over 8 independent accumulators (loads
// are the bottleneck, not op); *done = elements covered.
template <class D, class Op>
HWY_INLINE hn::Vec<D> Fold8(D d, const hn::TFromD<D>* HWY_RESTRICT p, size_t n, size_t* done,
                            const Op& op) {
  const size_t N = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  size_t i = 0;
  for (; i + 8 * N <= n; i += 8 * N) {
    a0 = op(a0, hn::LoadU(d, p + i));
    a1 = op(a1, hn::LoadU(d, p + i + N));
    a2 = op(a2, hn::LoadU(d, p + i + 2 * N));
    a3 = op(a3, hn::LoadU(d, p + i + 3 * N));
    a4 = op(a4, hn::LoadU(d, p + i + 4 * N));
    a5 = op(a5, hn::LoadU(d, p + i + 5 * N));
    a6 = op(a6, hn::LoadU(d, p + i + 6 * N));
    a7 = op(a7, hn::LoadU(d, p + i + 7 * N));
  }
  *done = i;
  return op(op(op(a0, a1), op(a2, a3)), op(op(a4, a5), op(a6, a7)));
}

// Sum of p[0..n).
double SumRangeImpl(const float* HWY_RESTRICT p, size_t n) {
  const hn::ScalableTag<float> d;
  size_t i = 0;
  const auto v = Fold8(d, p, n, &i, [](auto a, auto b) HWY_ATTR { return hn::Add(a, b); });
  double s = hn::GetLane(hn::SumOfLanes(d, v));
  for (; i < n; ++i) s += p[i];
  return s;
}

// The same loop over bytes that are not floats (weights of any format): integer XOR, so NaN and
// denormal bit patterns cannot slow the adds down.
uint64_t XorBytesImpl(const uint8_t* HWY_RESTRICT p, size_t n) {
  const hn::ScalableTag<uint8_t> d;
  size_t i = 0;
  const auto v = Fold8(d, p, n, &i, [](auto a, auto b) HWY_ATTR { return hn::Xor(a, b); });
  uint64_t x = 0;
  for (size_t k = 0; k < hn::Lanes(d); ++k) x = x * 31 + hn::ExtractLane(v, k);
  for (; i < n; ++i) x = x * 31 + p[i];
  return x;
}

void TriadRangeImpl(float* HWY_RESTRICT a, const float* HWY_RESTRICT b, const float* HWY_RESTRICT c,
                    float s, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t N = hn::Lanes(d);
  const auto vs = hn::Set(d, s);
  size_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    hn::StoreU(hn::MulAdd(vs, hn::LoadU(d, c + i), hn::LoadU(d, b + i)), d, a + i);
    hn::StoreU(hn::MulAdd(vs, hn::LoadU(d, c + i + N), hn::LoadU(d, b + i + N)), d, a + i + N);
  }
  for (; i < n; ++i) a[i] = b[i] + s * c[i];
}

// Register-only loop: 12 independent FMA chains (enough to cover latency × pipes on current
// x86 cores). Returns a value depending on all chains so nothing is optimised away.
double FmaLoopImpl(size_t iters, float seed) {
  const hn::ScalableTag<float> d;
  const auto m = hn::Set(d, 0.999999f), c = hn::Set(d, 1e-6f);
  auto a0 = hn::Set(d, seed), a1 = hn::Add(a0, c), a2 = hn::Add(a1, c), a3 = hn::Add(a2, c);
  auto a4 = hn::Add(a3, c), a5 = hn::Add(a4, c), a6 = hn::Add(a5, c), a7 = hn::Add(a6, c);
  auto a8 = hn::Add(a7, c), a9 = hn::Add(a8, c), a10 = hn::Add(a9, c), a11 = hn::Add(a10, c);
  for (size_t i = 0; i < iters; ++i) {
    a0 = hn::MulAdd(a0, m, c);
    a1 = hn::MulAdd(a1, m, c);
    a2 = hn::MulAdd(a2, m, c);
    a3 = hn::MulAdd(a3, m, c);
    a4 = hn::MulAdd(a4, m, c);
    a5 = hn::MulAdd(a5, m, c);
    a6 = hn::MulAdd(a6, m, c);
    a7 = hn::MulAdd(a7, m, c);
    a8 = hn::MulAdd(a8, m, c);
    a9 = hn::MulAdd(a9, m, c);
    a10 = hn::MulAdd(a10, m, c);
    a11 = hn::MulAdd(a11, m, c);
  }
  auto s =
      hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)), hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
  s = hn::Add(s, hn::Add(hn::Add(a8, a9), hn::Add(a10, a11)));
  return hn::GetLane(hn::SumOfLanes(d, s));
}

size_t LanesImpl() { return hn::Lanes(hn::ScalableTag<float>()); }
int64_t MembenchTargetImpl() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace dsv4
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsv4 {

HWY_EXPORT(SumRangeImpl);
HWY_EXPORT(XorBytesImpl);
HWY_EXPORT(TriadRangeImpl);
HWY_EXPORT(FmaLoopImpl);
HWY_EXPORT(LanesImpl);
HWY_EXPORT(MembenchTargetImpl);

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
constexpr size_t kGrain = 16384;  // floats (64 KiB): parts stay page aligned
volatile double g_sink;

}  // namespace

const char* membench_target_name() {
  return hwy::TargetName(HWY_DYNAMIC_DISPATCH(MembenchTargetImpl)());
}

double measure_read_gbps(ThreadPool& pool, size_t bytes, int passes, Pages pages) {
  const size_t n = std::max<size_t>(bytes / sizeof(float), kGrain);
  MappedBuffer buf(n * sizeof(float), pages);
  float* p = buf.as<float>();
  // First touch by the thread that will read each part (same partition as below).
  pool.parallel_for(
      n, [&](size_t b, size_t e, int) { std::fill(p + b, p + e, 1.0f); }, kGrain);
  std::vector<double> partial(pool.size(), 0.0);
  double best = 1e30;
  for (int pass = 0; pass < std::max(passes, 1); ++pass) {
    const auto t0 = Clock::now();
    pool.parallel_for(
        n,
        [&](size_t b, size_t e, int t) {
          partial[t] += HWY_DYNAMIC_DISPATCH(SumRangeImpl)(p + b, e - b);
        },
        kGrain);
    best = std::min(best, seconds_since(t0));
  }
  double s = 0;
  for (double v : partial) s += v;
  g_sink = s;
  return static_cast<double>(n * sizeof(float)) / best / 1e9;
}

double measure_read_gbps_over(ThreadPool& pool, std::span<const std::span<const uint8_t>> ranges,
                              int passes) {
  std::vector<size_t> start(ranges.size() + 1, 0);  // offsets in the concatenation
  for (size_t i = 0; i < ranges.size(); ++i) start[i + 1] = start[i] + ranges[i].size();
  const size_t total = start.back();
  if (total == 0) return 0;
  constexpr size_t kLine = 64;
  // Thread shares are contiguous in the concatenation, as the GEMV's rows are in a matrix.
  // Returns the pieces' checksum and adds the bytes it read to *read.
  auto read_share = [&](size_t b, size_t e, size_t* read) {
    const size_t lo = b * kLine, hi = std::min(e * kLine, total);
    size_t i =
        static_cast<size_t>(std::upper_bound(start.begin(), start.end(), lo) - start.begin()) - 1;
    uint64_t x = 0;
    for (size_t at = lo; at < hi; ++i) {
      const size_t end = std::min(hi, start[i + 1]);
      x += HWY_DYNAMIC_DISPATCH(XorBytesImpl)(ranges[i].data() + (at - start[i]), end - at);
      *read += end - at;
      at = end;
    }
    return x;
  };
  const size_t lines = (total + kLine - 1) / kLine;
  std::vector<uint64_t> partial(pool.size(), 0);
  std::vector<size_t> read(pool.size(), 0);
  auto pass = [&] {
    pool.parallel_for(
        lines, [&](size_t b, size_t e, int t) { partial[t] += read_share(b, e, &read[t]); }, 1024);
  };
  // Decode reads a matrix again only after the rest of a token's weights have gone through the
  // caches, so each timed pass starts with the ranges evicted: otherwise ranges that fit the last
  // level cache (flash-4l's 13 MB of mHC mixers) would measure the cache, not their pages.
  auto evict = [&] {
    pool.parallel_for(
        ranges.size(),
        [&](size_t b, size_t e, int) {
          for (size_t i = b; i < e; ++i) {  // every line the range touches, from inside it
            const std::span<const uint8_t> r = ranges[i];
            for (size_t off = 0; off < r.size(); off += kLine) hwy::FlushCacheline(r.data() + off);
            if (!r.empty()) hwy::FlushCacheline(r.data() + r.size() - 1);
          }
        },
        1);
  };
  pass();  // untimed: pages not yet mapped into this process are faulted in here
  double best = 1e30;
  const int timed = std::max(passes, 1);
  for (int p = 0; p < timed; ++p) {
    evict();
    const auto t0 = Clock::now();
    pass();
    best = std::min(best, seconds_since(t0));
  }
  uint64_t x = 0;
  size_t bytes = 0;
  for (int t = 0; t < pool.size(); ++t) {
    x += partial[t];
    bytes += read[t];
  }
  // Every pass covers every byte exactly once, or the rate below would be wrong.
  if (bytes != total * static_cast<size_t>(timed + 1))
    throw std::logic_error("measure_read_gbps_over: read " + std::to_string(bytes) +
                           " bytes, expected " + std::to_string(total * (timed + 1)));
  g_sink = static_cast<double>(x);
  return static_cast<double>(total) / best / 1e9;
}

double measure_triad_gbps(ThreadPool& pool, size_t bytes, int passes) {
  const size_t n = std::max<size_t>(bytes / 3 / sizeof(float), kGrain);
  MappedBuffer a(n * sizeof(float)), b(n * sizeof(float)), c(n * sizeof(float));
  float *pa = a.as<float>(), *pb = b.as<float>(), *pc = c.as<float>();
  pool.parallel_for(
      n,
      [&](size_t lo, size_t hi, int) {
        std::fill(pa + lo, pa + hi, 0.0f);
        std::fill(pb + lo, pb + hi, 1.0f);
        std::fill(pc + lo, pc + hi, 2.0f);
      },
      kGrain);
  double best = 1e30;
  for (int pass = 0; pass < std::max(passes, 1); ++pass) {
    const auto t0 = Clock::now();
    pool.parallel_for(
        n,
        [&](size_t lo, size_t hi, int) {
          HWY_DYNAMIC_DISPATCH(TriadRangeImpl)(pa + lo, pb + lo, pc + lo, 3.0f, hi - lo);
        },
        kGrain);
    best = std::min(best, seconds_since(t0));
  }
  g_sink = pa[n / 2];
  return 3.0 * static_cast<double>(n * sizeof(float)) / best / 1e9;
}

double measure_peak_flops(ThreadPool& pool, double seconds) {
  const double flops_per_iter = 2.0 * 12 * static_cast<double>(HWY_DYNAMIC_DISPATCH(LanesImpl)());
  // Calibrate on one thread, then run all threads for about `seconds`.
  size_t iters = 1 << 16;
  for (;;) {
    const auto t0 = Clock::now();
    g_sink = HWY_DYNAMIC_DISPATCH(FmaLoopImpl)(iters, 1.0f);
    const double dt = seconds_since(t0);
    if (dt > 0.02 || iters > (size_t{1} << 40)) {
      iters =
          static_cast<size_t>(static_cast<double>(iters) * std::max(seconds, 1e-3) / 3 / dt) + 1;
      break;
    }
    iters *= 4;
  }
  std::vector<double> out(pool.size());
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    pool.run_on_all([&](int t) { out[t] = HWY_DYNAMIC_DISPATCH(FmaLoopImpl)(iters, 1.0f + t); });
    best = std::min(best, seconds_since(t0));
  }
  double s = 0;
  for (double v : out) s += v;
  g_sink = s;
  return flops_per_iter * static_cast<double>(iters) * pool.size() / best;
}

}  // namespace dsv4
#endif  // HWY_ONCE
