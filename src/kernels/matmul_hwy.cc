// SIMD kernels behind matmul(): Highway, compiled for every x86 target Highway can attain
// (EMU128, SSSE3, SSE4, AVX2, AVX3) and chosen at run time (HWY_DYNAMIC_DISPATCH).
//
// Canonical arithmetic (what makes results independent of n and of the thread count):
// a weight row is decoded, chunk by chunk, into a sequence of fp32 vectors of N lanes (N = the
// target's f32 lane count); x is packed into the same lane order (zero padded). For each output
// (token t, row o) one vector accumulator runs a single fused-multiply-add chain over that
// sequence, in order, and is reduced horizontally at the end. The GEMV path (fewer than
// kMatmulGemmMinTokens tokens, and FP8 at any n) decodes the weights in registers for R rows × T
// tokens at a time, in L2-sized token blocks; the GEMM path decodes a tile of rows into an fp32
// buffer held in cache once and streams it through an R×T register-blocked microkernel, saving
// and restoring the accumulators between K blocks; on AVX-512 the GEMM transposes the tile and x
// instead so that the lanes run over rows (GemmRowsT), with every lane performing one of the same
// chains. All paths perform exactly the same operations per output, so the result of a row does not
// depend on n, on the path, or on how rows are split between threads (only on the SIMD target).
//
// Weights are exact: FP8 e4m3 is decoded through f16 to value·2^-8 (DecodeE4m3) or, in the
// single-token and small-batch GEMV for 32-byte groups its Fp8CodeMap clears, by placing its bits
// in an fp32 (value·2^-120, PlaceE4m3); the power-of-two factors go to the scale or to x, so every
// product is the same. NaN codes give NaN.
// FP4 e2m1 is looked up in a 16-entry table pre-multiplied by the block's power-of-two scale.
// FP4 chunks are 2N elements: the N low nibbles (even elements) form one vector and the N high
// nibbles (odd elements) the next, and x is packed even/odd to match.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/matmul_hwy.cc"
// foreach_target.h re-includes this file once per target and highway.h must follow it.
// clang-format off
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
// clang-format on
#include "kernels/fp8_code_map.h"
#include "kernels/matmul_internal.h"
#include "numerics/formats.h"
#include "util/thread_pool.h"

#ifndef DSV4_MATMUL_HWY_SHARED_
#define DSV4_MATMUL_HWY_SHARED_
namespace dsv4::matmul_detail {

// A growable 64-byte aligned float buffer (one per thread: no allocation once warm).
struct Scratch {
  hwy::AlignedFreeUniquePtr<float[]> buf;
  size_t cap = 0;
  float* get(size_t n) {
    if (n > cap) {
      cap = std::max(n, cap + cap / 2);
      buf = hwy::AllocateAligned<float>(cap);
    }
    return buf.get();
  }
};

struct E8M0Table {
  float v[256];
  E8M0Table() {
    for (int i = 0; i < 256; ++i) v[i] = e8m0_to_f32(static_cast<uint8_t>(i));
  }
};
inline const float* e8m0_table() {
  static const E8M0Table t;
  return t.v;
}

// FP4 lookup tables pre-multiplied by every E8M0 scale: t[e][i] = e2m1(i) · 2^(e-127) (the same
// fp32 products the decoder would form per block; one 64-byte load per block instead).
struct Fp4ScaledTables {
  alignas(64) float v[256][16];
  Fp4ScaledTables() {
    for (int e = 0; e < 256; ++e)
      for (int i = 0; i < 16; ++i) v[e][i] = kE2M1ToF32[i] * e8m0_to_f32(static_cast<uint8_t>(e));
  }
};
inline const float* fp4_scaled_tables() {
  static const Fp4ScaledTables t;
  return &t.v[0][0];
}

// Rows per decoded tile, tokens per accumulator block and vectors per K block of the GEMM.
constexpr size_t kTileRows = 16;
constexpr size_t kTileBytes = 512 * 1024;
// The GEMM needs at least this many rows per thread (two of its 32-row tiles); fewer go to the
// GEMV at any n. The GEMM packs all of x for each product and splits rows by tiles of 32, so the
// mHC mix (24 rows, K = 16384, x 32 MiB at n = 512) ran on one thread at 8 GFLOP/s, ~6 % of each
// flash-4l prefill on Zen 5.
constexpr size_t kGemmMinRowsPerThread = 64;
inline size_t PoolThreads(const ThreadPool* pool) {
  return pool ? static_cast<size_t>(pool->size()) : 1;
}
inline bool FewRowsForGemm(size_t rows, const ThreadPool* pool) {
  return rows < kGemmMinRowsPerThread * PoolThreads(pool);
}
// Software prefetch distance of the GEMV weight streams (several interleaved rows defeat the
// hardware stream prefetcher's ramp-up).
constexpr size_t kPrefetchBytes = 1024;
// GEMV rows up to this long are prefetched a block of rows at a time (RangePrefetch).
constexpr size_t kShortRowBytes = 4096;
// The same for the FP8 GEMV with the scale on x. With most codes decoded by PlaceE4m3, rows of
// 4 KiB measured faster prefetched row by row, 512 bytes ahead (a prototype decoding every code
// that way, bench/matmul_bench on a Xeon, fp8_4096x4096 n = 1: 2 threads 21.8-22.5 → 24.7-25.7
// GB/s, 1 thread 11.6 → 12.8; 256, 384, 640, 1024, 2048 and 4096 bytes ahead were slower); the
// f16 decode alone measured the same either way. K = 1024 rows (wq_b) count as short
// (PrefetchNextRange).
constexpr size_t kFp8ShortRowBytes = 1024;
constexpr size_t kFp8PrefetchBytes = 512;
// Rows longer than kShortRowBytes (kFp8ShortRowBytes), and a single token's rows of any length
// (PrefetchNextRange), are prefetched row by row, `ahead` bytes in front of byte `at` of each of
// the block's R rows (row_bytes apart); past a row's end the prefetch moves on to the same row of
// the next block (R rows further), which the thread usually reads next, instead of running into
// row r+1, which the block is reading already: otherwise every block but the first starts with R
// cold rows. Measured in flash-4l `dsv4 bench` decode with a throwaway
// timing patch (not in the repository) around matmul() that alternated the two ways token by token
// in one process (Zen 5, 2 threads, 3 runs): LM head (BF16, 8 KiB rows) 49.5-49.8 → 54.9-56.3
// GB/s, FP8 shared-expert w2 (4096×2048) 35.4-36.3 → 44.3-46.0, wo_b (4096×8192) 43.1-45.2 →
// 46.4-47.7; all single-token products together 35.2-35.4 → 37.3-38.3 GB/s; prefill products
// (n > 1) unchanged (0.999 and 1.014 of before, 2 runs).
// Prefetches do not fault, so the last block's may point past the matrix.
inline size_t RowPrefetchOffset(size_t at, size_t row_bytes, size_t R, size_t ahead) {
  const size_t off = at + ahead;
  return off < row_bytes ? off : off + (R - 1) * row_bytes;
}
// Per row of a K block. Measured on Zen 5 (bench/matmul_bench, n = 512): K blocks of 16 KiB
// (whole rows at V4 widths) beat 1-4 KiB ones by ~8%: the accumulator spills and restarts of
// short blocks cost more than the L1 reuse of the x panel gains.
constexpr size_t kKBlockBytes = 16384;
// The register-decoding GEMV walks its tokens in blocks whose packed x (≤ this many bytes) stays
// in L2 while the thread's rows stream past; without blocks, each group of rows re-reads all of x.
constexpr size_t kGemvXBlockBytes = 384 * 1024;
inline size_t GemvTokenBlock(size_t Kp, size_t group) {
  return std::max(group, kGemvXBlockBytes / (Kp * sizeof(float)) / group * group);
}

// Prefetches a contiguous byte range (the rows a kernel works on next) spread evenly over the
// `steps` steps of its current work. For short rows read side by side (FP4 expert rows: 1-2 KiB,
// FP8 rows of K = 1024: 1 KiB), prefetching each row kPrefetchBytes ahead leaves the start of
// the next block of rows uncovered; prefetching that whole block as one range instead measured
// faster on Zen 5 (bench/matmul_bench, n = 1, back to back): FP8 32768×1024 15-17 → 20-22 GB/s
// with 1 thread and 27-28 → 34-37 with 2, FP4 10-25 % (1 thread), FP8 4096×4096 within noise;
// for BF16/F32 rows of 8 KiB and more it measured slower (21-22 against 23-25 GB/s). Since
// RowPrefetchOffset runs on into the next block, a single token's short rows measure faster
// prefetched row by row too: see PrefetchNextRange.
class RangePrefetch {
 public:
  RangePrefetch(const uint8_t* p, size_t bytes, size_t steps)
      : p_(p),
        bytes_(bytes),
        lines_per_step_(((bytes + 63) / 64 + steps - 1) / std::max<size_t>(1, steps)) {}
  void step(size_t s) const {
    for (size_t l = s * lines_per_step_; l < (s + 1) * lines_per_step_; ++l)
      if (l * 64 < bytes_) hwy::Prefetch(p_ + l * 64);
  }

