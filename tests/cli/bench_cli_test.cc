// Smoke test of `dsv4 bench` (the real benchmark is run by hand on flash-4l): it runs on a tiny
// checkpoint and prints sane numbers in every field of its JSON.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_support.h"

namespace dsv4::test {
namespace {

TEST(BenchCli, TinyModelJsonHasSaneFields) {
  std::string out;
  const std::string cmd =
      dsv4_binary() + " bench -m " + (shared_dir() / "golden" / "tiny").string() +
      " -p 16 -n 4 -r 2 --depth 0,40 --membench-mib 16 -t 1,2 --json 2>/dev/null";
  ASSERT_EQ(run_command(cmd, &out), 0) << out;
  const auto j = nlohmann::json::parse(out);
  for (const char* k :
       {"decode_tok_s", "decode_bytes_per_token", "decode_gb_s", "read_gb_s", "triad_gb_s",
        "decode_roofline_ratio", "prefill_tok_s", "prefill_flop_s", "peak_flop_s",
        "prefill_peak_ratio", "rss_bytes", "weights_read_gb_s", "weights_read_bytes",
        "decode_weights_read_ratio", "decode_paired_pages_ratio"}) {
    ASSERT_TRUE(j.contains(k)) << k;
    EXPECT_GT(j[k].get<double>(), 0.0) << k;
  }
  ASSERT_EQ(j["decode"].size(), 2u);
  // Two timed repetitions: means with their standard deviations.
  EXPECT_EQ(j["repetitions"].get<int>(), 2);
  for (const auto* sd :
       {&j["prefill_tok_s_sd"], &j["decode_tok_s_sd"], &j["decode"][1]["tok_s_sd"]}) {
    EXPECT_GE(sd->get<double>(), 0.0);
    EXPECT_LT(sd->get<double>(), j["prefill_tok_s"].get<double>());
  }
  // `-t 1,2` runs the bench once per thread count; the top level is the larger count's.
  ASSERT_EQ(j["by_threads"].size(), 2u);
  EXPECT_EQ(j["by_threads"][0]["threads"].get<int>(), 1);
  EXPECT_EQ(j["by_threads"][1]["threads"].get<int>(), 2);
  EXPECT_EQ(j["threads"].get<int>(), 2);
  for (const char* k : {"decode_tok_s", "prefill_tok_s", "read_gb_s", "peak_flop_s"})
    EXPECT_EQ(j[k].get<double>(), j["by_threads"][1][k].get<double>()) << k;
  for (const auto& t : j["by_threads"]) {
    ASSERT_EQ(t["decode"].size(), 2u);
    for (const char* k :
         {"decode_tok_s", "read_gb_s", "prefill_tok_s", "decode_paired_pages_ratio"})
      EXPECT_GT(t[k].get<double>(), 0.0) << k;
  }
  // Deeper context reads more KV per token.
  EXPECT_GT(j["decode"][1]["bytes_per_token"].get<double>(),
            j["decode"][0]["bytes_per_token"].get<double>());
  EXPECT_LT(j["decode_roofline_ratio"].get<double>(), 5.0);
  // The weights' own read covers one token's weights: all of its bytes but the KV and one
  // embedding row.
  const auto token_bytes = j["decode"][0]["bytes_per_token"].get<double>();
  EXPECT_LT(j["weights_read_bytes"].get<double>(), token_bytes);
  EXPECT_GT(j["weights_read_bytes"].get<double>(), 0.9 * token_bytes);
  // Each depth splits its token into the parts of the forward pass: their bytes are the token's
  // (all but one embedding row), their times add up to about the token's time.
  for (const auto& row : j["decode"]) {
    const auto& parts = row["parts"];
    ASSERT_EQ(parts.size(), 5u);
    EXPECT_EQ(parts[4]["part"].get<std::string>(), "other");
    double ms = 0, bytes = 0;
    for (const auto& p : parts) {
      EXPECT_GE(p["ms_per_token"].get<double>(), -0.01) << p.dump();
      ms += p["ms_per_token"].get<double>();
      bytes += p["bytes_per_token"].get<double>();
    }
    for (int i = 0; i < 4; ++i) {
      EXPECT_GT(parts[i]["bytes_per_token"].get<double>(), 0.0);
      // Each part next to the read-only rate of its own weight pages.
      EXPECT_GT(parts[i]["pages_read_gb_s"].get<double>(), 0.0) << parts[i].dump();
      EXPECT_NEAR(parts[i]["pages_read_ratio"].get<double>(),
                  parts[i]["gb_s"].get<double>() / parts[i]["pages_read_gb_s"].get<double>(), 1e-9);
    }
    EXPECT_FALSE(parts[4].contains("pages_read_gb_s"));
    EXPECT_LT(bytes, row["bytes_per_token"].get<double>());
    EXPECT_GT(bytes, 0.99 * row["bytes_per_token"].get<double>());
    // The parts (with "other") are the forward passes' time, inside the timed loop: not more
    // than its wall time per token, and most of it. (Not against 1 / mean(tok/s): a mean of
    // rates is above the tokens' mean rate whenever the repetitions differ, as on a busy machine.)
    const double token_ms = row["ms_per_token"].get<double>();
    EXPECT_GT(ms, 0.5 * token_ms);
    EXPECT_LE(ms, token_ms * (1 + 1e-9));
  }
  // The checkpoint's resident pages are counted from its mappings (tiny/ holds ~30 MB).
  const auto resident = j["weights_resident_bytes"].get<double>();
  EXPECT_GT(resident, 1e6);
  EXPECT_LT(resident, 2e8);
  EXPECT_LE(j["weights_huge_page_bytes"].get<double>(), resident);
}

// `dsv4 bench` on tiny with `args` fails, saying `message`.
void expect_bench_fails(const std::string& args, const std::string& message) {
  std::string out;
  EXPECT_NE(run_command(dsv4_binary() + " bench -m " + (shared_dir() / "golden" / "tiny").string() +
                            " " + args,
                        &out),
            0)
      << args;
  EXPECT_NE(out.find(message), std::string::npos) << out;
}

TEST(BenchCli, BadDepthIsRejected) { expect_bench_fails("--depth 1,x", "--depth"); }

TEST(BenchCli, BadThreadCountInTheListIsRejected) {
  expect_bench_fails("-t 1,5000", "--threads: Value 5000 not in range");
}

}  // namespace
}  // namespace dsv4::test
