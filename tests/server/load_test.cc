// Load test of `dsv4 serve` (disabled by default; ~minutes): N concurrent streaming clients send
// M chat requests in total with mixed prompt/output lengths under greedy sampling, ~10% hang up
// mid-stream. Checks: every completed stream is well formed and equal to that request's result
// when run alone, ids are never shared between clients (nothing lost or mixed), no slot is left
// busy at the end (/metrics back to 0 active, 0 queued, 0 KV bytes), server RSS stable. Prints
// throughput and p50/p99 latency.
//
// Run: bench/serve_load.sh, or
//   DSV4_LOAD_CLIENTS=64 DSV4_LOAD_REQUESTS=2000 ./dsv4_server_tests
//     --gtest_also_run_disabled_tests --gtest_filter='ServerLoad.*'   (one command line)
// Optional: DSV4_LOAD_MODEL=DIR (default: synth tiny), DSV4_LOAD_NP (default 16).
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "server_proc.h"
#include "synth_tiny.h"
#include "test_support.h"

namespace dsv4 {
namespace {

using json = nlohmann::ordered_json;

int env_int(const char* name, int def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : def;
}

long rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

double metric(int port, const std::string& name) {
  httplib::Client cli("127.0.0.1", port);
  auto r = cli.Get("/metrics");
  if (!r) return -1;
  std::istringstream in(r->body);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return -1;
}

struct StreamResult {
  int status = 0;
  bool complete = false;  // saw [DONE]
  bool well_formed = true;
  std::string error;
  std::string id, content, finish;
  int completion_tokens = -1;
};

StreamResult stream_chat(int port, const json& body, int hang_up_after) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(300, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string raw;
  int events = 0;
  req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
    raw.append(d, n);
    if (hang_up_after > 0) {
      events = 0;
      for (size_t p = raw.find("\n\n"); p != std::string::npos; p = raw.find("\n\n", p + 2))
        ++events;
      if (events >= hang_up_after) return false;
    }
    return true;
  };
  httplib::Response res;
  httplib::Error err;
  cli.send(req, res, err);
  StreamResult r;
  r.status = res.status;
  if (err != httplib::Error::Success) r.error = "transport: " + httplib::to_string(err);
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t end = raw.find("\n\n", pos);
    if (end == std::string::npos) break;
    std::string block = raw.substr(pos, end - pos);
    pos = end + 2;
    if (block.rfind(":", 0) == 0) continue;  // keep-alive comment
    if (block.rfind("data: ", 0) != 0) {
      r.well_formed = false;
      r.error = "not a data line: " + block;
      continue;
    }
    const std::string data = block.substr(6);
    if (data == "[DONE]") {
      if (r.complete) r.well_formed = false;
      r.complete = true;
      continue;
    }
    if (r.complete) {
      r.well_formed = false;
      r.error = "data after [DONE]";
    }
    json c;
    try {
      c = json::parse(data);
    } catch (const std::exception& e) {
      r.well_formed = false;
      r.error = std::string("bad JSON chunk: ") + e.what();
      continue;
    }
    if (c.contains("error")) {
      r.well_formed = false;
      r.error = c.dump();
      continue;
    }
    const std::string id = c.value("id", "");
    if (r.id.empty()) r.id = id;
    if (id != r.id) {
      r.well_formed = false;
      r.error = "chunk ids differ within one stream";
    }
    if (c.contains("usage") && c["usage"].is_object())
      r.completion_tokens = c["usage"]["completion_tokens"];
    if (!c["choices"].is_array() || c["choices"].empty()) continue;
    const json& ch = c["choices"][0];
    if (ch["delta"].contains("content") && ch["delta"]["content"].is_string())
      r.content += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) r.finish = ch["finish_reason"];
  }
  return r;
}

