#include "kernels/membench.h"

#include <gtest/gtest.h>

#include <cmath>

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

}  // namespace
}  // namespace dsv4
