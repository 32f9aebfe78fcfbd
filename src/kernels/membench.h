// Machine roofline measurements for `dsv4 bench`: streaming bandwidth (read-only and STREAM
// triad) and the peak FLOP/s of the instruction the prefill GEMM uses (fp32 vector FMA of the
// SIMD target matmul() dispatches to), each run on all threads of the given pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "util/huge_pages.h"

namespace dsv4 {

class ThreadPool;

// Read-only streaming bandwidth in GB/s (1e9 bytes/s): every thread sums its own contiguous part
// of a `bytes`-sized buffer (first touched by that thread) with vector loads; best of `passes`.
// Decode reads weights and writes almost nothing, so this is its roofline. Use ≥ 1 GiB. The buffer
// is mapped in 2 MiB pages where the kernel allows (util/huge_pages.h), like the weights, so the
// roofline is the faster of the two page sizes; Pages::kSmall measures 4 KiB pages instead.
double measure_read_gbps(ThreadPool& pool, size_t bytes, int passes = 5,
                         Pages pages = Pages::kHuge);

// Read-only bandwidth over memory already mapped (e.g. Model::token_weight_ranges()), in place,
// GB/s: the loop of measure_read_gbps (integer lanes, since weights are not floats) with the
// concatenated ranges split into one contiguous share per thread; an untimed pass first, then best
// of `passes`, each started with the ranges flushed from the caches (as decode finds them).
// Physical memory need not be uniform, so a fresh buffer need not read like the pages decode
// streams: on the 2-vCPU VM this project is developed on, four 1 GiB buffers mapped one after the
// other read at 48, 56, 72 and 41 GB/s, each the same pass after pass, and one checkpoint file's
// pages differ by region: flash-4l's LM head (the second half of its first file) read at 42–51
// GB/s in rounds where 1 GiB of the file's first half read at 59–68 and a fresh buffer at 56–70
// (throwaway probes). Grouped by physical address, the rate follows the address, whatever the
// pages hold: in a fast moment physical GiB 4-7 read at ~50-63 GB/s and GiB 9-12 at ~65-76 (2
// threads, same rounds, order alternated; a throwaway probe with its own AVX-512 sum); the page
// cache had put the checkpoint low, and a buffer mapped after it went high.
// bench/memory_placement_bench measures the same way with this function; in the slower moments it
// has run in so far the spread was small or absent (GiB 4-8 at 36-38 against GiB 14-20 at 40-46;
// flat at 31-36; flat at 45-53), so the gradient shows when the machine is fast, not always.
// Throws std::logic_error if a pass did not read every byte exactly once.
double measure_read_gbps_over(ThreadPool& pool, std::span<const std::span<const uint8_t>> ranges,
                              int passes = 3);

// STREAM triad a[i] = b[i] + s·c[i] over three float arrays of bytes/3 each; GB/s counted the
// STREAM way (3 × array bytes per pass, write-allocate traffic not counted); best of `passes`.
double measure_triad_gbps(ThreadPool& pool, size_t bytes, int passes = 5);

// Peak fp32 FLOP/s of all threads running a register-only loop of independent vector FMAs
// (2 FLOPs per lane per FMA), the instruction of the prefill GEMM microkernel. Runs for about
// `seconds`; best of a few repetitions.
double measure_peak_flops(ThreadPool& pool, double seconds = 0.2);

// The SIMD target these measurements (and matmul) use on this machine.
const char* membench_target_name();

}  // namespace dsv4
