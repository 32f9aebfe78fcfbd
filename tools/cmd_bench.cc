// dsv4 bench: prefill and decode speed next to the machine's own limits, measured in one run:
// decode GB/s against a read-only streaming kernel (decode is bandwidth-bound), prefill FLOP/s
// against a register-only FMA loop (prefill is compute-bound).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"
#include "gen_common.h"
#include "kernels/membench.h"
#include "model/model.h"
#include "util/error.h"
#include "util/process_stats.h"
#include "util/thread_pool.h"

namespace dsv4::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<int64_t> parse_depths(const std::string& s) {
  std::vector<int64_t> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const long long d = std::stoll(item, &used);
      if (used != item.size() || d < 0) throw std::invalid_argument(item);
      v.push_back(d);
    } catch (const std::exception&) {
      throw Error("--depth: '" + item + "' is not a non-negative integer");
    }
  }
  if (v.empty()) throw Error("--depth: no depths given");
  return v;
}

// Mean and sample standard deviation of repeated timings (llama-bench's "avg ± stdev").
struct Stat {
  double mean = 0, sd = 0;
};
Stat stat(const std::vector<double>& v) {
  Stat r;
  for (double x : v) r.mean += x / static_cast<double>(v.size());
  if (v.size() > 1) {
    double ss = 0;
    for (double x : v) ss += (x - r.mean) * (x - r.mean);
    r.sd = std::sqrt(ss / static_cast<double>(v.size() - 1));
  }
  return r;
}

// "12.34" or, over several repetitions, "12.34 ± 0.56".
std::string with_sd(const Stat& s, int reps) {
  char buf[64];
  if (reps > 1)
    std::snprintf(buf, sizeof buf, "%.2f ± %.2f", s.mean, s.sd);
  else
    std::snprintf(buf, sizeof buf, "%.2f", s.mean);
  return buf;
}

struct DecodeRow {
  int64_t depth = 0;
  Stat tok_s;
  double bytes_per_token = 0, gb_s = 0;  // GB/s: mean over the repetitions
  // Per part of the forward pass, over all timed tokens: seconds and bytes read.
  ForwardTimes times;
  double part_bytes[static_cast<int>(ForwardPart::kCount)] = {};
  double tokens = 0;
  double seconds = 0;  // wall time of all timed tokens (their loop, not only the forward passes)
};

constexpr int kParts = static_cast<int>(ForwardPart::kCount);

// One part of a decoded token, per token: time, bytes read and their rate; "other" (the time in
// no part) comes last, with no bytes.
struct PartRow {
  const char* name;
  double ms, bytes, gb_s;
  double pages_gb_s;  // the read-only sum over this part's weight pages; 0 for "other"
};
std::vector<PartRow> part_rows(const DecodeRow& r, const double (&pages_gbps)[kParts]) {
  std::vector<PartRow> v;
  double in_parts = 0;
  for (int p = 0; p < kParts; ++p) {
    const double sec = r.times.seconds[p];
    in_parts += sec;
    v.push_back({forward_part_name(static_cast<ForwardPart>(p)), sec / r.tokens * 1e3,
                 r.part_bytes[p] / r.tokens, sec > 0 ? r.part_bytes[p] / sec / 1e9 : 0.0,
                 pages_gbps[p]});
  }
  v.push_back({"other", (r.times.total - in_parts) / r.tokens * 1e3, 0.0, 0.0, 0.0});
  return v;
}

