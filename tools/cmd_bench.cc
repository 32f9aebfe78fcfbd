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
  // Each repetition's GB/s over the read-only rate of the token's pages just before and after it.
  Stat paired_pages_ratio;
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

// What the bench measures with one thread count: that many threads' limits, prefill and decode.
struct ThreadRun {
  int threads = 0;
  // The machine's limits with these threads. Machines are often shared: the limits are measured
  // again after each timed phase and the best measurement is kept, so a moment of contention
  // while measuring cannot lower the roofline and inflate a ratio.
  double read_gbps = 0, triad_gbps = 0, peak_flops = 0;
  double cold_prefill_tok_s = 0;
  Stat prefill;
  double prefill_flops_per_token = 0;
  std::vector<DecodeRow> rows;
  // Right after the last decoded token, before the page reads below map anything more: the
  // process's resident set and the checkpoint's resident pages.
  size_t rss_after_decode = 0;
  MappedResidency weights_after_decode;
  // The read-only sum over the checkpoint pages one token reads, and over each part's pages.
  double weights_read_gbps = 0;
  double part_pages_gbps[kParts] = {};

  double prefill_flop_s() const { return prefill_flops_per_token * prefill.mean; }
};

struct BenchSettings {
  int n_prompt = 512, n_gen = 128, reps = 3;
  size_t membench_mib = 1024, chunk = 512;
  std::vector<int64_t> depths;
};