 private:
  const uint8_t* p_;
  size_t bytes_, lines_per_step_;
};

// Whether a GEMV block of `tokens` tokens prefetches the next block of rows as one range
// (RangePrefetch) rather than row by row (RowPrefetchOffset): short rows with several tokens
// only. For a single token the range was asked for in address order, so the next block's last
// rows arrived just before they were needed: FP4 expert rows from DRAM ran at ~0.6 of what one
// core decodes in cache (17 against 27 GB/s, while it reads 34 GB/s). Measured with throwaway
// programs (not in the repository), the two ways alternated in one process (Zen 5): 72 expert
// matrices (w1, w3, w2 shapes, 321 MB) from DRAM, 1 thread 17.6-23.1 → 21.9-23.6 GB/s, 2 threads
// each on its own experts 31.4-34.6 → 36.5 (512 and 1536 bytes ahead measured the same as 1024);
// flash-4l `dsv4 bench` decode, the ways alternated token by token (2 runs each): routed w1/w3
// +11-14 %, w2 -1 to +11 %, FP8 wq_b (32768×1024) 32.0-32.2 → 35.1-36.3 GB/s, the indexer's wq_b
// (8192×1024) 31.9-32.6 → 34.4-35.5. Several tokens keep the range, as measured for them.
inline bool PrefetchNextRange(size_t tokens, size_t row_bytes, size_t short_row_bytes) {
  return tokens > 1 && row_bytes <= short_row_bytes;
}

// Runs body(b, e) over [0, rows) on every thread of the pool, in chunks (multiples of `grain`,
// about 8 per thread) taken from a shared counter (ThreadPool::parallel_for_dynamic): a thread
// that is descheduled or slower (another process on the core, a cold page) does not hold up the
// others as a static split would. Rows of a chunk are contiguous, so every thread still streams
// disjoint weight rows. Products under 2^16 multiply-adds run on the calling thread.
template <class Body>
void ParallelRows(ThreadPool* pool, size_t rows, size_t grain, size_t macs, const Body& body) {
  const size_t nt = PoolThreads(pool);
  const size_t units = (rows + grain - 1) / grain;
  if (nt <= 1 || units <= 1 || macs < (size_t{1} << 16)) {
    body(size_t{0}, rows);
    return;
  }
  const size_t chunk = std::max<size_t>(1, units / (nt * 8)) * grain;
  pool->parallel_for_dynamic(
      rows, [&](size_t b, size_t e, int) { body(b, e); }, chunk);
}

}  // namespace dsv4::matmul_detail
#endif  // DSV4_MATMUL_HWY_SHARED_

HWY_BEFORE_NAMESPACE();
namespace dsv4 {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
namespace md = matmul_detail;

using DF = hn::ScalableTag<float>;
using DU = hn::RebindToUnsigned<DF>;
using DI = hn::RebindToSigned<DF>;
using VF = hn::Vec<DF>;
constexpr size_t kN = hn::MaxLanes(DF());
// Register blocking: R rows × T tokens of vector accumulators.
constexpr size_t kR = 4;
constexpr size_t kTMax = kN >= 16 ? 6 : 2;

// ---- Weight formats: a row is a sequence of chunks of kC elements (kChunkBytes bytes), each
// decoded into kVecs vectors. aux() gives the per-(row, chunk) scale information.

struct F32Fmt {
  static constexpr size_t kC = kN, kVecs = 1, kChunkBytes = kN * 4;
  const uint8_t* data;
  size_t K;
  struct Aux {};
  const uint8_t* row_ptr(size_t r) const { return data + r * K * 4; }
  Aux aux(size_t, size_t) const { return {}; }
  void prefetch_aux(size_t) const {}
  static size_t tail_bytes(size_t elems) { return elems * 4; }
  HWY_INLINE void decode(const uint8_t* p, Aux, VF* out) const {
    out[0] = hn::LoadU(DF(), reinterpret_cast<const float*>(p));
  }
};

// BF16 chunks are 2N elements, widened N at a time straight from memory (vpmovzxwd with a
// 32-byte memory operand on AVX-512). Loading the 64 bytes once and widening its halves, as
// before, GCC 12 compiled to a full-width load, a second load of the low half and an extract.
// A throwaway program alternating the two in one process (1 GiB of BF16 rows, 8 rows per block,
// Zen 5, median GB/s) gave 37.9 → 42.2 with 2 threads and 19.6 → 25.4 with 1 (a plain sum over
// the same memory: 46.6 and 24.5); bench/matmul_bench, back to back: bf16_head n = 4 +5-10 %, n = 1
// unchanged within the noise. Same lanes either way, so the same bits.
struct BF16Fmt {
  static constexpr size_t kC = 2 * kN, kVecs = 2, kChunkBytes = kN * 4;
  const uint8_t* data;
  size_t K;
  struct Aux {};
  const uint8_t* row_ptr(size_t r) const { return data + r * K * 2; }
  Aux aux(size_t, size_t) const { return {}; }
  void prefetch_aux(size_t) const {}
  static size_t tail_bytes(size_t elems) { return elems * 2; }
  HWY_INLINE void decode(const uint8_t* p, Aux, VF* out) const {
    const DU du;
    const hn::Rebind<uint16_t, DF> d16;
    const auto* p16 = reinterpret_cast<const uint16_t*>(p);
    out[0] = hn::BitCast(DF(), hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, p16))));
    out[1] = hn::BitCast(DF(), hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(d16, p16 + kN))));
  }
};

// N e4m3 codes → fp32 of value·2^-8, exactly, through f16: the byte sign extended to 16 bits,
// shifted left by 7 and masked is the f16 of value·2^-8 (e4m3 and f16 subnormals line up), and
// widening that to fp32 makes every code a normal float or zero (NaN codes come out finite:
// callers catch them). Placing the bits straight into an fp32 (value·2^-120, one conversion
// less) makes e4m3 subnormals fp32 subnormals, and Intel cores take a microcode assist of
// ~100 cycles for each multiply or FMA with such an operand: on a Xeon with AVX-512 FP16, decode
// and FMA of codes of which 1/8 are subnormal ran at 0.43 against 10.7 G weights/s per core (a
// throwaway probe, not in the repository, one accumulator chain), and matmul_bench's FP8 GEMV at
// 1.8 GFLOP/s. A real checkpoint has ~1.5·10^-4 subnormal codes (synth flash-4l wq_a: one
// vector in 500). AMD cores take no assist; there the fp32 placement measured 37.7 against
// 26-29 GB/s per core in L2. Skipping the widening for chunk pairs without exponent-0 codes
// (checked with the NaN scan) measured no faster on the Xeon: the check costs what it saves; a
// map computed once per matrix (kernels/fp8_code_map.h) costs a bit test per chunk instead, and
// the FP8 GEMV uses it.
// The f16 bits of value·2^-8 for the lanes.size(d16) codes at p.
template <class D16>
HWY_INLINE hn::Vec<D16> E4m3F16Bits(D16 d16, const uint8_t* p) {
  const hn::Rebind<int8_t, D16> d8;
  const auto c16 = hn::PromoteTo(d16, hn::LoadU(d8, reinterpret_cast<const int8_t*>(p)));
  return hn::And(hn::ShiftLeft<7>(c16), hn::Set(d16, static_cast<int16_t>(0xBF80)));
}

HWY_INLINE VF DecodeE4m3(const uint8_t* p) {
  const hn::Rebind<int16_t, DF> d16;
  return hn::PromoteTo(DF(), hn::BitCast(hn::Rebind<hwy::float16_t, DF>(), E4m3F16Bits(d16, p)));
}

#if HWY_TARGET != HWY_SCALAR
// 2N codes at once, the same values: one widening to 16 bits, shift and mask for both vectors
// (the in-L2 FP8 GEMV on a Xeon: 13.4-13.6 → 14.5-14.7 GB/s per core, matmul_bench).
HWY_INLINE void DecodeE4m3Pair(const uint8_t* p, VF* out) {
  const DF df;
  const hn::Repartition<int16_t, DF> d16;
  const hn::Half<decltype(d16)> d16h;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const auto h = E4m3F16Bits(d16, p);
  out[0] = hn::PromoteTo(df, hn::BitCast(dh, hn::LowerHalf(d16h, h)));
  out[1] = hn::PromoteTo(df, hn::BitCast(dh, hn::UpperHalf(d16h, h)));
}
#endif

// kTwoMul: some scale exceeds 2^119, so 2^8·scale would overflow; multiply in two steps.
// Chunks are 2N elements (two vectors) so that FP8 rows have the same vector count in every
// path, including the GEMV with the scale on x below.
template <bool kTwoMul>
struct Fp8Fmt {
  static constexpr size_t kC = 2 * kN, kVecs = 2, kChunkBytes = 2 * kN;
  const uint8_t* data;
  size_t K;
  const float* fac;  // [row block][col block]: 2^(e-119), or the scale itself when kTwoMul
  size_t ncb;
  struct Aux {
    float f;
  };
  const uint8_t* row_ptr(size_t r) const { return data + r * K; }
  Aux aux(size_t r, size_t c) const { return {fac[(r / 128) * ncb + (c * kC) / 128]}; }
  void prefetch_aux(size_t) const {}
  static size_t tail_bytes(size_t elems) { return elems; }
  HWY_INLINE void decode(const uint8_t* p, Aux a, VF* out) const {
    const DF df;
#if HWY_TARGET == HWY_SCALAR  // one lane: no pair of halves
    out[0] = DecodeE4m3(p);
    out[1] = DecodeE4m3(p + kN);
#else
    DecodeE4m3Pair(p, out);
#endif
    for (size_t v = 0; v < 2; ++v) {  // = e4m3 value · 2^-8 → value · scale
      VF w = out[v];
      // NaN codes (0x7f/0xff) and only they decode to ±480·2^-8 = ±1.875.
      const auto is_nan = hn::Eq(hn::Abs(w), hn::Set(df, 1.875f));
      if (kTwoMul) w = hn::Mul(w, hn::Set(df, 0x1p8f));
      w = hn::Mul(w, hn::Set(df, a.f));
      out[v] = hn::IfThenElse(is_nan, hn::Set(df, std::numeric_limits<float>::quiet_NaN()), w);
    }
  }
};

