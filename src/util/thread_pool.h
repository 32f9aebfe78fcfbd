// One persistent pool of worker threads, created once and passed down explicitly. parallel_for
// splits [0, n) into contiguous chunks, one per thread, so threads stream disjoint weight rows.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "util/function_ref.h"

namespace dsv4 {

class ThreadPool {
 public:
  // n_threads <= 0 → one thread per physical core the process may run on (cpu_topology.h).
  // pin: thread i is bound to the i-th CPU of cpu_topology() (one per physical core first, then
  // SMT siblings; cycling if there are more threads than CPUs); thread 0 is whichever thread
  // calls into the pool (bound at its first parallel call; the constructing thread at once).
  // Throws if the system refuses.
  explicit ThreadPool(int n_threads = 0, bool pin = false);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end, thread_index) over disjoint chunks covering [0, n). Blocks until done.
  // The calling thread takes part. Chunks are aligned to `grain` (except the last).
  void parallel_for(size_t n, FunctionRef<void(size_t, size_t, int)> fn, size_t grain = 1);

  // Calls fn(thread_index) once on every thread.
  void run_on_all(FunctionRef<void(int)> fn);

  // Calls fn(thread_index) on the calling thread and on those workers that pick the job up
  // before the caller's own call returns; then waits only for workers already inside fn. fn
  // must take its work from a shared counter, so whoever runs does it all: on a shared machine a
  // descheduled worker then costs nothing instead of a scheduler time slice.
  void run_elastic(FunctionRef<void(int)> fn);

  // parallel_for over chunks of `grain` handed out dynamically (run_elastic): fn may be called
  // several times per thread, and not every thread need take part.
  void parallel_for_dynamic(size_t n, FunctionRef<void(size_t, size_t, int)> fn, size_t grain = 1);

 private:
  void worker_loop(int index);
  void shut_down();
  // Binds the calling thread to caller_cpu_ (pinned pools), once per thread; returns the error.
  std::string pin_caller();

  int caller_cpu_ = -1;  // pinned pools: thread 0's CPU
  uint64_t serial_ = 0;  // pinned pools: tells this pool from an earlier one at the same address

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_, cv_done_;
  std::atomic<const FunctionRef<void(int)>*> job_{nullptr};
  std::atomic<bool> elastic_{false};
  // Elastic jobs: [63:32] generation (low bits), bit 31 closed, [30:0] workers inside the job.
  std::atomic<uint64_t> elastic_state_{0};
  // Workers and the caller spin briefly (a decode step issues hundreds of short parallel
  // sections) before sleeping on the condition variables.
  std::atomic<size_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace dsv4