// `model_dir` is canonical: the checkpoint's mappings are found by it (file_mapping_residency).
ThreadRun measure_with(Model& model, const std::string& model_dir, ThreadPool& pool,
                       const BenchSettings& b) {
  ThreadRun tr;
  tr.threads = pool.size();
  const ModelConfig& cfg = model.config();
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
    model.forward(std::span<const BatchItem>(&it, 1), pool, res, fo);
  };
  const size_t mem_bytes = b.membench_mib << 20;
  tr.read_gbps = measure_read_gbps(pool, mem_bytes);
  tr.triad_gbps = measure_triad_gbps(pool, mem_bytes);
  tr.peak_flops = measure_peak_flops(pool);
  auto remeasure_limits = [&] {
    tr.read_gbps = std::max(tr.read_gbps, measure_read_gbps(pool, mem_bytes));
    tr.triad_gbps = std::max(tr.triad_gbps, measure_triad_gbps(pool, mem_bytes));
    tr.peak_flops = std::max(tr.peak_flops, measure_peak_flops(pool));
  };

  // Warm-up, as llama-bench does: an untimed prefill of the same length, so the timings below
  // measure steady-state compute and bandwidth, not first-touch page faults — of the weights'
  // mapping (8 tokens left ~6 of flash-4l's 32 experts per layer untouched) or of work buffers
  // growing to the prompt's size (in perf, ~4 % of a cold 512-token prefill). Then a second
  // prefill and a few single tokens: matmul()'s path tuner does not time a matrix's first call
  // and times both paths twice after it (kernels/path_tuner.h), so its trials, half of them on
  // the slower path, run here rather than in the timed repetitions.
  {
    SequenceState s = model.new_sequence();
    const auto t_cold = Clock::now();
    run(s, random_ids(static_cast<size_t>(b.n_prompt)), true);
    tr.cold_prefill_tok_s = b.n_prompt / seconds_since(t_cold);
    SequenceState s2 = model.new_sequence();
    run(s2, random_ids(static_cast<size_t>(b.n_prompt)), true);
    for (int i = 0; i < 6; ++i) run(s2, random_ids(1), true);
  }

  // Prefill.
  SequenceState s = model.new_sequence();
  double prefill_flops = 0;
  for (int i = 0; i < b.n_prompt; ++i) {  // FLOPs of each position, at its own depth
    const auto c = model.token_cost(s);
    // Only the last position's logits are computed (the LM head is not run for the others).
    const double out_macs = i + 1 == b.n_prompt ? 0.0 : c.output_macs;
    prefill_flops += 2.0 * (c.weight_macs - out_macs + c.attention_macs);
    s.n_past++;
  }
  std::vector<double> prefill_rates;
  for (int r = 0; r < b.reps; ++r) {
    s = model.new_sequence();
    const auto prompt = random_ids(static_cast<size_t>(b.n_prompt));
    const auto t_pre = Clock::now();
    run(s, prompt, true);
    prefill_rates.push_back(b.n_prompt / seconds_since(t_pre));
  }
  tr.prefill = stat(prefill_rates);
  tr.prefill_flops_per_token = prefill_flops / b.n_prompt;
  remeasure_limits();

  // Decode at each depth.
  // Each repetition is also paired with the read-only rate of the token's own weight pages,
  // measured just before and just after it: on a shared machine whose bandwidth drifts from
  // second to second, that ratio says how close the engine runs to its pages' rate at that
  // moment, whatever the machine was doing. These reads touch the token_weight_ranges() pages,
  // whose routed experts are the first k of each layer: usually mapped by the prefills already
  // (flash-4l's touch all 32), otherwise counted in the resident figures taken after decode.
  const auto token_ranges = model.token_weight_ranges();
  auto pages_gbps_now = [&] { return measure_read_gbps_over(pool, token_ranges, 1); };
  for (int64_t depth : b.depths) {
    SequenceState d = model.new_sequence();
    d.reserve(depth + static_cast<int64_t>(b.n_gen) * b.reps);  // as the generator does: no growth
    for (int64_t done = 0; done < depth;) {
      const size_t n =
          static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(b.chunk), depth - done));
      run(d, random_ids(n), false);
      done += static_cast<int64_t>(n);
    }
    // Repetitions continue the same sequence (the context grows by n tokens each time); bytes
    // are counted per token at its own depth.
    std::vector<double> rates, gbps, paired;
    double all_bytes = 0;
    DecodeRow r;
    double pages_before = pages_gbps_now();
    for (int rep = 0; rep < b.reps; ++rep) {
      double bytes = 0;
      const auto t0 = Clock::now();
      for (int i = 0; i < b.n_gen; ++i) {
        const auto c = model.token_cost(d);
        bytes += static_cast<double>(c.weight_bytes + c.kv_bytes);
        for (int p = 0; p < kParts; ++p) r.part_bytes[p] += static_cast<double>(c.part_bytes[p]);
        run(d, random_ids(1), true, &r.times);
      }
      const double sec = seconds_since(t0);
      const double pages_after = pages_gbps_now();
      r.seconds += sec;
      rates.push_back(b.n_gen / sec);
      gbps.push_back(bytes / sec / 1e9);
      paired.push_back(gbps.back() / (0.5 * (pages_before + pages_after)));
      pages_before = pages_after;
      all_bytes += bytes;
    }
    r.tokens = static_cast<double>(b.n_gen) * b.reps;
    r.depth = depth;
    r.tok_s = stat(rates);
    r.gb_s = stat(gbps).mean;
    r.paired_pages_ratio = stat(paired);
    r.bytes_per_token = all_bytes / (static_cast<double>(b.n_gen) * b.reps);
    tr.rows.push_back(r);
  }
  tr.rss_after_decode = resident_set_bytes();
  tr.weights_after_decode = file_mapping_residency(model_dir);
  remeasure_limits();
  // The same read over the checkpoint pages one token streams: where physical memory is not
  // uniform (kernels/membench.h), a fresh buffer can read much faster or slower than the weights
  // do. And over each part's pages alone: a part's GB/s divided by its own pages' rate says how
  // much of its time is the engine's and how much is where its pages lie.
  tr.weights_read_gbps = measure_read_gbps_over(pool, token_ranges, 5);
  for (int p = 0; p < kParts; ++p)
    tr.part_pages_gbps[p] =
        measure_read_gbps_over(pool, model.token_weight_ranges(static_cast<ForwardPart>(p)), 5);
  return tr;
}