struct Fp4Fmt {
  static constexpr size_t kC = 2 * kN, kVecs = 2, kChunkBytes = kN;
  const uint8_t* data;
  size_t K;
  const uint8_t* scales;
  size_t scale_stride;
  const float* tables;  // fp4_scaled_tables()
  struct Aux {
    const float* t;  // the block's scaled table (16 floats)
  };
  const uint8_t* row_ptr(size_t r) const { return data + r * (K / 2); }
  Aux aux(size_t r, size_t c) const { return aux_in(scales + r * scale_stride, c); }
  // Chunk c's table, from the scale row `srow`.
  Aux aux_in(const uint8_t* srow, size_t c) const {
    return {tables + 16 * static_cast<size_t>(srow[(c * kC) / 32])};
  }
  // The scale rows are a second stream per weight row: fetched ahead, or every chunk's table
  // lookup waits on a DRAM miss.
  void prefetch_aux(size_t r) const {
    const uint8_t* p = scales + r * scale_stride;
    for (size_t b = 0; b < scale_stride; b += 64) hwy::Prefetch(p + b);
  }
  static size_t tail_bytes(size_t elems) { return elems / 2; }
  HWY_INLINE void decode(const uint8_t* p, Aux a, VF* out) const {
    const DF df;
    const DU du;
    const hn::Rebind<uint8_t, DF> d8;
    const auto b = hn::PromoteTo(du, hn::LoadU(d8, p));
    const auto hi = hn::ShiftRight<4>(b);
#if HWY_TARGET <= HWY_AVX3
    if constexpr (kN == 16) {
      // vpermps reads only the low 4 bits of each index, so the byte itself indexes its low
      // nibble: one AND fewer per chunk on the ports that also run the FMAs (Highway's
      // IndicesFromVec would assert the range in debug builds, hence the raw indices).
      const VF tbl = hn::Load(df, a.t);
      out[0] = hn::TableLookupLanes(tbl, hn::Indices512<float>{b.raw});
      out[1] = hn::TableLookupLanes(tbl, hn::Indices512<float>{hi.raw});
      return;
    }
#endif
    const auto lo = hn::And(b, hn::Set(du, 15u));
    if constexpr (kN == 16) {
      const VF tbl = hn::Load(df, a.t);
      out[0] = hn::TableLookupLanes(tbl, hn::IndicesFromVec(df, lo));
      out[1] = hn::TableLookupLanes(tbl, hn::IndicesFromVec(df, hi));
    } else if constexpr (kN == 8) {
      const VF tbl = hn::Load(df, a.t);  // magnitudes 0..7, scaled
      const auto m7 = hn::Set(du, 7u), m8 = hn::Set(du, 8u);
      const VF mlo = hn::TableLookupLanes(tbl, hn::IndicesFromVec(df, hn::And(lo, m7)));
      const VF mhi = hn::TableLookupLanes(tbl, hn::IndicesFromVec(df, hn::And(hi, m7)));
      out[0] = hn::BitCast(df, hn::Or(hn::BitCast(du, mlo), hn::ShiftLeft<28>(hn::And(lo, m8))));
      out[1] = hn::BitCast(df, hn::Or(hn::BitCast(du, mhi), hn::ShiftLeft<28>(hn::And(hi, m8))));
    } else {
      const DI di;
      out[0] = hn::GatherIndex(df, a.t, hn::BitCast(di, lo));
      out[1] = hn::GatherIndex(df, a.t, hn::BitCast(di, hi));
    }
  }
};

// FP4 with the row length a compile-time constant (the V4 experts' widths, single-token GEMV): the
// rows of a block and their scale rows are then fixed offsets from one pointer each, where with a
// run-time length GCC keeps 16 row pointers, spilled to the stack and to vector registers, and
// reloads them every chunk. In L2 (throwaway program, not in the repository: 32 rows × 4096, R = 8,
// one thread, Zen 5) this GEMV went from 20.1-23.7 to 24.5-24.8 GB/s; in flash-4l `dsv4 bench`
// decode with the same kind of throwaway patch as RowPrefetchOffset's (2 threads, each on whole
// experts, the two ways alternated token by token in one process, 3 runs) the
// routed experts' w1/w3 from 15.2-16.8 to 17.1-18.8 GB/s per thread and w2 from 16.3-17.6 to
// 18.0-19.5. The same instructions in the same order per row: the same bits.
template <size_t kK>
struct Fp4FixedFmt : Fp4Fmt {
  static constexpr size_t kRowBytes = kK / 2, kScaleRowBytes = kK / 32;
  const uint8_t* row_ptr(size_t r) const { return data + r * kRowBytes; }
  Aux aux(size_t r, size_t c) const { return aux_in(scales + r * kScaleRowBytes, c); }
  // Row r0 + r's chunk c, with w0 = row_ptr(r0) and s0 = row r0's scales.
  HWY_INLINE void decode_at(const uint8_t* w0, const uint8_t* s0, size_t r, size_t c,
                            VF* out) const {
    decode(w0 + r * kRowBytes + c * kChunkBytes, aux_in(s0 + r * kScaleRowBytes, c), out);
  }
};

// Decodes chunk c of rows; the partial last chunk goes through a zero-padded copy.
template <class F>
HWY_INLINE void DecodeChunk(const F& f, const uint8_t* row, size_t r, size_t c, size_t K, VF* out) {
  const size_t e0 = c * F::kC;
  if (e0 + F::kC <= K) {
    f.decode(row + c * F::kChunkBytes, f.aux(r, c), out);
  } else {
    alignas(64) float buf[16] = {};  // 64 bytes ≥ any kChunkBytes
    std::memcpy(buf, row + c * F::kChunkBytes, F::tail_bytes(K - e0));
    f.decode(reinterpret_cast<const uint8_t*>(buf), f.aux(r, c), out);
  }
}

// ---- GEMV / small batch: R rows × T tokens, weights decoded in registers.
template <class F, size_t R, size_t T>
HWY_NOINLINE void GemvBlock(const F& f, size_t K, size_t r0, const float* xp, size_t Kp, float* y,
                            size_t ldy) {
  const DF df;
  VF acc[R][T];
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < T; ++t) acc[r][t] = hn::Zero(df);
  const uint8_t* base[R];
  for (size_t r = 0; r < R; ++r) base[r] = f.row_ptr(r0 + r);
  [[maybe_unused]] const uint8_t* w0 = base[0];
  [[maybe_unused]] const uint8_t* s0 = nullptr;
  if constexpr (requires { F::kRowBytes; }) s0 = f.scales + r0 * F::kScaleRowBytes;
  const size_t nfull = K / F::kC;
  // Full chunks in a call-free loop (accumulators stay in registers), then the partial one.
  auto fma_chunk = [&](size_t c, VF(&w)[R][F::kVecs]) HWY_ATTR {
    const float* xc = xp + c * F::kC;
    for (size_t v = 0; v < F::kVecs; ++v) {
      for (size_t t = 0; t < T; ++t) {
        const VF xv = hn::LoadU(df, xc + t * Kp + v * kN);
        for (size_t r = 0; r < R; ++r) acc[r][t] = hn::MulAdd(w[r][v], xv, acc[r][t]);
      }
    }
  };
  for (size_t r = 0; r < R; ++r) f.prefetch_aux(r0 + R + r);  // the next block's scales
  const size_t row_bytes = static_cast<size_t>(f.row_ptr(r0 + 1) - f.row_ptr(r0));
  const bool range_pf = md::PrefetchNextRange(T, row_bytes, md::kShortRowBytes);
  const md::RangePrefetch next(f.row_ptr(r0 + R), range_pf ? R * row_bytes : 0, nfull);
  for (size_t c = 0; c < nfull; ++c) {
    VF w[R][F::kVecs];
    const bool pf = !range_pf && (c * F::kChunkBytes) % 64 == 0;  // one per cache line
    next.step(c);
    const size_t pf_off =
        md::RowPrefetchOffset(c * F::kChunkBytes, row_bytes, R, md::kPrefetchBytes);
    for (size_t r = 0; r < R; ++r) {
      if (pf) hwy::Prefetch(base[r] + pf_off);
      if constexpr (requires { F::kRowBytes; })  // fixed offsets from one pointer (Fp4FixedFmt)
        f.decode_at(w0, s0, r, c, w[r]);
      else
        f.decode(base[r] + c * F::kChunkBytes, f.aux(r0 + r, c), w[r]);
    }
    fma_chunk(c, w);
  }
  if (nfull * F::kC < K) {
    VF w[R][F::kVecs];
    for (size_t r = 0; r < R; ++r) DecodeChunk(f, base[r], r0 + r, nfull, K, w[r]);
    fma_chunk(nfull, w);
  }
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < T; ++t) y[t * ldy + r0 + r] = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
}

