// One persistent pool of worker threads, created once and passed down explicitly. parallel_for
// splits [0, n) into contiguous chunks, one per thread, so threads stream disjoint weight rows.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dsv4 {

class ThreadPool {
 public:
  // n_threads <= 0 → number of physical cores (hardware_concurrency as an approximation).
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end, thread_index) over disjoint chunks covering [0, n). Blocks until done.
  // The calling thread takes part. Chunks are aligned to `grain` (except the last).
  void parallel_for(size_t n, const std::function<void(size_t, size_t, int)>& fn,
                    size_t grain = 1);

  // Calls fn(thread_index) once on every thread.
  void run_on_all(const std::function<void(int)>& fn);

 private:
  void worker_loop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_start_, cv_done_;
  const std::function<void(int)>* job_ = nullptr;
  // Workers and the caller spin briefly (a decode step issues hundreds of short parallel
  // sections) before sleeping on the condition variables.
  std::atomic<size_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace dsv4
