// `dsv4 logits` is a stable interface that release checks call: it must reproduce the goldens
// from the command line, including --chunk, --decode-from and --exact-kv.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace dsv4::test {
namespace {

namespace fs = std::filesystem;

std::vector<float> read_floats(const fs::path& p) {
  std::ifstream in(p, std::ios::binary | std::ios::ate);
  std::vector<float> v(static_cast<size_t>(in.tellg()) / 4);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  return v;
}

double rms_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double n = 0, d = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    n += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    d += double(b[i]) * b[i];
  }
  return std::sqrt(n / d);
}

struct Fixture {
  TempDir tmp{"logits-cli"};
  fs::path golden = shared_dir() / "golden" / "small";
  fs::path ids = tmp.path() / "ids.json";
  fs::path out = tmp.path() / "out.bin";
  Fixture() {
    std::ifstream in(golden / "prompts.json");
    auto p = nlohmann::json::parse(in);
    std::ofstream(ids) << p["long"]["ids"].dump();
  }
  int run(const std::string& extra, std::string* log) {
    return run_command(dsv4_binary() + " logits -m " + golden.string() + " --ids-file " + ids.string() +
                           " --out " + out.string() + " -t 2 " + extra,
                       log);
  }
};

TEST(LogitsCli, ReproducesGoldenDAndExactB) {
  Fixture f;
  std::string log;
  ASSERT_EQ(f.run("", &log), 0) << log;
  const auto d = read_floats(f.golden / "logits_long_D_prefill.bin");
  auto got = read_floats(f.out);
  ASSERT_EQ(got.size(), d.size());
  EXPECT_LE(rms_rel(got, d), 0.05);

  ASSERT_EQ(f.run("--exact-kv --chunk 37", &log), 0) << log;
  got = read_floats(f.out);
  EXPECT_LE(rms_rel(got, read_floats(f.golden / "logits_long_B_prefill.bin")), 1e-4);

  ASSERT_EQ(f.run("--exact-kv --decode-from 200", &log), 0) << log;
  got = read_floats(f.out);
  EXPECT_LE(rms_rel(got, read_floats(f.golden / "logits_long_B_prefill.bin")), 1e-4);
}

TEST(LogitsCli, BadArgumentsGiveMessages) {
  Fixture f;
  std::string log;
  EXPECT_NE(f.run("--decode-from 100000", &log), 0);
  EXPECT_NE(log.find("--decode-from"), std::string::npos) << log;
  std::ofstream(f.ids) << "[1, 2, 99999]";
  EXPECT_NE(f.run("", &log), 0);
  EXPECT_NE(log.find("99999"), std::string::npos) << log;
  std::ofstream(f.ids) << "{\"not\": \"a list\"}";
  EXPECT_NE(f.run("", &log), 0);
  EXPECT_NE(log.find("JSON array"), std::string::npos) << log;
  std::ofstream(f.ids) << "[1, 2]";
  EXPECT_NE(run_command(dsv4_binary() + " logits -m /nonexistent --ids-file " + f.ids.string() + " --out y", &log), 0);
  EXPECT_NE(log.find("/nonexistent"), std::string::npos) << log;
}

}  // namespace
}  // namespace dsv4::test