// One thread count's figures for --json (the top level holds the same for the largest count).
nlohmann::ordered_json run_json(const ThreadRun& t) {
  const DecodeRow& d0 = t.rows.front();
  nlohmann::ordered_json j;
  j["threads"] = t.threads;
  j["prefill_tok_s"] = t.prefill.mean;
  j["prefill_tok_s_sd"] = t.prefill.sd;
  j["prefill_cold_tok_s"] = t.cold_prefill_tok_s;
  j["prefill_flop_per_token"] = t.prefill_flops_per_token;
  j["prefill_flop_s"] = t.prefill_flop_s();
  j["peak_flop_s"] = t.peak_flops;
  j["prefill_peak_ratio"] = t.prefill_flop_s() / t.peak_flops;
  j["decode_tok_s"] = d0.tok_s.mean;
  j["decode_tok_s_sd"] = d0.tok_s.sd;
  j["decode_bytes_per_token"] = d0.bytes_per_token;
  j["decode_gb_s"] = d0.gb_s;
  j["read_gb_s"] = t.read_gbps;
  j["triad_gb_s"] = t.triad_gbps;
  j["decode_roofline_ratio"] = d0.gb_s / t.read_gbps;
  j["weights_read_gb_s"] = t.weights_read_gbps;
  j["decode_weights_read_ratio"] = d0.gb_s / t.weights_read_gbps;
  j["decode_paired_pages_ratio"] = d0.paired_pages_ratio.mean;
  j["decode_paired_pages_ratio_sd"] = d0.paired_pages_ratio.sd;
  j["decode"] = nlohmann::json::array();
  for (const auto& r : t.rows) {
    nlohmann::ordered_json parts = nlohmann::ordered_json::array();
    for (const PartRow& p : part_rows(r, t.part_pages_gbps)) {
      nlohmann::ordered_json o = {
          {"part", p.name}, {"ms_per_token", p.ms}, {"bytes_per_token", p.bytes}, {"gb_s", p.gb_s}};
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
                           {"roofline_ratio", r.gb_s / t.read_gbps},
                           {"weights_read_ratio", r.gb_s / t.weights_read_gbps},
                           {"paired_pages_ratio", r.paired_pages_ratio.mean},
                           {"paired_pages_ratio_sd", r.paired_pages_ratio.sd},
                           {"parts", parts}});
  }
  return j;
}

