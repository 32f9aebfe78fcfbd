// Where in physical memory a checkpoint's pages (and a fresh buffer) lie, and how fast each part
// reads. Opens the checkpoint the way the engine does (io/safetensors.h: every shard mapped 2 MiB
// aligned, in huge pages), faults its pages in, groups their 2 MiB pieces by the physical GiB
// /proc/self/pagemap gives for them, and measures each group with the loop `dsv4 bench` measures
// the weights' pages with (measure_read_gbps_over), the groups taken in turn and in alternating
// order round by round. Reading frame numbers needs root (CAP_SYS_ADMIN). Separate from the tests;
// run by hand:
//   ./build/memory_placement_bench [-t THREADS] [--fresh MIB] [--rounds N] DIR|FILE ...
// A DIR is a checkpoint directory, a FILE one safetensors file.
//
// Why it exists: `dsv4 bench` compares decode with a fresh buffer, and on the VM this project is
// developed on (a guest whose physical memory is not uniform) where pages lie decided more of that
// ratio than the kernels did: see kernels/membench.h for what was measured there.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/membench.h"
#include "util/cpu_topology.h"
#include "util/error.h"
#include "util/huge_pages.h"
#include "util/thread_pool.h"

namespace {

constexpr size_t kPiece = size_t{2} << 20;           // the huge page size the mappings use
constexpr size_t kMinGroupBytes = size_t{64} << 20;  // smaller groups measure mostly noise

struct Source {
  std::string name;
  const uint8_t* data;
  size_t bytes;
};

struct Group {
  std::vector<std::span<const uint8_t>> pieces;
  std::map<std::string, size_t> bytes_by_source;
  std::vector<double> gbps;  // one per round
};

// Physical address of the page at p: its frame number from /proc/self/pagemap (bits 0-54 when
// bit 63, page present, is set) times the page size; 0 for a page not present. Without
// CAP_SYS_ADMIN the kernel reports frame 0 for every page.
uint64_t physical_address_of(int pagemap, const void* p) {
  const auto page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t entry = 0;
  const auto offset = static_cast<off_t>(reinterpret_cast<uintptr_t>(p) / page * 8);
  if (::pread(pagemap, &entry, sizeof entry, offset) != static_cast<ssize_t>(sizeof entry))
    throw dsv4::Error(std::string("/proc/self/pagemap: cannot read: ") + std::strerror(errno));
  if ((entry >> 63) == 0) return 0;
  return (entry & ((uint64_t{1} << 55) - 1)) * page;
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [-t THREADS] [--fresh MIB] [--rounds N] DIR|FILE ...\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = dsv4::cpu_topology().physical_cores, rounds = 3;
  size_t fresh_mib = 0;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "-t" && has_value) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--fresh" && has_value) {
      fresh_mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--rounds" && has_value) {
      rounds = std::atoi(argv[++i]);
    } else if (!a.empty() && a[0] == '-') {
      return usage(argv[0]);
    } else {
      paths.push_back(a);
    }
  }
  if ((paths.empty() && fresh_mib == 0) || threads < 1 || rounds < 1) return usage(argv[0]);

  try {
    dsv4::ThreadPool pool(threads);
    std::vector<std::unique_ptr<dsv4::Checkpoint>> checkpoints;
    std::vector<Source> sources;
    for (const std::string& path : paths) {
      checkpoints.push_back(std::filesystem::is_directory(path)
                                ? dsv4::Checkpoint::open(path)
                                : dsv4::Checkpoint::open_file(path));
      for (const dsv4::MappedFile& f : checkpoints.back()->files()) {
        volatile uint8_t sink = 0;  // fault every page in, as decode would
        for (size_t o = 0; o < f.size(); o += 4096) sink = sink + f.data()[o];
        sources.push_back(
            {std::filesystem::path(f.path()).filename().string(), f.data(), f.size()});
      }
    }
    // Mapped after the checkpoints, as `dsv4 bench` maps its buffer after loading the model.
    std::unique_ptr<dsv4::MappedBuffer> fresh;
    if (fresh_mib > 0) {
      const size_t bytes = fresh_mib << 20;
      fresh = std::make_unique<dsv4::MappedBuffer>(bytes);
      std::memset(fresh->as<uint8_t>(), 1, bytes);
      sources.push_back({"fresh buffer", fresh->as<const uint8_t>(), bytes});
    }

    const int pagemap = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pagemap < 0)
      throw dsv4::Error(std::string("/proc/self/pagemap: cannot open: ") + std::strerror(errno));
    std::map<uint64_t, Group> groups;  // by physical GiB
    bool any_address = false;
    for (const Source& s : sources) {
      for (size_t o = 0; o + kPiece <= s.bytes; o += kPiece) {
        const uint64_t phys = physical_address_of(pagemap, s.data + o);
        any_address = any_address || phys != 0;
        Group& g = groups[phys >> 30];
        g.pieces.emplace_back(s.data + o, kPiece);
        g.bytes_by_source[s.name] += kPiece;
      }
    }
    ::close(pagemap);
    if (!any_address)
      throw dsv4::Error(
          "/proc/self/pagemap gave no physical frame numbers: reading them needs root "
          "(CAP_SYS_ADMIN)");

    std::vector<uint64_t> order;
    for (const auto& [gib, g] : groups)
      if (g.pieces.size() * kPiece >= kMinGroupBytes) order.push_back(gib);
    for (int r = 0; r < rounds; ++r) {
      for (uint64_t gib : order) {
        Group& g = groups[gib];
        g.gbps.push_back(dsv4::measure_read_gbps_over(pool, g.pieces, 2));
      }
      std::reverse(order.begin(), order.end());  // drift over time must not look like placement
    }
    std::sort(order.begin(), order.end());

    std::printf(
        "memory placement  threads %d  read-only GB/s of each physical GiB's 2 MiB pages, "
        "%d rounds\n",
        threads, rounds);
    for (uint64_t gib : order) {
      Group& g = groups[gib];
      std::vector<double> sorted = g.gbps;
      std::sort(sorted.begin(), sorted.end());
      std::printf("  GiB %4llu  %5zu MiB  median %5.1f  rounds",
                  static_cast<unsigned long long>(gib), g.pieces.size() * kPiece >> 20,
                  sorted[sorted.size() / 2]);
      for (double v : g.gbps) std::printf(" %5.1f", v);
      std::printf("   ");
      for (const auto& [name, bytes] : g.bytes_by_source)
        std::printf(" %s %zu MiB", name.c_str(), bytes >> 20);
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "memory_placement_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