template <class F, size_t R, size_t T = kTMax>
HWY_INLINE void GemvDispatch(size_t nt, const F& f, size_t K, size_t r0, const float* xp, size_t Kp,
                             float* y, size_t ldy) {
  if (nt == T) return GemvBlock<F, R, T>(f, K, r0, xp, Kp, y, ldy);
  if constexpr (T > 1) GemvDispatch<F, R, T - 1>(nt, f, K, r0, xp, Kp, y, ldy);
}

// narrow: a single token runs 4 rows per register block instead of 8 (matmul() times both per
// shape: kernels/path_tuner.h); the rows' sums are the same either way. kT: the most tokens per
// register block (1 for a caller that only ever has one token: no blocks for more are compiled).
template <class F, size_t kT = kTMax>
void GemvRows(const F& f, size_t K, size_t b, size_t e, const float* xp, size_t Kp, size_t n,
              float* y, size_t ldy, bool narrow) {
  const size_t tblk = md::GemvTokenBlock(Kp, kT);
  for (size_t tb = 0; tb < n; tb += tblk) {
    const size_t nb = std::min(tblk, n - tb);
    const float* xb = xp + tb * Kp;
    float* yb = y + tb * ldy;
    size_t r = b;
    if (nb == 1 && !narrow)  // more rows in flight: one token leaves registers for 8 accumulators
      for (; r + 2 * kR <= e; r += 2 * kR) GemvBlock<F, 2 * kR, 1>(f, K, r, xb, Kp, yb, ldy);
    for (; r + kR <= e; r += kR)
      for (size_t t0 = 0; t0 < nb; t0 += kT)
        GemvDispatch<F, kR, kT>(std::min(kT, nb - t0), f, K, r, xb + t0 * Kp, Kp, yb + t0 * ldy,
                                ldy);
    for (; r < e; ++r)
      for (size_t t0 = 0; t0 < nb; t0 += kT)
        GemvDispatch<F, 1, kT>(std::min(kT, nb - t0), f, K, r, xb + t0 * Kp, Kp, yb + t0 * ldy,
                               ldy);
  }
}

// GemvRows for one token with FP4 rows of kK elements (f.scale_stride == kK / 32).
template <size_t kK>
void GemvRowsFp4Fixed(const Fp4Fmt& f, size_t b, size_t e, const float* xp, size_t Kp, float* y,
                      bool narrow) {
  GemvRows<Fp4FixedFmt<kK>, 1>(Fp4FixedFmt<kK>{f}, kK, b, e, xp, Kp, 1, y, 0, narrow);
}

using Fp4RowsFn = void (*)(const Fp4Fmt&, size_t, size_t, const float*, size_t, float*, bool);
// The fixed-length FP4 GEMV for V4's expert widths (Flash: dim 4096, moe_inter_dim 2048; Pro: 7168
// and 3072), or null.
Fp4RowsFn Fp4FixedRows(size_t K, size_t scale_stride) {
  if (scale_stride * 32 != K) return nullptr;
  switch (K) {
    case 2048:
      return &GemvRowsFp4Fixed<2048>;
    case 3072:
      return &GemvRowsFp4Fixed<3072>;
    case 4096:
      return &GemvRowsFp4Fixed<4096>;
    case 7168:
      return &GemvRowsFp4Fixed<7168>;
    default:
      return nullptr;
  }
}

// ---- GEMM (prefill): decoded fp32 tile + register-blocked microkernel (targets below AVX-512).

// Decodes rows [r0, r0+nr) into tile (row stride ldp floats, same lane order as the packed x).
template <class F>
void ConvertTile(const F& f, size_t K, size_t r0, size_t nr, float* tile, size_t Kp, size_t ldp) {
  const DF df;
  const size_t nchunks = (K + F::kC - 1) / F::kC;
  for (size_t r = 0; r < nr; ++r) {
    const uint8_t* row = f.row_ptr(r0 + r);
    float* dst = tile + r * ldp;
    for (size_t c = 0; c < nchunks; ++c) {
      VF w[F::kVecs];
      DecodeChunk(f, row, r0 + r, c, K, w);
      for (size_t v = 0; v < F::kVecs; ++v) hn::Store(w[v], df, dst + c * F::kC + v * kN);
    }
    std::fill(dst + nchunks * F::kC, dst + Kp, 0.0f);
  }
}

// acc slots: acc + (r * acc_rs + t) * kN. Vectors [v0, v1) of the rows/tokens; the first K
// block (v0 == 0) starts from zero instead of loading the slots.
template <size_t R, size_t T>
HWY_NOINLINE void Micro(const float* w, const float* x, size_t Kp, size_t v0, size_t v1, float* acc,
                        size_t acc_rs) {
  const DF df;
  VF a[R][T];
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < T; ++t)
      a[r][t] = v0 == 0 ? hn::Zero(df) : hn::Load(df, acc + (r * acc_rs + t) * kN);
  for (size_t v = v0; v < v1; ++v) {
    VF wv[R];
    for (size_t r = 0; r < R; ++r) wv[r] = hn::Load(df, w + r * Kp + v * kN);
    for (size_t t = 0; t < T; ++t) {
      const VF xv = hn::Load(df, x + t * Kp + v * kN);
      for (size_t r = 0; r < R; ++r) a[r][t] = hn::MulAdd(wv[r], xv, a[r][t]);
    }
  }
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < T; ++t) hn::Store(a[r][t], df, acc + (r * acc_rs + t) * kN);
}

template <size_t R, size_t T = kTMax>
HWY_INLINE void MicroDispatch(size_t nt, const float* w, const float* x, size_t Kp, size_t v0,
                              size_t v1, float* acc, size_t acc_rs) {
  if (nt == T) return Micro<R, T>(w, x, Kp, v0, v1, acc, acc_rs);
  if constexpr (T > 1) MicroDispatch<R, T - 1>(nt, w, x, Kp, v0, v1, acc, acc_rs);
}

// x rows and tile rows are ldp floats apart (Kp plus one vector): with a stride that is a
// multiple of 4 KiB every row of the microkernel's operands would fall into the same L1 sets.
template <class F>
void GemmRows(const F& f, size_t K, size_t b, size_t e, const float* xp, size_t Kp, size_t ldp,
              size_t n, float* y, size_t ldy) {
  const DF df;
  // Rows per tile: a multiple of kR, tile ≤ kTileBytes (at least kR rows).
  size_t rb = std::min<size_t>(md::kTileRows, md::kTileBytes / (ldp * sizeof(float)));
  rb = std::max(kR, rb / kR * kR);
  const size_t tb = 4 * kTMax;  // tokens per accumulator block
  const size_t kb = std::max<size_t>(1, md::kKBlockBytes / (kN * sizeof(float)));  // vectors
  const size_t nv = Kp / kN;
  thread_local md::Scratch tile_s, acc_s;
  float* tile = tile_s.get(rb * ldp);
  float* acc = acc_s.get(rb * tb * kN);
  for (size_t rt = b; rt < e; rt += rb) {
    const size_t nr = std::min(rb, e - rt);
    ConvertTile(f, K, rt, nr, tile, Kp, ldp);
    for (size_t t0 = 0; t0 < n; t0 += tb) {
      const size_t nt = std::min(tb, n - t0);
      const float* xb = xp + t0 * ldp;
      for (size_t v0 = 0; v0 < nv; v0 += kb) {
        const size_t v1 = std::min(nv, v0 + kb);
        for (size_t tg = 0; tg < nt; tg += kTMax) {
          const size_t tt = std::min(kTMax, nt - tg);
          size_t rg = 0;
          for (; rg + kR <= nr; rg += kR)
            MicroDispatch<kR>(tt, tile + rg * ldp, xb + tg * ldp, ldp, v0, v1,
                              acc + (rg * tb + tg) * kN, tb);
          for (; rg < nr; ++rg)
            MicroDispatch<1>(tt, tile + rg * ldp, xb + tg * ldp, ldp, v0, v1,
                             acc + (rg * tb + tg) * kN, tb);
        }
      }
      for (size_t t = 0; t < nt; ++t) {
        float* yt = y + (t0 + t) * ldy + rt;
        for (size_t r = 0; r < nr; ++r)
          yt[r] = hn::GetLane(hn::SumOfLanes(df, hn::Load(df, acc + (r * tb + t) * kN)));
      }
    }
  }
}