// One thread count's block of the table.
void print_run(const ThreadRun& t, int n_prompt, int reps, size_t token_range_bytes) {
  std::printf("  threads %d\n", t.threads);
  std::printf(
      "  machine             read-only %.1f GB/s   STREAM triad %.1f GB/s   peak %.1f GFLOP/s\n",
      t.read_gbps, t.triad_gbps, t.peak_flops / 1e9);
  std::printf(
      "  weights read-only   %.1f GB/s = %.2f of read-only, over the %.3f GB of checkpoint pages "
      "one token reads\n",
      t.weights_read_gbps, t.weights_read_gbps / t.read_gbps, token_range_bytes / 1e9);
  if (t.weights_read_gbps < 0.8 * t.read_gbps)
    std::printf(
        "                      (slower than the fresh buffer: bandwidth drifted between the two, "
        "or the pages lie\n                      in slower physical memory; "
        "build/memory_placement_bench shows which)\n");
  std::printf("  prefill %5d tok   %s tok/s   %.2f GFLOP/token   %.1f GFLOP/s = %.2f of peak\n",
              n_prompt, with_sd(t.prefill, reps).c_str(), t.prefill_flops_per_token / 1e9,
              t.prefill_flop_s() / 1e9, t.prefill_flop_s() / t.peak_flops);
  std::printf(
      "                      (%s; after two untimed warm-up prefills, the first (cold) at "
      "%.2f tok/s)\n",
      reps > 1 ? (std::to_string(reps) + " repetitions: mean ± standard deviation").c_str()
               : "1 repetition",
      t.cold_prefill_tok_s);
  for (const auto& r : t.rows) {
    std::printf(
        "  decode @ depth %-7lld %s tok/s   %.3f GB/token   %.1f GB/s = %.2f of read-only, %.2f of "
        "weights read-only\n",
        static_cast<long long>(r.depth), with_sd(r.tok_s, reps).c_str(), r.bytes_per_token / 1e9,
        r.gb_s, r.gb_s / t.read_gbps, r.gb_s / t.weights_read_gbps);
    std::printf(
        "                      %s of its pages' read-only rate measured just before and after "
        "each repetition\n",
        with_sd(r.paired_pages_ratio, reps).c_str());
    // Where a token's time goes: each part's share of the weights and KV, and its rate.
    std::string line = "                      per token:";
    for (const PartRow& p : part_rows(r, t.part_pages_gbps)) {
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
}

int run_bench(int argc, char** argv) {
  CLI::App app{"Benchmark prefill and decode against this machine's bandwidth and FLOP/s",
               "dsv4 bench"};
  std::string model_dir, depth_str = "0";
  std::vector<int> thread_counts;
  bool pin = false;
  BenchSettings b;
  bool json_out = false;
  app.add_option("-m,--model", model_dir, "model directory")->required();
  app.add_option("-t,--threads", thread_counts,
                 "compute threads (default: one per physical core); a comma-separated list, e.g. "
                 "1,2, runs the whole bench once per count, to show how it scales")
      ->delimiter(',')
      ->check(kThreadsRange);
  app.add_flag("--pin", pin,
               "bind each compute thread to its own CPU (one per physical core first)");
  app.add_option("-p,--n-prompt", b.n_prompt, "prefill length in tokens (default 512)");
  app.add_option("-n,--n-gen", b.n_gen, "decoded tokens per depth (default 128)");
  app.add_option("--depth", depth_str,
                 "comma-separated context depths for decode, e.g. 0,4096,32768 (default 0)");
  app.add_option("-r,--repetitions", b.reps,
                 "timed repetitions of the prefill and of each depth's decode; mean ± standard "
                 "deviation are printed (default 3)");
  app.add_option("--chunk", b.chunk, "prefill chunk used to reach a depth (default 512)");
  app.add_option("--membench-mib", b.membench_mib,
                 "buffer for the bandwidth kernels in MiB (default 1024)");
  ModelOptions mo;
  add_expert_prefetch_option(app, mo.expert_prefetch);
  app.add_flag("--json", json_out, "print one JSON object instead of the table");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (b.n_prompt < 1 || b.n_gen < 1 || b.reps < 1) throw Error("-p, -n and -r must be positive");
  b.depths = parse_depths(depth_str);
  if (thread_counts.empty()) thread_counts.push_back(0);

  // Load: mapped, validated, nothing copied.
  const size_t rss0 = resident_set_bytes();
  const auto t_load = Clock::now();
  auto model = Model::load(model_dir, mo);
  const double load_s = seconds_since(t_load);
  const size_t rss_load = resident_set_bytes();

  const std::string canonical_dir = std::filesystem::canonical(model_dir).string();
  std::vector<ThreadRun> runs;
  for (int n : thread_counts) {
    ThreadPool pool(n, pin);
    runs.push_back(measure_with(*model, canonical_dir, pool, b));
  }
  // The top-level figures are those of the most threads (the last such count).
  const ThreadRun& main_run = *std::max_element(
      runs.rbegin(), runs.rend(),
      [](const ThreadRun& x, const ThreadRun& y) { return x.threads < y.threads; });
  const size_t rss_end = runs.back().rss_after_decode;
  const MappedResidency& weights = runs.back().weights_after_decode;
  size_t token_range_bytes = 0;
  for (const auto& r : model->token_weight_ranges()) token_range_bytes += r.size();

  if (json_out) {
    nlohmann::ordered_json j;
    j["model"] = model_dir;
    j["pinned"] = pin;
    j["expert_prefetch"] = model->prefetches_experts();
    j["simd_target"] = membench_target_name();
    j["load_s"] = load_s;
    j["rss_bytes_before_load"] = rss0;
    j["rss_bytes_after_load"] = rss_load;
    j["rss_bytes"] = rss_end;
    j["weights_resident_bytes"] = weights.resident_bytes;
    j["weights_huge_page_bytes"] = weights.huge_bytes;
    j["repetitions"] = b.reps;
    j["prefill_tokens"] = b.n_prompt;
    j["weights_read_bytes"] = token_range_bytes;
    j.update(run_json(main_run));
    j["by_threads"] = nlohmann::json::array();
    for (const ThreadRun& t : runs) j["by_threads"].push_back(run_json(t));
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::string counts;  // "1,2"
  for (const ThreadRun& t : runs) counts += (counts.empty() ? "" : ",") + std::to_string(t.threads);
  std::printf("dsv4 bench  model %s  threads %s%s  SIMD %s\n", model_dir.c_str(), counts.c_str(),
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
  for (const ThreadRun& t : runs) print_run(t, b.n_prompt, b.reps, token_range_bytes);
  if (runs.size() > 1) {
    // Scaling: each count against the first, for the rates and for the machine's own limits.
    const ThreadRun& base = runs.front();
    for (size_t i = 1; i < runs.size(); ++i) {
      const ThreadRun& t = runs[i];
      std::printf(
          "  scaling %d -> %d threads: prefill x%.2f (peak x%.2f), decode @ depth %lld x%.2f "
          "(read-only x%.2f)\n",
          base.threads, t.threads, t.prefill.mean / base.prefill.mean,
          t.peak_flops / base.peak_flops, static_cast<long long>(t.rows.front().depth),
          t.rows.front().tok_s.mean / base.rows.front().tok_s.mean, t.read_gbps / base.read_gbps);
    }
  }
  return 0;
}

}  // namespace

DSV4_COMMAND("bench", "prefill/decode speed next to the machine's bandwidth and FLOP/s", run_bench);

}  // namespace dsv4::cli
