// Tokenizer throughput on the mixed corpus made by bench/tokenizer_compare/make_corpus.js:
//   tokenizer_bench MODEL_DIR CORPUS.json [IDS_OUT.jsonl] [PASSES]
// Encodes the documents one at a time on one thread and prints MiB/s (wall and CPU time, best
// pass). IDS_OUT gets one JSON id array per document, for comparison with bench.js.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace {

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR CORPUS.json [IDS_OUT.jsonl] [PASSES]\n", argv[0]);
    return 2;
  }
  try {
    auto tok = dsv4::tok::Tokenizer::load(argv[1]);
    std::ifstream f(argv[2]);
    if (!f) throw std::runtime_error(std::string("cannot open ") + argv[2]);
    auto docs = nlohmann::json::parse(f).get<std::vector<std::string>>();
    size_t bytes = 0;
    for (const auto& d : docs) bytes += d.size();
    int passes = argc > 4 ? std::atoi(argv[4]) : 3;
    double best_wall = 1e30, best_cpu = 1e30;
    std::vector<std::vector<int32_t>> ids(docs.size());
    size_t ntok = 0;
    for (int p = 0; p < passes; ++p) {
      auto t0 = std::chrono::steady_clock::now();
      double c0 = cpu_seconds();
      ntok = 0;
      for (size_t i = 0; i < docs.size(); ++i) {
        ids[i] = tok.encode(docs[i]);
        ntok += ids[i].size();
      }
      double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best_wall = std::min(best_wall, wall);
      best_cpu = std::min(best_cpu, cpu_seconds() - c0);
    }
    if (argc > 3) {
      std::ofstream out(argv[3]);
      for (const auto& v : ids) out << nlohmann::json(v).dump() << '\n';
    }
    double mib = bytes / 1048576.0;
    std::printf("dsv4 tokenizer: %.2f MiB, %zu tokens, best of %d: wall %.3f s = %.2f MiB/s, "
                "cpu %.3f s = %.2f MiB/s\n",
                mib, ntok, passes, best_wall, mib / best_wall, best_cpu, mib / best_cpu);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenizer_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
