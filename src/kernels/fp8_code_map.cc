#include "kernels/fp8_code_map.h"

#include <algorithm>
#include <cstring>

#include "util/thread_pool.h"

namespace dsv4 {

namespace {

constexpr uint64_t kOnes = 0x0101010101010101ull;

// Eight codes at once (SWAR), per byte: u = ((b & 0x7f) + 1) & 0x7f is 0 for NaN, 1 for zero and
// 2..8 for subnormals; no byte carries into the next (each stays below 0x80 before the add).
// Flagged: u == 0 (u + 0x7f has no top bit) or 2 ≤ u ≤ 8 (u + 0x7e has it, u + 0x77 not).
bool word_needs_slow_decode(uint64_t w) {
  const uint64_t u = ((w & (0x7f * kOnes)) + kOnes) & (0x7f * kOnes);
  const uint64_t nan = ~(u + 0x7f * kOnes);
  const uint64_t sub = (u + 0x7e * kOnes) & ~(u + 0x77 * kOnes);
  return ((nan | sub) & (0x80 * kOnes)) != 0;
}

}  // namespace

bool fp8_group_needs_slow_decode(const uint8_t* p, size_t bytes) {
  uint8_t buf[Fp8CodeMap::kGroupBytes] = {};  // zero codes pad a partial group: they are fast
  std::memcpy(buf, p, bytes);
  for (size_t i = 0; i < sizeof(buf); i += 8) {
    uint64_t w;
    std::memcpy(&w, buf + i, 8);
    if (word_needs_slow_decode(w)) return true;
  }
  return false;
}

Fp8CodeMap::Fp8CodeMap(const uint8_t* data, size_t rows, size_t cols)
    : data_(data),
      rows_(rows),
      cols_(cols),
      words_per_row_((cols + kGroupBytes * 64 - 1) / (kGroupBytes * 64)) {}

const uint64_t* Fp8CodeMap::bits(ThreadPool* pool) const {
  std::call_once(built_, [&] {
    bits_.assign(rows_ * words_per_row_, 0);
    auto build = [&](size_t r0, size_t r1) {
      for (size_t r = r0; r < r1; ++r) {
        const uint8_t* row = data_ + r * cols_;
        uint64_t* words = bits_.data() + r * words_per_row_;
        for (size_t b = 0, g = 0; b < cols_; b += kGroupBytes, ++g) {
          const size_t n = std::min(kGroupBytes, cols_ - b);
          if (n < kGroupBytes || fp8_group_needs_slow_decode(row + b, n))
            words[g / 64] |= uint64_t{1} << (g % 64);
        }
      }
    };
    if (pool && pool->size() > 1 && rows_ > 1)
      pool->parallel_for(rows_, [&](size_t b, size_t e, int) { build(b, e); });
    else
      build(0, rows_);
  });
  return bits_.data();
}

}  // namespace dsv4
