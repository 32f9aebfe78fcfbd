#include "golden_util.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>

#include "test_support.h"

namespace dsv4::test {

namespace fs = std::filesystem;

GoldenRun find_golden_run(const std::string& config, const std::string& run) {
  for (auto& r : discover_golden_runs())
    if (r.config == config && r.run == run) return r;
  throw std::runtime_error("golden run " + config + "/" + run + " not found");
}

std::vector<float> prefill_all_logits(const Model& m, std::span<const int32_t> ids,
                                      ThreadPool& pool, const ForwardOptions& fo) {
  SequenceState s = m.new_sequence();
  BatchItem it;
  it.seq = &s;
  it.tokens = ids;
  it.all_logits = true;
  ForwardResult res;
  m.forward(std::span<const BatchItem>(&it, 1), pool, res, fo);
  return std::move(res.logits);
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  return nlohmann::json::parse(in);
}

template <typename T>
static std::vector<T> read_bin(const fs::path& p) {
  std::ifstream in(p, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  const size_t n = static_cast<size_t>(in.tellg());
  std::vector<T> v(n / sizeof(T));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  return v;
}

std::vector<float> read_f32(const fs::path& p) { return read_bin<float>(p); }
std::vector<int32_t> read_i32(const fs::path& p) { return read_bin<int32_t>(p); }

std::vector<GoldenRun> discover_golden_runs() {
  std::vector<GoldenRun> runs;
  const fs::path root = shared_dir() / "golden";
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(root)) {
    if (e.is_directory() && fs::exists(e.path() / "manifest.json") &&
        fs::exists(e.path() / "prompts.json")) {
      dirs.push_back(e.path());
    }
  }
  std::sort(dirs.begin(), dirs.end());
  for (const fs::path& d : dirs) {
    const auto prompts = read_json(d / "prompts.json");
    const auto manifest = read_json(d / "manifest.json");
    for (auto it = prompts.begin(); it != prompts.end(); ++it) {
      GoldenRun r;
      r.config = d.filename().string();
      r.run = it.key();
      r.dir = d;
      r.prompt = it.value();
      r.ids = it.value()["ids"].get<std::vector<int32_t>>();
      r.manifest = manifest["files"];
      runs.push_back(std::move(r));
    }
  }
  return runs;
}

float top_margin(const float* row, size_t vocab) {
  float a = -INFINITY, b = -INFINITY;
  for (size_t i = 0; i < vocab; ++i) {
    if (row[i] > a) {
      b = a;
      a = row[i];
    } else if (row[i] > b) {
      b = row[i];
    }
  }
  return a - b;
}

static size_t argmax(const float* row, size_t vocab) {
  return static_cast<size_t>(std::max_element(row, row + vocab) - row);
}

Comparison compare_logits(const std::vector<float>& got, const std::vector<float>& ref,
                          size_t vocab) {
  Comparison c;
  c.rows = ref.size() / vocab;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    c.max_abs = std::max(c.max_abs, std::fabs(d));
  }
  c.rms_rel = std::sqrt(num / den);
  for (size_t r = 0; r < c.rows; ++r) {
    if (argmax(&got[r * vocab], vocab) != argmax(&ref[r * vocab], vocab)) {
      c.disagreements++;
      c.disagree_rows.push_back(r);
    }
  }
  return c;
}

std::string Comparison::str() const {
  std::ostringstream s;
  s << "rows " << rows << " rms-rel " << rms_rel << " max|d| " << max_abs << " top1-disagree "
    << disagreements;
  return s.str();
}

}  // namespace dsv4::test
