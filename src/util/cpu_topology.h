// Which logical CPUs this process may run on, grouped by physical core: the thread pool's
// default size (one thread per physical core: SMT siblings share the core's FMA units and
// load ports, so a second thread per core adds contention, not throughput) and the order in
// which `--pin` assigns threads to CPUs.
#pragma once

#include <pthread.h>

#include <string>
#include <vector>

namespace dsv4 {

struct CpuTopology {
  // Allowed logical CPUs, first one per physical core (cores in ascending order of their first
  // CPU), then the remaining SMT siblings in the same order.
  std::vector<int> cpus;
  int physical_cores = 0;
};

// From sched_getaffinity (respects taskset and cgroup cpusets) and
// /sys/devices/system/cpu/cpuN/topology/{physical_package_id,core_id}. A CPU whose topology
// cannot be read counts as its own core.
CpuTopology cpu_topology();

// For tests: the same grouping from given (cpu, package, core) triples.
struct CpuInfo {
  int cpu, package, core;
};
CpuTopology group_cpus(const std::vector<CpuInfo>& cpus);

// Binds a thread to one logical CPU; returns an error message, empty on success.
std::string pin_thread(pthread_t thread, int cpu);

}  // namespace dsv4
