#include "util/cpu_topology.h"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <thread>
#include <utility>

namespace dsv4 {

namespace {

int read_int(const std::string& path, int fallback) {
  std::ifstream f(path);
  int v;
  return (f >> v) ? v : fallback;
}

}  // namespace

CpuTopology group_cpus(const std::vector<CpuInfo>& cpus) {
  std::map<std::pair<int, int>, std::vector<int>> cores;  // (package, core) → CPUs
  for (const CpuInfo& c : cpus) cores[{c.package, c.core}].push_back(c.cpu);
  std::vector<std::vector<int>> groups;
  for (auto& [key, list] : cores) {
    std::sort(list.begin(), list.end());
    groups.push_back(list);
  }
  std::sort(groups.begin(), groups.end(), [](const auto& a, const auto& b) { return a[0] < b[0]; });
  CpuTopology t;
  t.physical_cores = static_cast<int>(groups.size());
  for (size_t rank = 0;; ++rank) {  // rank 0: first CPU of every core, then the siblings
    bool any = false;
    for (const auto& g : groups) {
      if (rank < g.size()) {
        t.cpus.push_back(g[rank]);
        any = true;
      }
    }
    if (!any) break;
  }
  return t;
}

CpuTopology cpu_topology() {
  std::vector<CpuInfo> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (!CPU_ISSET(cpu, &set)) continue;
      const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
      // Unknown topology: a unique fake core id (-1 - cpu) keeps the CPU on its own.
      cpus.push_back(
          {cpu, read_int(dir + "physical_package_id", 0), read_int(dir + "core_id", -1 - cpu)});
    }
  }
  if (cpus.empty()) {
    const int n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    for (int cpu = 0; cpu < n; ++cpu) cpus.push_back({cpu, 0, cpu});
  }
  return group_cpus(cpus);
}

std::string pin_thread(pthread_t thread, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  const int rc = pthread_setaffinity_np(thread, sizeof(set), &set);
  return rc == 0 ? ""
                 : "cannot pin a thread to CPU " + std::to_string(cpu) + ": " + std::strerror(rc);
}

}  // namespace dsv4