int run_bench(int argc, char** argv) {
  CLI::App app{"Benchmark prefill and decode against this machine's bandwidth and FLOP/s",
               "dsv4 bench"};
  std::string model_dir, depth_str = "0";
  int threads = 0, n_prompt = 512, n_gen = 128, reps = 3;
  bool pin = false;
  size_t membench_mib = 1024, chunk = 512;
  bool json_out = false;
  app.add_option("-m,--model", model_dir, "model directory")->required();
  add_thread_options(app, threads, pin);
  app.add_option("-p,--n-prompt", n_prompt, "prefill length in tokens (default 512)");
  app.add_option("-n,--n-gen", n_gen, "decoded tokens per depth (default 128)");
  app.add_option("--depth", depth_str,
                 "comma-separated context depths for decode, e.g. 0,4096,32768 (default 0)");
  app.add_option("-r,--repetitions", reps,
                 "timed repetitions of the prefill and of each depth's decode; mean ± standard "
                 "deviation are printed (default 3)");
  app.add_option("--chunk", chunk, "prefill chunk used to reach a depth (default 512)");
  app.add_option("--membench-mib", membench_mib,
                 "buffer for the bandwidth kernels in MiB (default 1024)");
  ModelOptions mo;
  add_expert_prefetch_option(app, mo.expert_prefetch);
  app.add_flag("--json", json_out, "print one JSON object instead of the table");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (n_prompt < 1 || n_gen < 1 || reps < 1) throw Error("-p, -n and -r must be positive");
  const std::vector<int64_t> depths = parse_depths(depth_str);
  ThreadPool pool(threads, pin);

  // Load: mapped, validated, nothing copied.
  const size_t rss0 = resident_set_bytes();
  const auto t_load = Clock::now();
  auto model = Model::load(model_dir, mo);
  const double load_s = seconds_since(t_load);
  const size_t rss_load = resident_set_bytes();
  const ModelConfig& cfg = model->config();
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> tok(3, cfg.vocab_size - 1);
  auto random_ids = [&](size_t n) {
    std::vector<int32_t> v(n);
    for (auto& x : v) x = tok(rng);
    return v;
  };
  ForwardResult res;
  auto run = [&](SequenceState& s, const std::vector<int32_t>& ids, bool logits,
                 ForwardTimes* times = nullptr) {
    BatchItem it;
    it.seq = &s;
    it.tokens = ids;
    it.no_logits = !logits;
    ForwardOptions fo;
    fo.times = times;
    model->forward(std::span<const BatchItem>(&it, 1), pool, res, fo);
  };

  // Machine limits with the same thread count. Machines are often shared: the limits are measured
  // again after each timed phase and the best measurement is kept, so a moment of contention
  // while measuring cannot lower the roofline and inflate a ratio.
  double read_gbps = measure_read_gbps(pool, membench_mib << 20);
  double triad_gbps = measure_triad_gbps(pool, membench_mib << 20);
  double peak_flops = measure_peak_flops(pool);
  auto remeasure_limits = [&] {
    read_gbps = std::max(read_gbps, measure_read_gbps(pool, membench_mib << 20));
    triad_gbps = std::max(triad_gbps, measure_triad_gbps(pool, membench_mib << 20));
    peak_flops = std::max(peak_flops, measure_peak_flops(pool));
  };

  double cold_prefill_tok_s = 0;
  // Warm-up, as llama-bench does: an untimed prefill of the same length, so the timings below
  // measure steady-state compute and bandwidth, not first-touch page faults — of the weights'
  // mapping (8 tokens left ~6 of flash-4l's 32 experts per layer untouched) or of work buffers
  // growing to the prompt's size (in perf, ~4 % of a cold 512-token prefill). Then a second
  // prefill and a few single tokens: matmul()'s path tuner does not time a matrix's first call
  // and times both paths twice after it (kernels/path_tuner.h), so its trials, half of them on
  // the slower path, run here rather than in the timed repetitions.
  {
    SequenceState s = model->new_sequence();
    const auto t_cold = Clock::now();
    run(s, random_ids(static_cast<size_t>(n_prompt)), true);
    cold_prefill_tok_s = n_prompt / seconds_since(t_cold);
    SequenceState s2 = model->new_sequence();
    run(s2, random_ids(static_cast<size_t>(n_prompt)), true);
    for (int i = 0; i < 6; ++i) run(s2, random_ids(1), true);
  }

  // Prefill.
  SequenceState s = model->new_sequence();
  double prefill_flops = 0;
  for (int i = 0; i < n_prompt; ++i) {  // FLOPs of each position, at its own depth
    const auto c = model->token_cost(s);
    // Only the last position's logits are computed (the LM head is not run for the others).
    const double out_macs = i + 1 == n_prompt ? 0.0 : c.output_macs;
    prefill_flops += 2.0 * (c.weight_macs - out_macs + c.attention_macs);
    s.n_past++;
  }
  std::vector<double> prefill_rates;
  for (int r = 0; r < reps; ++r) {
    s = model->new_sequence();
    const auto prompt = random_ids(n_prompt);
    const auto t_pre = Clock::now();
    run(s, prompt, true);
    prefill_rates.push_back(n_prompt / seconds_since(t_pre));
  }
  const Stat prefill = stat(prefill_rates);
  const double prefill_tok_s = prefill.mean;
  const double prefill_flop_s = prefill_flops / n_prompt * prefill.mean;
  remeasure_limits();

  // Decode at each depth.
  std::vector<DecodeRow> rows;
  for (int64_t depth : depths) {
    SequenceState d = model->new_sequence();
    d.reserve(depth + static_cast<int64_t>(n_gen) * reps);  // as the generator does: no growth
    for (int64_t done = 0; done < depth;) {
      const size_t n =
          static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(chunk), depth - done));
      run(d, random_ids(n), false);
      done += static_cast<int64_t>(n);
    }
    // Repetitions continue the same sequence (the context grows by n tokens each time); bytes
    // are counted per token at its own depth.
    std::vector<double> rates, gbps;
    double all_bytes = 0;
    DecodeRow r;
    for (int rep = 0; rep < reps; ++rep) {
      double bytes = 0;
      const auto t0 = Clock::now();
      for (int i = 0; i < n_gen; ++i) {
        const auto c = model->token_cost(d);
        bytes += static_cast<double>(c.weight_bytes + c.kv_bytes);
        for (int p = 0; p < kParts; ++p) r.part_bytes[p] += static_cast<double>(c.part_bytes[p]);
        run(d, random_ids(1), true, &r.times);
      }
      const double sec = seconds_since(t0);
      r.seconds += sec;
      rates.push_back(n_gen / sec);
      gbps.push_back(bytes / sec / 1e9);
      all_bytes += bytes;
    }
    r.tokens = static_cast<double>(n_gen) * reps;
    r.depth = depth;
    r.tok_s = stat(rates);
    r.gb_s = stat(gbps).mean;
    r.bytes_per_token = all_bytes / (static_cast<double>(n_gen) * reps);
    rows.push_back(r);
  }
  const size_t rss_end = resident_set_bytes();
  const MappedResidency weights =
      file_mapping_residency(std::filesystem::canonical(model_dir).string());
  remeasure_limits();
  // The same read over the checkpoint pages one token streams: where physical memory is not
  // uniform (kernels/membench.h), a fresh buffer can read much faster or slower than the weights
  // do. Measured after RSS is taken, since it maps routed experts the run may not have touched.
  const auto token_ranges = model->token_weight_ranges();
  size_t token_range_bytes = 0;
  for (const auto& r : token_ranges) token_range_bytes += r.size();
  const double weights_read_gbps = measure_read_gbps_over(pool, token_ranges, 5);
  // And over each part's pages alone: a part's GB/s divided by its own pages' rate says how much
  // of its time is the engine's and how much is where its pages lie.
  double part_pages_gbps[kParts] = {};
  for (int p = 0; p < kParts; ++p)
    part_pages_gbps[p] =
        measure_read_gbps_over(pool, model->token_weight_ranges(static_cast<ForwardPart>(p)), 5);
  const DecodeRow& d0 = rows.front();

  if (json_out) {
    nlohmann::ordered_json j;
    j["model"] = model_dir;
    j["threads"] = pool.size();
    j["pinned"] = pin;
    j["expert_prefetch"] = model->prefetches_experts();
    j["simd_target"] = membench_target_name();
    j["load_s"] = load_s;
    j["rss_bytes_before_load"] = rss0;
    j["rss_bytes_after_load"] = rss_load;
    j["rss_bytes"] = rss_end;
    j["weights_resident_bytes"] = weights.resident_bytes;
    j["weights_huge_page_bytes"] = weights.huge_bytes;
    j["repetitions"] = reps;
    j["prefill_tokens"] = n_prompt;
    j["prefill_tok_s"] = prefill_tok_s;
    j["prefill_tok_s_sd"] = prefill.sd;
    j["prefill_cold_tok_s"] = cold_prefill_tok_s;
    j["prefill_flop_per_token"] = prefill_flops / n_prompt;
    j["prefill_flop_s"] = prefill_flop_s;
    j["peak_flop_s"] = peak_flops;
    j["prefill_peak_ratio"] = prefill_flop_s / peak_flops;
    j["decode_tok_s"] = d0.tok_s.mean;
    j["decode_tok_s_sd"] = d0.tok_s.sd;
    j["decode_bytes_per_token"] = d0.bytes_per_token;
    j["decode_gb_s"] = d0.gb_s;
    j["read_gb_s"] = read_gbps;
    j["triad_gb_s"] = triad_gbps;
    j["decode_roofline_ratio"] = d0.gb_s / read_gbps;
    j["weights_read_gb_s"] = weights_read_gbps;
    j["weights_read_bytes"] = token_range_bytes;
    j["decode_weights_read_ratio"] = d0.gb_s / weights_read_gbps;
    j["decode"] = nlohmann::json::array();
    for (const auto& r : rows) {
      nlohmann::ordered_json parts = nlohmann::ordered_json::array();
      for (const PartRow& p : part_rows(r, part_pages_gbps)) {
        nlohmann::ordered_json o = {{"part", p.name},
                                    {"ms_per_token", p.ms},
                                    {"bytes_per_token", p.bytes},
                                    {"gb_s", p.gb_s}};
        if (p.pages_gb_s > 0) {
          o["pages_read_gb_s"] = p.pages_gb_s;
          o["pages_read_ratio"] = p.gb_s / p.pages_gb_s;
        }
        parts.push_back(o);
      }
      j["decode"].push_back({{"depth", r.depth},
                             {"tok_s", r.tok_s.mean},
                             {"tok_s_sd", r.tok_s.sd},
                             {"ms_per_token", r.seconds / r.tokens * 1e3},
                             {"bytes_per_token", r.bytes_per_token},
                             {"gb_s", r.gb_s},
                             {"roofline_ratio", r.gb_s / read_gbps},
                             {"weights_read_ratio", r.gb_s / weights_read_gbps},
                             {"parts", parts}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("dsv4 bench  model %s  threads %d%s  SIMD %s\n", model_dir.c_str(), pool.size(),
              pin ? " (pinned)" : "", membench_target_name());
  std::printf(
      "  load                %8.2f s    RSS %.2f GB after load (%.2f GB before), %.2f GB at the "
      "end\n",
      load_s, rss_load / 1e9, rss0 / 1e9, rss_end / 1e9);
  // Decode is markedly slower from 4 KiB pages (util/huge_pages.h); say which ones it got.
  std::printf("  weights             %.2f GB resident at the end, %.2f GB of it in 2 MiB pages%s\n",
              weights.resident_bytes / 1e9, weights.huge_bytes / 1e9,
              weights.huge_bytes * 2 < weights.resident_bytes
                  ? " (the page cache holds the files in small pages: see the README on huge pages)"
                  : "");
  std::printf(
      "  machine             read-only %.1f GB/s   STREAM triad %.1f GB/s   peak %.1f GFLOP/s\n",
      read_gbps, triad_gbps, peak_flops / 1e9);
  std::printf(
      "  weights read-only   %.1f GB/s = %.2f of read-only, over the %.3f GB of checkpoint pages "
      "one token reads\n",
      weights_read_gbps, weights_read_gbps / read_gbps, token_range_bytes / 1e9);
  std::printf("  prefill %5d tok   %s tok/s   %.2f GFLOP/token   %.1f GFLOP/s = %.2f of peak\n",
              n_prompt, with_sd(prefill, reps).c_str(), prefill_flops / n_prompt / 1e9,
              prefill_flop_s / 1e9, prefill_flop_s / peak_flops);
  std::printf(
      "                      (%s; after two untimed warm-up prefills, the first (cold) at "
      "%.2f tok/s)\n",
      reps > 1 ? (std::to_string(reps) + " repetitions: mean ± standard deviation").c_str()
               : "1 repetition",
      cold_prefill_tok_s);
  for (const auto& r : rows) {
    std::printf(
        "  decode @ depth %-7lld %s tok/s   %.3f GB/token   %.1f GB/s = %.2f of read-only, %.2f of "
        "weights read-only\n",
        static_cast<long long>(r.depth), with_sd(r.tok_s, reps).c_str(), r.bytes_per_token / 1e9,
        r.gb_s, r.gb_s / read_gbps, r.gb_s / weights_read_gbps);
    // Where a token's time goes: each part's share of the weights and KV, and its rate.
    std::string line = "                      per token:";
    for (const PartRow& p : part_rows(r, part_pages_gbps)) {
      char buf[200];
      if (p.bytes > 0)
        std::snprintf(buf, sizeof buf, "%s %s %.1f ms %.3f GB %.1f GB/s (%.2f of its pages' %.1f)",
                      line.back() == ':' ? "" : ",", p.name, p.ms, p.bytes / 1e9, p.gb_s,
                      p.gb_s / p.pages_gb_s, p.pages_gb_s);
      else
        std::snprintf(buf, sizeof buf, ", %s %.1f ms", p.name, p.ms);
      line += buf;
    }
    std::printf("%s\n", line.c_str());
  }
  return 0;
}

}  // namespace

DSV4_COMMAND("bench", "prefill/decode speed next to the machine's bandwidth and FLOP/s", run_bench);

}  // namespace dsv4::cli