TEST(ServerLoad, DISABLED_ConcurrentStreamingClientsWithDisconnects) {
  const int clients = env_int("DSV4_LOAD_CLIENTS", 64);
  const int total = env_int("DSV4_LOAD_REQUESTS", 2000);
  const int np = env_int("DSV4_LOAD_NP", 16);
  std::string model_dir;
  if (const char* m = std::getenv("DSV4_LOAD_MODEL"); m && *m) {
    model_dir = m;
  } else {
    model_dir = test::synth_tiny().string();
  }
  // Start the server.
  test::ServerProc server;
  ASSERT_NO_FATAL_FAILURE(
      server.start({"-m", model_dir, "--port", "0", "-np", std::to_string(np), "-c", "2048",
                    "--queue", std::to_string(clients + 8), "--timeout", "600"},
                   60));
  const int port = server.port;
  const pid_t pid = server.pid;

  // The request mix: prompts of mixed lengths × output lengths.
  std::vector<std::string> prompts;
  const std::vector<int> lens = {1, 3, 8, 20, 60, 150};
  for (int i = 0; i < 12; ++i) {
    std::string p = "Request family " + std::to_string(i) + ":";
    for (int k = 0; k < lens[i % lens.size()]; ++k)
      p += " word" + std::to_string((i * 31 + k) % 97);
    prompts.push_back(p);
  }
  const std::vector<int> outs = {4, 16, 40};
  auto body_for = [&](int pi, int oi) {
    return json{{"messages", json::array({{{"role", "user"}, {"content", prompts[pi]}}})},
                {"max_tokens", outs[oi]},
                {"temperature", 0},
                {"stream", true},
                {"stream_options", {{"include_usage", true}}}};
  };
  // Single-request results (one at a time).
  std::map<std::pair<int, int>, std::string> reference;
  for (int pi = 0; pi < (int)prompts.size(); ++pi)
    for (int oi = 0; oi < (int)outs.size(); ++oi) {
      StreamResult r = stream_chat(port, body_for(pi, oi), 0);
      ASSERT_TRUE(r.complete && r.well_formed) << r.error;
      reference[{pi, oi}] = r.content;
    }
  const long rss_start = rss_kb(pid);

  std::atomic<int> next{0}, completed{0}, hung_up{0}, mismatched{0}, malformed{0}, failed{0};
  std::atomic<int64_t> gen_tokens{0};
  std::mutex mu;
  std::set<std::string> ids;
  int dup_ids = 0;
  std::vector<double> latencies;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> th;
  for (int t = 0; t < clients; ++t) {
    th.emplace_back([&, t] {
      std::mt19937 rng(1000 + t);
      for (int i; (i = next.fetch_add(1)) < total;) {
        const int pi = rng() % prompts.size(), oi = rng() % outs.size();
        const int hang = rng() % 10 == 0 ? 1 + rng() % 6 : 0;
        const auto s = std::chrono::steady_clock::now();
        StreamResult r = stream_chat(port, body_for(pi, oi), hang);
        const double dt =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
        if (hang && !r.complete) {
          ++hung_up;
          continue;
        }
        if (r.status != 200 || !r.complete) {
          ++failed;
          std::lock_guard<std::mutex> lk(mu);
          if (failed < 5) std::fprintf(stderr, "failed: status %d %s\n", r.status, r.error.c_str());
          continue;
        }
        if (!r.well_formed) {
          ++malformed;
          std::lock_guard<std::mutex> lk(mu);
          if (malformed < 5) std::fprintf(stderr, "malformed: %s\n", r.error.c_str());
        }
        if (r.content != reference[{pi, oi}]) ++mismatched;
        ++completed;
        if (r.completion_tokens > 0) gen_tokens += r.completion_tokens;
        std::lock_guard<std::mutex> lk(mu);
        if (!ids.insert(r.id).second) ++dup_ids;
        latencies.push_back(dt);
      }
    });
  }
  for (auto& x : th) x.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  double active = -1;
  for (int i = 0; i < 200; ++i) {
    active = metric(port, "dsv4_requests_processing");
    if (active == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double queued = metric(port, "dsv4_requests_deferred");
  const double kv = metric(port, "dsv4_kv_cache_bytes");
  const double cancelled = metric(port, "dsv4_requests_cancelled_total");
  const double steps = metric(port, "dsv4_batch_steps_total"),
               seqs = metric(port, "dsv4_batch_sequences_total");
  const long rss_end = rss_kb(pid);
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) {
    return latencies.empty()
               ? 0.0
               : latencies[std::min(latencies.size() - 1, (size_t)(p * latencies.size()))];
  };
  std::printf(
      "load: %d clients, %d requests on -np %d: %d completed, %d hung up mid-stream, %d failed, %d "
      "malformed, "
      "%d differ from the single-request result, %d duplicate ids\n"
      "load: wall %.1f s, %.2f completed req/s, %.1f generated tok/s (completed streams), latency "
      "p50 %.3f s, "
      "p99 %.3f s, max %.3f s\n"
      "load: after: %.0f active, %.0f queued, %.0f KV bytes, %.0f sequences cancelled by "
      "disconnect; "
      "mean batch %.2f sequences/step; RSS %ld MB → %ld MB\n",
      clients, total, np, completed.load(), hung_up.load(), failed.load(), malformed.load(),
      mismatched.load(), dup_ids, wall, completed / wall, gen_tokens / wall, pct(0.5), pct(0.99),
      latencies.empty() ? 0 : latencies.back(), active, queued, kv, cancelled,
      steps > 0 ? seqs / steps : 0, rss_start / 1024, rss_end / 1024);
  EXPECT_EQ(completed + hung_up + failed, total);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(malformed.load(), 0);
  EXPECT_EQ(mismatched.load(), 0);
  EXPECT_EQ(dup_ids, 0);
  EXPECT_EQ(active, 0);
  EXPECT_EQ(queued, 0);
  EXPECT_EQ(kv, 0);
  EXPECT_LT(rss_end - rss_start, 256 * 1024) << "RSS grew by more than 256 MB";
  server.stop();
}

}  // namespace
}  // namespace dsv4