// ---- GEMM with lanes over rows (AVX-512): the same sums, a cheaper kernel.
// Output (t, o) is the tree sum over lanes j of sequential chains s_j = Σ_v w[o][vN+j]·x[t][vN+j]
// (v in order, one FMA each, from zero). GemmRows above keeps j in the lanes of an accumulator,
// so every FMA needs a weight and an x vector load and each output a horizontal sum at the end.
// Here the tile is transposed to [j][v][32 rows] and x to [j][groups of 12 tokens][v][12]: for a
// fixed j the chains of 32 rows × 12 tokens are 24 accumulators, fed by two weight loads and 12
// broadcasts per step, with 16 rows in the lanes. Each lane performs exactly the FMA chain s_j of
// its row, and the 16 partial sums are added with the pairings of SumOfLanes on AVX-512
// (_mm512_reduce_add_ps: j+8, then j+4, j+2, j+1), so the results are bit-identical to the GEMV.
// Replaces GemmRows on AVX-512. Measured (bench/matmul_bench, Zen 5, 1 thread, n = 512, back to
// back with GemmRows): BF16 151 → 173 GFLOP/s, F32 145 → 158, FP4 150 → 170 (the register-decoding
// GEMV: 118, 110, 138). FP8 stays on its GEMV with the scale on x, which this kernel only matched
// within the noise.
#undef DSV4_GEMM_T  // this file is compiled once per target
#if HWY_TARGET <= HWY_AVX3
#define DSV4_GEMM_T 1
constexpr size_t kPanelRows = 32;  // rows per transposed tile: two vectors
constexpr size_t kTT = 12;         // tokens per micro-kernel call
constexpr size_t kTBlockT = 48;    // tokens whose partial sums are kept at once
// The chains run over the whole row in one micro-kernel call: no K blocks. A j slice of the tile
// (K/16 steps of 32 rows: 32 KiB at K = 4096, 64 KiB for wo_b's 8192) then outgrows L1 and is
// re-read from L2 by each token group, and that measured faster than 16 KiB K blocks whose partial
// sums were saved and reloaded (a throwaway program alternating both in one process, Zen 5,
// median GFLOP/s of 12 calls, 1 and 2 threads; FP8 with the GEMM forced): wo_b 4096×8192 n = 512
// 81 → 123 and 200 → 277, FP8 4096×4096 154 → 179 and 314 → 328, BF16 1024×4096 139 → 159 and
// 281 → 307, FP4 2048×4096 n = 96 175 → 183 and 296 → 304; shapes with K ≤ 2048 had one block
// already. The sums are the same bits: a chain stored and reloaded between blocks is unchanged.

