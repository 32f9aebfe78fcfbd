#include "kernels/membench.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "util/thread_pool.h"

namespace dsv4 {
namespace {

TEST(Membench, SmallMeasurementsArePositiveAndFinite) {
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    const double read = measure_read_gbps(pool, 8 << 20, 2);
    const double triad = measure_triad_gbps(pool, 8 << 20, 2);
    const double flops = measure_peak_flops(pool, 0.02);
    EXPECT_TRUE(std::isfinite(read) && read > 0) << read;
    EXPECT_TRUE(std::isfinite(triad) && triad > 0) << triad;
    EXPECT_TRUE(std::isfinite(flops) && flops > 1e8) << flops;
  }
  EXPECT_NE(std::string(membench_target_name()), "");
}

// Ranges of any length and alignment, empty ones included, split over the threads wherever the
// shares fall: every byte is read exactly once per pass (the function throws otherwise, and ASan
// catches a read outside them); nothing at all reads as 0 GB/s.
TEST(Membench, ReadOverRangesTakesOddSpans) {
  std::vector<uint8_t> mem(5 << 20, 0x5a);
  const std::vector<std::span<const uint8_t>> ranges = {{mem.data() + 3, 1000001},
                                                        {mem.data(), 0},
                                                        {mem.data() + 1234567, 7},
                                                        {mem.data() + 2000000, 3000000}};
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    double gbps = 0;
    ASSERT_NO_THROW(gbps = measure_read_gbps_over(pool, ranges, 2));
    EXPECT_TRUE(std::isfinite(gbps) && gbps > 0) << gbps;
    EXPECT_EQ(measure_read_gbps_over(pool, {}, 2), 0.0);
  }
}

}  // namespace
}  // namespace dsv4