// out[j] lane i = in[i] lane j (16×16 floats).
HWY_INLINE void Transpose16(const __m512* in, __m512* out) {
  __m512 t[16], u[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(in[2 * k], in[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(in[2 * k], in[2 * k + 1]);
  }
  for (int m = 0; m < 4; ++m) {  // u[4m+c], 128-bit block L: rows 4m..4m+3 of column 4L+c
    u[4 * m] = _mm512_shuffle_ps(t[4 * m], t[4 * m + 2], 0x44);
    u[4 * m + 1] = _mm512_shuffle_ps(t[4 * m], t[4 * m + 2], 0xEE);
    u[4 * m + 2] = _mm512_shuffle_ps(t[4 * m + 1], t[4 * m + 3], 0x44);
    u[4 * m + 3] = _mm512_shuffle_ps(t[4 * m + 1], t[4 * m + 3], 0xEE);
  }
  for (int c = 0; c < 4; ++c) {  // 4×4 transpose of 128-bit blocks
    const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
    const __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
    out[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    out[4 + c] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
    out[8 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    out[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
  }
}

// Floats between the j slices of a transposed tile: nv·32 plus one line, so that the 16 stores of
// a transposed block (and the slices the micro-kernel walks) do not all fall into one L1 set when
// nv·128 bytes is a multiple of 4 KiB.
inline size_t TileSliceStride(size_t nv) { return nv * kPanelRows + kN; }
// Groups of kTT tokens (the last one zero padded) in the transposed x.
inline size_t TokenGroups(size_t n) { return (n + kTT - 1) / kTT; }

// Rows [r0, r0+nr) (nr ≤ 32; the rest zero) into tt[j·TileSliceStride(nv) + v·32 + r].
template <class F>
void ConvertTileT(const F& f, size_t K, size_t r0, size_t nr, size_t nv, float* tt) {
  const size_t js = TileSliceStride(nv);
  const DF df;
  const size_t nchunks = (K + F::kC - 1) / F::kC;
  // 16 rows are read side by side, a chunk at a time: 16 streams that the hardware prefetcher
  // does not follow (their loads were most of the conversion time). The next 16 rows (one
  // contiguous range) are prefetched a few lines per chunk while these are converted.
  const size_t group_bytes = kN * static_cast<size_t>(f.row_ptr(1) - f.row_ptr(0));
  for (size_t g = 0; g < kPanelRows / kN; ++g) {
    for (size_t i = 0; i < kN && g * kN + i < nr; ++i) f.prefetch_aux(r0 + g * kN + i);
    const md::RangePrefetch next(f.row_ptr(r0 + (g + 1) * kN), group_bytes, nchunks);
    for (size_t c = 0; c < nchunks; ++c) {
      next.step(c);
      VF w[kN][F::kVecs];
      for (size_t i = 0; i < kN; ++i) {
        const size_t r = g * kN + i;
        if (r < nr) {
          DecodeChunk(f, f.row_ptr(r0 + r), r0 + r, c, K, w[i]);
        } else {
          for (size_t u = 0; u < F::kVecs; ++u) w[i][u] = hn::Zero(df);
        }
      }
      for (size_t u = 0; u < F::kVecs; ++u) {
        __m512 in[kN], out[kN];
        for (size_t i = 0; i < kN; ++i) in[i] = w[i][u].raw;
        Transpose16(in, out);
        const size_t v = c * F::kVecs + u;
        for (size_t j = 0; j < kN; ++j)
          _mm512_store_ps(tt + j * js + v * kPanelRows + g * kN, out[j]);
      }
    }
  }
}

// x (packed rows of ldp floats) into xt[((j·ntg + g)·nv + v)·12 + i] for token 12g + i (groups of
// kTT tokens, zero padded): what one micro-kernel call reads is contiguous. Groups [g0, g1).
// A group's 12 token vectors (and 4 zeros) are transposed together; each j keeps 12 lanes.
void PackXT(const float* xp, size_t ldp, size_t n, size_t nv, size_t g0, size_t g1, float* xt) {
  const size_t ntg = TokenGroups(n);
  for (size_t g = g0; g < g1; ++g) {
    for (size_t v = 0; v < nv; ++v) {
      __m512 in[kN], out[kN];
      for (size_t i = 0; i < kN; ++i) {
        const size_t t = g * kTT + i;
        in[i] = i < kTT && t < n ? _mm512_loadu_ps(xp + t * ldp + v * kN) : _mm512_setzero_ps();
      }
      Transpose16(in, out);
      for (size_t j = 0; j < kN; ++j)
        _mm512_mask_storeu_ps(xt + ((j * ntg + g) * nv + v) * kTT, (1u << kTT) - 1, out[j]);
    }
  }
}

// Steps [0, ns) (the whole row, ns ≥ 1) of one j: w = that j slice of the tile, x = that group's
// xt. acc: [token][j][32 rows] partial sums, token stride acc_ts floats.
// A do-while, not a for: with a path for ns = 0, GCC 12 kept a zeroed copy of the 24 accumulators
// on the stack (two `rep stos` of 768 bytes per call, ~4 % of the kernel's samples in perf).
template <size_t T>
HWY_NOINLINE void MicroT(const float* w, const float* x, size_t ns, float* acc, size_t acc_ts) {
  const DF df;
  VF a0[T], a1[T];
  for (size_t t = 0; t < T; ++t) a0[t] = a1[t] = hn::Zero(df);
  size_t s = 0;
  do {
    const VF w0 = hn::Load(df, w + s * kPanelRows), w1 = hn::Load(df, w + s * kPanelRows + kN);
    const float* xs = x + s * kTT;
    for (size_t t = 0; t < T; ++t) {
      const VF xb = hn::Set(df, xs[t]);
      a0[t] = hn::MulAdd(w0, xb, a0[t]);
      a1[t] = hn::MulAdd(w1, xb, a1[t]);
    }
  } while (++s < ns);
  for (size_t t = 0; t < T; ++t) {
    hn::Store(a0[t], df, acc + t * acc_ts);
    hn::Store(a1[t], df, acc + t * acc_ts + kN);
  }
}

template <size_t T = kTT>
HWY_INLINE void MicroTDispatch(size_t nt, const float* w, const float* x, size_t ns, float* acc,
                               size_t acc_ts) {
  if (nt == T) return MicroT<T>(w, x, ns, acc, acc_ts);
  if constexpr (T > 1) MicroTDispatch<T - 1>(nt, w, x, ns, acc, acc_ts);
}

template <class F>
void GemmRowsT(const F& f, size_t K, size_t b, size_t e, const float* xt, size_t nv, size_t n,
               float* y, size_t ldy) {
  const size_t ntg = TokenGroups(n), js = TileSliceStride(nv);
  const DF df;
  const size_t acc_ts = kN * kPanelRows;  // per token: 16 j × 32 rows
  thread_local md::Scratch tile_s, acc_s;
  float* tt = tile_s.get(kN * js);
  float* acc = acc_s.get(kTBlockT * acc_ts);
  for (size_t rt = b; rt < e; rt += kPanelRows) {
    const size_t nr = std::min(kPanelRows, e - rt);
    ConvertTileT(f, K, rt, nr, nv, tt);
    for (size_t t0 = 0; t0 < n; t0 += kTBlockT) {
      const size_t nt = std::min(kTBlockT, n - t0);
      for (size_t j = 0; j < kN; ++j) {
        const float* wj = tt + j * js;
        for (size_t tg = 0; tg < nt; tg += kTT) {
          const float* xg = xt + (j * ntg + (t0 + tg) / kTT) * nv * kTT;
          MicroTDispatch(std::min(kTT, nt - tg), wj, xg, nv, acc + tg * acc_ts + j * kPanelRows,
                         acc_ts);
        }
      }
      for (size_t t = 0; t < nt; ++t) {
        float* yt = y + (t0 + t) * ldy + rt;
        for (size_t h = 0; h * kN < nr; ++h) {
          const float* p = acc + t * acc_ts + h * kN;
          VF s[8];
          for (size_t j = 0; j < 8; ++j)
            s[j] =
                hn::Add(hn::Load(df, p + j * kPanelRows), hn::Load(df, p + (j + 8) * kPanelRows));
          for (size_t j = 0; j < 4; ++j) s[j] = hn::Add(s[j], s[j + 4]);
          for (size_t j = 0; j < 2; ++j) s[j] = hn::Add(s[j], s[j + 2]);
          const VF sum = hn::Add(s[0], s[1]);
          const size_t valid = std::min(kN, nr - h * kN);
          if (valid == kN) {
            hn::StoreU(sum, df, yt + h * kN);
          } else {
            alignas(64) float part[kN];
            hn::Store(sum, df, part);
            std::copy(part, part + valid, yt + h * kN);
          }
        }
      }
    }
  }
}
#else
#define DSV4_GEMM_T 0
#endif

// ---- FP8 GEMV with the block scale on x (AVX2 and AVX-512). Weights decode to value·2^-8
// (DecodeE4m3) and the block scale moves to x: x' = x·scale·2^8 (exact when MatmulImpl's range
// check passes), so w'·x' = (value·scale)·x exactly and each FMA rounds as in the GEMM path:
// results are bit-identical. NaN codes (0x7f/0xff) decode to finite values; a running byte
// maximum over every other chunk's full-width load catches them and turns the row's outputs into
// NaN. Against the first version (NaN check on every chunk and token block), bench/matmul_bench
// on Zen 5: fp8_4096x4096 n = 512 +4-9 %; the NaN check's saving at n = 1 went to the decode
// straight to fp32 bits that DecodeE4m3 explains and replaces.
#undef DSV4_FP8_XSCALE
#if HWY_TARGET <= HWY_AVX2
#define DSV4_FP8_XSCALE 1
struct Fp8XCtx {
  const uint8_t* data;
  size_t K;
  // The view's Fp8CodeMap bits from its row 0 (map_wpr words per row), or null: no fast decode.
  const uint64_t* map = nullptr;
  size_t map_wpr = 0;
};

// N e4m3 codes → fp32 of value·2^-120 by placing their bits (sign, exponent and mantissa moved
// to the top of an fp32 with a zero exponent bias): exact for every code, but subnormal codes
// give fp32 subnormals and NaN codes finite values, so only for groups without either
// (kernels/fp8_code_map.h). bench/matmul_bench on a Xeon, codes as a checkpoint's, same build
// without and with the map: in-L2 FP8 GEMV 14.4-14.5 → 19.2-19.4 GB/s per core; from DRAM
// (fp8_4096x4096 and wo_b, n = 1) +5-7 % with 1 and 2 threads (2 threads: 22.1-24.9 → 24.1-26.0),
// where streaming rather than decoding sets the pace; n = 32, 2 threads: 143-155 → 176-180
// GFLOP/s.
HWY_INLINE VF PlaceE4m3(const uint8_t* p) {
  const DI di;
  const hn::Rebind<int8_t, DI> d8;
  const auto c = hn::PromoteTo(di, hn::LoadU(d8, reinterpret_cast<const int8_t*>(p)));
  return hn::BitCast(DF(), hn::And(hn::ShiftLeft<20>(c), hn::Set(di, int32_t{-0x78000001})));
}

// kNan: track NaN codes and record in row_nan[r] which of the R rows has one (their outputs are
// NaN). Otherwise row_nan[] comes from an earlier pass over the same rows and is applied.
// kMap: f.map is set and xs2 holds x'·2^112 (for PlaceE4m3's value·2^-120, the same products):
// chunks whose group no row of the block flags decode the fast way, the others through f16, and
// only those can hold NaN codes, so only they go through the NaN check.
template <size_t R, size_t T, bool kNan, bool kMap>
HWY_NOINLINE void GemvBlockFp8X(const Fp8XCtx& f, size_t r0, const float* xs, const float* xs2,
                                size_t Kp, float* y, size_t ldy, bool* row_nan) {
  const DF df;
  const hn::Repartition<uint8_t, DF> du8;  // 4N bytes: two chunks, for the NaN check
  constexpr size_t kC = 2 * kN;
  static_assert(Fp8CodeMap::kGroupBytes % kC == 0, "a chunk lies in one map group");
  constexpr size_t kChunksPerGroup = Fp8CodeMap::kGroupBytes / kC;
  const size_t K = f.K;
  VF acc[R][T];
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < T; ++t) acc[r][t] = hn::Zero(df);
  auto nanmax = hn::Zero(du8);
  const uint8_t* base[R];
  for (size_t r = 0; r < R; ++r) base[r] = f.data + (r0 + r) * K;
  const size_t nfull = K / kC;
  const bool range_pf = md::PrefetchNextRange(T, K, md::kFp8ShortRowBytes);
  const md::RangePrefetch next(f.data + (r0 + R) * K, range_pf ? R * K : 0, nfull);
  // Chunk c at ptr[r]; `check` bytes from there (0, one or two chunks) go through the NaN check;
  // kFast: decoded by PlaceE4m3 and multiplied with xs2.
  // With several tokens the chunk's two vectors are decoded one after the other, so that the R·T
  // accumulators and the R weights fit the registers (decoding both at once spilled at R = 4,
  // T = 6); a single token keeps both in flight. Measured by a throwaway program (not in the
  // repository) alternating the two orders in one process, best of 5-8 (Zen 5, 2 threads): n = 512
  // 4096×4096 288 → 314 GFLOP/s, 2048×4096 275 → 298, wo_b 8192 wide 306 → 323; n = 1 and n = 16
  // unchanged or slower with one at a time. bench/matmul_bench: fp8_4096x4096 n = 512, 2 threads,
  // with the x-in-place change: 256-271 → 283-284.
  constexpr size_t kV = T > 1 ? 1 : 2;
  auto chunk = [&](size_t c, const uint8_t* const* ptr, size_t check, auto fast) HWY_ATTR {
    constexpr bool kFast = decltype(fast)::value;
    if (kNan && !kFast && check)
      for (size_t r = 0; r < R; ++r) {
        const auto b = check == 2 * kC ? hn::LoadU(du8, ptr[r])
                                       : hn::ZeroExtendVector(
                                             du8, hn::LoadU(hn::Half<decltype(du8)>(), ptr[r]));
        nanmax = hn::Max(nanmax, hn::Add(b, b));  // |code|·2 as a byte: NaN ⇔ 0xFE
      }
    const float* xc = (kFast ? xs2 : xs) + c * kC;
    for (size_t v0 = 0; v0 < 2; v0 += kV) {
      VF w[R][kV];
      for (size_t r = 0; r < R; ++r) {
        if constexpr (kFast) {
          for (size_t v = 0; v < kV; ++v) w[r][v] = PlaceE4m3(ptr[r] + (v0 + v) * kN);
        } else if constexpr (kV == 2) {
          DecodeE4m3Pair(ptr[r], w[r]);
        } else {
          w[r][0] = DecodeE4m3(ptr[r] + v0 * kN);
        }
      }
      for (size_t v = 0; v < kV; ++v)
        for (size_t t = 0; t < T; ++t) {
          const VF xv = hn::Load(df, xc + t * Kp + (v0 + v) * kN);
          for (size_t r = 0; r < R; ++r) acc[r][t] = hn::MulAdd(w[r][v], xv, acc[r][t]);
        }
    }
  };
  uint64_t flagged = 0;  // the map's bits of the R rows for groups [64·(g/64), 64·(g/64) + 64)
  for (size_t c = 0; c < nfull; ++c) {
    const uint8_t* ptr[R];
    next.step(c);
    const size_t pf_off = md::RowPrefetchOffset(c * kC, K, R, md::kFp8PrefetchBytes);
    for (size_t r = 0; r < R; ++r) {
      ptr[r] = base[r] + c * kC;
      if (!range_pf && (c * kC) % 64 == 0) hwy::Prefetch(base[r] + pf_off);
    }
    if constexpr (kMap) {
      const size_t g = c / kChunksPerGroup;
      if (c % (64 * kChunksPerGroup) == 0) {
        flagged = 0;
        for (size_t r = 0; r < R; ++r) flagged |= f.map[(r0 + r) * f.map_wpr + g / 64];
      }
      if (HWY_LIKELY(!((flagged >> (g % 64)) & 1))) {
        chunk(c, ptr, 0, std::true_type());
        continue;
      }
      chunk(c, ptr, kC, std::false_type());
    } else {
      chunk(c, ptr, c % 2 ? 0 : std::min<size_t>(2, nfull - c) * kC, std::false_type());
    }
  }
  if (nfull * kC < K) {  // partial last chunk through a zero-padded copy
    alignas(64) uint8_t tailbuf[R][kC] = {};
    const uint8_t* ptr[R];
    for (size_t r = 0; r < R; ++r) {
      std::memcpy(tailbuf[r], base[r] + nfull * kC, K - nfull * kC);
      ptr[r] = tailbuf[r];
    }
    chunk(nfull, ptr, kC, std::false_type());
  }
  if (kNan) {
    const bool any_nan = !hn::AllFalse(du8, hn::Eq(nanmax, hn::Set(du8, uint8_t{0xFE})));
    for (size_t r = 0; r < R; ++r) {
      row_nan[r] = false;
      if (HWY_UNLIKELY(any_nan))
        for (size_t i = 0; i < K; ++i) row_nan[r] |= (base[r][i] & 0x7f) == 0x7f;
    }
  }
  for (size_t r = 0; r < R; ++r)
    for (size_t t = 0; t < T; ++t)
      y[t * ldy + r0 + r] = row_nan[r] ? std::numeric_limits<float>::quiet_NaN()
                                       : hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
}

template <size_t R, bool kNan, bool kMap, size_t T = kTMax>
HWY_INLINE void GemvFp8XDispatch(size_t nt, const Fp8XCtx& f, size_t r0, const float* xs,
                                 const float* xs2, size_t Kp, float* y, size_t ldy, bool* row_nan) {
  if (nt == T) return GemvBlockFp8X<R, T, kNan, kMap>(f, r0, xs, xs2, Kp, y, ldy, row_nan);
  if constexpr (T > 1)
    GemvFp8XDispatch<R, kNan, kMap, T - 1>(nt, f, r0, xs, xs2, Kp, y, ldy, row_nan);
}

// Rows [r, e) from r in groups of R, for tokens [0, nt) of a block. Only the first token group of
// the first token block (first) checks the weights for NaN codes; later ones reuse its findings.
// xs2: x'·2^112 for the codes the map lets PlaceE4m3 decode, or null (no map, or out of range).
template <size_t R>
size_t GemvFp8XRows(const Fp8XCtx& f, size_t r, size_t e, const float* xs, const float* xs2,
                    size_t Kp, size_t nt, float* y, size_t ldy, bool first, bool* seg_nan) {
  for (; r + R <= e; r += R)
    for (size_t t0 = 0; t0 < nt; t0 += kTMax) {
      const size_t tn = std::min(kTMax, nt - t0);
      const float* xt = xs + t0 * Kp;
      const float* xt2 = xs2 ? xs2 + t0 * Kp : nullptr;
      float* yt = y + t0 * ldy;
      bool* rn = seg_nan + r % 128;
      if (first && t0 == 0) {
        if (xs2)
          GemvFp8XDispatch<R, true, true>(tn, f, r, xt, xt2, Kp, yt, ldy, rn);
        else
          GemvFp8XDispatch<R, true, false>(tn, f, r, xt, xt2, Kp, yt, ldy, rn);
      } else {
        if (xs2)
          GemvFp8XDispatch<R, false, true>(tn, f, r, xt, xt2, Kp, yt, ldy, rn);
        else
          GemvFp8XDispatch<R, false, false>(tn, f, r, xt, xt2, Kp, yt, ldy, rn);
      }
    }
  return r;
}

// Rows [b, e); x2 = 2^(e-119) per (row block, col block), or NaN for a NaN scale. x is read in
// place (token t at x + t·ldx, K values); xs holds x' for a token block, zero padded to Kp, and
// with `place` (f.map set and x'·2^112 exact: fp8_x_prescale) xs2 holds x'·2^112.
void GemvRowsFp8X(const Fp8XCtx& f, const float* x2, size_t ncb, size_t b, size_t e, const float* x,
                  size_t ldx, size_t Kp, size_t n, float* y, size_t ldy, bool narrow, bool place) {
  const DF df;
  const size_t K = f.K;
  const size_t tblk = md::GemvTokenBlock(Kp, kTMax);
  thread_local md::Scratch xs_s, xs2_s;
  float* xs = xs_s.get(std::min(n, tblk) * Kp);
  float* xs2 = place ? xs2_s.get(std::min(n, tblk) * Kp) : nullptr;
  for (size_t seg = b; seg < e;) {  // segments of one 128-row scale block
    const size_t rb = seg / 128;
    const size_t seg_end = std::min(e, (rb + 1) * 128);
    bool seg_nan[128];  // per row of the segment (index r % 128): has a NaN code
    for (size_t tb = 0; tb < n; tb += tblk) {
      const size_t nb = std::min(tblk, n - tb);
      for (size_t t = 0; t < nb; ++t) {  // x' = x · scale · 2^8 for this row block
        const float* src = x + (tb + t) * ldx;
        float* dst = xs + t * Kp;
        const float* fac = x2 + rb * ncb;
        size_t k = 0;
        for (; k + kN <= K; k += kN)  // 128 / kN vectors per column block
          hn::Store(hn::Mul(hn::LoadU(df, src + k), hn::Set(df, fac[k / 128])), df, dst + k);
        for (; k < Kp; k += kN) {  // the partial vector and the padding, from a zeroed copy
          alignas(64) float tail[kN] = {};
          for (size_t i = k; i < std::min(k + kN, K); ++i) tail[i - k] = src[i];
          hn::Store(hn::Mul(hn::Load(df, tail), hn::Set(df, fac[(K - 1) / 128])), df, dst + k);
        }
        if (place)
          for (k = 0; k < Kp; k += kN)
            hn::Store(hn::Mul(hn::Load(df, dst + k), hn::Set(df, 0x1p112f)), df, xs2 + t * Kp + k);
      }
      float* yb = y + tb * ldy;
      size_t r = seg;
      if (nb == 1 && !narrow)
        r = GemvFp8XRows<2 * kR>(f, r, seg_end, xs, xs2, Kp, 1, yb, ldy, tb == 0, seg_nan);
      r = GemvFp8XRows<kR>(f, r, seg_end, xs, xs2, Kp, nb, yb, ldy, tb == 0, seg_nan);
      GemvFp8XRows<1>(f, r, seg_end, xs, xs2, Kp, nb, yb, ldy, tb == 0, seg_nan);
    }
    seg = seg_end;
  }
}

// The FP8 GEMV with the scale on x is exact when every x' = x·2^(e-119) and every weight·scale is
// an exact normal fp32 (no overflow, no subnormal rounding), i.e. for scale exponents e in
// [10, 246] (or NaN scales; 2^(e-119) is then a finite float) and x finite within the matching
// range (x' normal and below 2^127): kF16. kPlace: also x'·2^112 below 2^127, for PlaceE4m3.
enum class Fp8XScale { kNo, kF16, kPlace };
Fp8XScale fp8_x_prescale(const MatrixView& w, const float* x, size_t ldx, size_t n) {
  int emin = 255, emax = 0;
  const size_t nrb = (w.rows + 127) / 128, ncb = (w.cols + 127) / 128;
  for (size_t i = 0; i < nrb; ++i)
    for (size_t j = 0; j < ncb; ++j) {
      const int e = w.scales[i * w.scale_stride + j];
      if (e == 0xff) continue;
      emin = std::min(emin, e);
      emax = std::max(emax, e);
    }
  if (emin > emax) return Fp8XScale::kPlace;  // all scales NaN
  if (emin < 10 || emax > 246) return Fp8XScale::kNo;
  const DF df;
  const float inf = std::numeric_limits<float>::infinity();
  auto vmax = hn::Zero(df), vmin = hn::Set(df, inf);
  float amax = 0.0f, amin = inf;
  for (size_t t = 0; t < n; ++t) {
    const float* src = x + t * ldx;
    size_t k = 0;
    for (; k + kN <= w.cols; k += kN) {
      const VF a = hn::Abs(hn::LoadU(df, src + k));
      if (!hn::AllFalse(df, hn::Ne(a, a))) return Fp8XScale::kNo;  // NaN
      vmax = hn::Max(vmax, a);
      vmin = hn::Min(vmin, hn::IfThenElse(hn::Eq(a, hn::Zero(df)), vmin, a));
    }
    for (; k < w.cols; ++k) {
      const float a = std::fabs(src[k]);
      if (std::isnan(a)) return Fp8XScale::kNo;
      amax = std::max(amax, a);
      if (a != 0.0f) amin = std::min(amin, a);
    }
  }
  amax = std::max(amax, hn::GetLane(hn::MaxOfLanes(df, vmax)));
  amin = std::min(amin, hn::GetLane(hn::MinOfLanes(df, vmin)));
  if (!(amax <= std::numeric_limits<float>::max())) return Fp8XScale::kNo;  // inf
  const double top = std::ldexp(static_cast<double>(amax), emax - 119);
  if (!(top < 0x1p127 &&
        (amin == inf || std::ldexp(static_cast<double>(amin), emin - 119) >= 0x1p-126)))
    return Fp8XScale::kNo;
  return top * 0x1p112 < 0x1p127 ? Fp8XScale::kPlace : Fp8XScale::kF16;
}

#else
#define DSV4_FP8_XSCALE 0
#endif  // HWY_TARGET <= HWY_AVX2

// ---- Driver.

template <class F>
void Run(const F& f, size_t rows, size_t K, const float* xp, size_t Kp, size_t ldp, size_t n,
         float* y, size_t ldy, ThreadPool* pool, bool gemm, bool narrow) {
  const size_t macs = rows * K * n;
  if (gemm) {
#if DSV4_GEMM_T
    const size_t nv = Kp / kN, ntg = TokenGroups(n);
    thread_local md::Scratch xts;
    float* xt = xts.get(kN * ntg * nv * kTT);
    // Split over token groups: done by the calling thread alone it was ~10 % of an expert's GEMM.
    md::ParallelRows(pool, ntg, 1, n * Kp,
                     [&](size_t g0, size_t g1) { PackXT(xp, ldp, n, nv, g0, g1, xt); });
    md::ParallelRows(pool, rows, kPanelRows, macs,
                     [&](size_t b, size_t e) { GemmRowsT(f, K, b, e, xt, nv, n, y, ldy); });
#else
    md::ParallelRows(pool, rows, md::kTileRows, macs,
                     [&](size_t b, size_t e) { GemmRows(f, K, b, e, xp, Kp, ldp, n, y, ldy); });
#endif
  } else {
    // Few rows: one share of rows per thread, so that each thread reads x once and, for a single
    // token, so that the shares are even (grains of 16 split mHC's 24-row mix 16/8; 12/12
    // measured 6-10 % faster in flash-4l decode, a throwaway patch alternating the two ways
    // token by token, 3 runs).
    const size_t nt = md::PoolThreads(pool);
    const size_t grain =
        md::FewRowsForGemm(rows, pool) ? (rows + nt * kR - 1) / (nt * kR) * kR : 16;
    if constexpr (std::is_same_v<F, Fp4Fmt>) {
      if (const Fp4RowsFn fixed = n == 1 ? Fp4FixedRows(K, f.scale_stride) : nullptr) {
        md::ParallelRows(pool, rows, grain, macs,
                         [&](size_t b, size_t e) { fixed(f, b, e, xp, Kp, y, narrow); });
        return;
      }
    }
    md::ParallelRows(pool, rows, grain, macs,
                     [&](size_t b, size_t e) { GemvRows(f, K, b, e, xp, Kp, n, y, ldy, narrow); });
  }
}

void MatmulImpl(const MatrixView& w, const float* x, size_t ldx, size_t n, float* y, size_t ldy,
                ThreadPool* pool, bool force_gemm, bool narrow) {
  const size_t rows = w.rows, K = w.cols;
  if (n == 0 || rows == 0) return;
  if (K == 0) {
    for (size_t t = 0; t < n; ++t) std::fill(y + t * ldy, y + t * ldy + rows, 0.0f);
    return;
  }
  const bool fp4 = w.format == WeightFormat::kFp4Block32;
  const bool fp8 = w.format == WeightFormat::kFp8Block128;
  const bool bf16 = w.format == WeightFormat::kBF16;
  const size_t C = (fp4 || fp8 || bf16) ? 2 * kN : kN;
  const size_t Kp = (K + C - 1) / C * C;
  // FP8 tries the GEMV with the scale on x (weights decoded in registers) at every n unless the
  // GEMM is forced: matmul() forces it for the shapes where it timed faster on this machine
  // (kernels/path_tuner.h).
  // Few rows take the GEMV at any n (md::FewRowsForGemm).
  const bool gemm =
      force_gemm || (n >= kMatmulGemmMinTokens && !fp8 && !md::FewRowsForGemm(rows, pool));
  const auto* data = static_cast<const uint8_t*>(w.data);
  thread_local md::Scratch xs, fs;
  // FP8 factors per (row block, col block): 2^(e-119), or the scale itself when some scale
  // exceeds 2^119 (two multiplies per weight), NaN for a NaN scale.
  const size_t nrb = (rows + 127) / 128, ncb = (K + 127) / 128;
  auto fp8_factors = [&](bool two_mul) {
    float* fac = fs.get(nrb * ncb);
    const float* e8 = md::e8m0_table();
    for (size_t i = 0; i < nrb; ++i)
      for (size_t j = 0; j < ncb; ++j) {
        const uint8_t e = w.scales[i * w.scale_stride + j];
        fac[i * ncb + j] = two_mul     ? e8[e]
                           : e == 0xff ? std::numeric_limits<float>::quiet_NaN()
                                       : std::ldexp(1.0f, static_cast<int>(e) - 119);
      }
    return fac;
  };
#if DSV4_FP8_XSCALE
  // The map is built on the first product with the matrix, whichever path it takes, so that later
  // (decode) calls allocate nothing.
  const uint64_t* map = fp8 && w.fp8_map
                            ? w.fp8_map->bits(pool) + w.fp8_map_row0 * w.fp8_map->words_per_row()
                            : nullptr;
  const Fp8XScale xscale = fp8 && !force_gemm ? fp8_x_prescale(w, x, ldx, n) : Fp8XScale::kNo;
  if (xscale != Fp8XScale::kNo) {           // reads x in place, no packing
    const float* fac = fp8_factors(false);  // = the x' factors
    Fp8XCtx f{data, K};
    if (map && xscale == Fp8XScale::kPlace) {
      f.map = map;
      f.map_wpr = w.fp8_map->words_per_row();
    }
    md::ParallelRows(pool, rows, 128, rows * K * n, [&](size_t b, size_t e) {
      GemvRowsFp8X(f, fac, ncb, b, e, x, ldx, Kp, n, y, ldy, narrow, f.map != nullptr);
    });
    return;
  }
#endif
  // x needs no packing when its rows already are what the kernels read: whole chunks, in order
  // (not FP4's even/odd halves), at the stride the path expects (the transposing GEMM packs its
  // own copy from any stride).
  const bool x_in_place = !fp4 && K == Kp && (gemm ? DSV4_GEMM_T != 0 : ldx == Kp);
  const size_t ldp = x_in_place ? ldx : gemm ? Kp + kN : Kp;  // see GemmRows
  // Otherwise pack x: zero padded to Kp, FP4 as even/odd halves per chunk.
  const float* xr = x;
  if (!x_in_place) {
    float* xp = xs.get(n * ldp);
    xr = xp;
    for (size_t t = 0; t < n; ++t) {
      const float* src = x + t * ldx;
      float* dst = xp + t * ldp;
      if (!fp4) {
        std::memcpy(dst, src, K * sizeof(float));
        std::fill(dst + K, dst + Kp, 0.0f);
      } else {
        size_t c0 = 0;
#if HWY_TARGET != HWY_SCALAR
        const DF df;
        for (; c0 + C <= K; c0 += C) {  // full chunks: one de-interleave per pair of vectors
          const VF lo = hn::LoadU(df, src + c0), hi = hn::LoadU(df, src + c0 + kN);
          hn::Store(hn::ConcatEven(df, hi, lo), df, dst + c0);
          hn::Store(hn::ConcatOdd(df, hi, lo), df, dst + c0 + kN);
        }
#endif
        for (; c0 < Kp; c0 += C) {
          for (size_t j = 0; j < kN; ++j) {
            const size_t ie = c0 + 2 * j, io = ie + 1;
            dst[c0 + j] = ie < K ? src[ie] : 0.0f;
            dst[c0 + kN + j] = io < K ? src[io] : 0.0f;
          }
        }
      }
    }
  }
  switch (w.format) {
    case WeightFormat::kF32:
      Run(F32Fmt{data, K}, rows, K, xr, Kp, ldp, n, y, ldy, pool, gemm, narrow);
      break;
    case WeightFormat::kBF16:
      Run(BF16Fmt{data, K}, rows, K, xr, Kp, ldp, n, y, ldy, pool, gemm, narrow);
      break;
    case WeightFormat::kFp8Block128: {
      bool two_mul = false;
      for (size_t i = 0; i < nrb; ++i)
        for (size_t j = 0; j < ncb; ++j)
          two_mul |=
              (w.scales[i * w.scale_stride + j] > 246 && w.scales[i * w.scale_stride + j] != 0xff);
      const float* fac = fp8_factors(two_mul);
      // x was packed for the GEMV (ldp == Kp), or is read in place at that stride, unless the GEMM
      // was forced.
      const bool fp8_gemm = gemm || n >= kMatmulGemmMinTokens;
      if (two_mul)
        Run(Fp8Fmt<true>{data, K, fac, ncb}, rows, K, xr, Kp, ldp, n, y, ldy, pool, fp8_gemm,
            narrow);
      else
        Run(Fp8Fmt<false>{data, K, fac, ncb}, rows, K, xr, Kp, ldp, n, y, ldy, pool, fp8_gemm,
            narrow);
      break;
    }
    case WeightFormat::kFp4Block32:
      Run(Fp4Fmt{data, K, w.scales, w.scale_stride, md::fp4_scaled_tables()}, rows, K, xr, Kp, ldp,
          n, y, ldy, pool, gemm, narrow);
      break;
  }
}

int64_t TargetImpl() { return HWY_TARGET; }

}  // namespace HWY_NAMESPACE
}  // namespace dsv4
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace dsv4 {

HWY_EXPORT(MatmulImpl);
HWY_EXPORT(TargetImpl);

void matmul_simd(const MatrixView& w, const float* x, size_t ldx, size_t n, float* y, size_t ldy,
                 ThreadPool* pool, bool force_gemm, bool narrow_gemv) {
  HWY_DYNAMIC_DISPATCH(MatmulImpl)(w, x, ldx, n, y, ldy, pool, force_gemm, narrow_gemv);
}

const char* matmul_target_name() { return hwy::TargetName(HWY_DYNAMIC_DISPATCH(TargetImpl)()); }

}  // namespace dsv4
#endif  // HWY_ONCE
