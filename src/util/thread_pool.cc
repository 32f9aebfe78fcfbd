#include "util/thread_pool.h"

#include <algorithm>
#include <chrono>

#include "util/cpu_topology.h"
#include "util/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace dsv4 {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Spins until pred() or about `us` microseconds have passed; returns pred().
template <class Pred>
bool spin_until(Pred pred, int us) {
  if (pred()) return true;
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= end) return pred();
  }
}

constexpr int kSpinMicros = 200;

std::atomic<uint64_t> next_pool_serial{1};

}  // namespace

ThreadPool::ThreadPool(int n_threads, bool pin) {
  const CpuTopology topo = cpu_topology();
  if (n_threads <= 0) n_threads = std::max(1, topo.physical_cores);
  auto cpu_of = [&](int i) { return topo.cpus[static_cast<size_t>(i) % topo.cpus.size()]; };
  std::string err;
  if (pin) {
    caller_cpu_ = cpu_of(0);
    serial_ = next_pool_serial.fetch_add(1);
    err = pin_caller();  // also checks that pinning is allowed
  }
  for (int i = 1; i < n_threads && err.empty(); ++i) {
    workers_.emplace_back([this, i] { worker_loop(i); });
    if (pin) err = pin_thread(workers_.back().native_handle(), cpu_of(i));
  }
  if (!err.empty()) {
    shut_down();
    throw Error(err);
  }
}

std::string ThreadPool::pin_caller() {
  // Pools are told apart by a serial number, not their address (a new pool may reuse it).
  thread_local uint64_t pinned_for = 0;
  if (caller_cpu_ < 0 || pinned_for == serial_) return "";
  std::string err = pin_thread(pthread_self(), caller_cpu_);
  if (err.empty()) pinned_for = serial_;
  return err;
}

void ThreadPool::shut_down() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

ThreadPool::~ThreadPool() { shut_down(); }

namespace {
constexpr uint64_t kClosed = uint64_t{1} << 31;
constexpr uint64_t kCountMask = kClosed - 1;
inline uint64_t elastic_tag(size_t gen) { return static_cast<uint64_t>(gen & 0xffffffffu) << 32; }
}  // namespace

void ThreadPool::worker_loop(int index) {
  size_t seen = 0;
  for (;;) {
    auto ready = [&] {
      return stop_.load(std::memory_order_acquire) ||
             generation_.load(std::memory_order_acquire) != seen;
    };
    if (!spin_until(ready, kSpinMicros)) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_start_.wait(lock, ready);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    // Read the job of one generation consistently (the caller publishes job and mode, then
    // bumps the generation; an elastic caller may already have moved on to the next one).
    size_t gen;
    const FunctionRef<void(int)>* job;
    bool elastic;
    for (;;) {
      gen = generation_.load();
      job = job_.load();
      elastic = elastic_.load();
      if (generation_.load() == gen) break;
    }
    seen = gen;
    if (!elastic) {
      (*job)(index);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mu_);
        cv_done_.notify_one();
      }
      continue;
    }
    uint64_t st = elastic_state_.load();
    bool entered = false;
    while ((st & ~(kClosed | kCountMask)) == elastic_tag(gen) && !(st & kClosed)) {
      if (elastic_state_.compare_exchange_weak(st, st + 1)) {
        entered = true;
        break;
      }
    }
    if (!entered) continue;
    (*job)(index);
    if ((elastic_state_.fetch_sub(1) & (kClosed | kCountMask)) == (kClosed | 1)) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_done_.notify_one();
    }
  }
}

void ThreadPool::run_elastic(FunctionRef<void(int)> fn) {
  if (workers_.empty()) {
    fn(0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t gen = generation_.load() + 1;
    job_.store(&fn);
    elastic_.store(true);
    elastic_state_.store(elastic_tag(gen));
    generation_.store(gen);
  }
  cv_start_.notify_all();
  pin_caller();
  fn(0);
  elastic_state_.fetch_or(kClosed);
  auto done = [&] { return (elastic_state_.load() & kCountMask) == 0; };
  if (!spin_until(done, kSpinMicros)) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_done_.wait(lock, done);
  }
}

void ThreadPool::parallel_for_dynamic(size_t n, FunctionRef<void(size_t, size_t, int)> fn,
                                      size_t grain) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  if (workers_.empty() || n <= grain) {
    fn(0, n, 0);
    return;
  }
  std::atomic<size_t> next{0};
  run_elastic([&](int t) {
    for (;;) {
      const size_t b = next.fetch_add(grain, std::memory_order_relaxed);
      if (b >= n) break;
      fn(b, std::min(n, b + grain), t);
    }
  });
}

void ThreadPool::run_on_all(FunctionRef<void(int)> fn) {
  if (workers_.empty()) {
    fn(0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_.store(&fn);
    elastic_.store(false);
    pending_.store(static_cast<int>(workers_.size()));
    generation_.fetch_add(1);
  }
  cv_start_.notify_all();
  pin_caller();
  fn(0);
  auto done = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  if (!spin_until(done, kSpinMicros)) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_done_.wait(lock, done);
  }
}

void ThreadPool::parallel_for(size_t n, FunctionRef<void(size_t, size_t, int)> fn, size_t grain) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  const size_t units = (n + grain - 1) / grain;
  const size_t nt = std::min<size_t>(static_cast<size_t>(size()), units);
  if (nt <= 1) {
    fn(0, n, 0);
    return;
  }
  run_on_all([&](int t) {
    if (static_cast<size_t>(t) >= nt) return;
    const size_t u0 = units * t / nt, u1 = units * (t + 1) / nt;
    const size_t b = u0 * grain, e = std::min(n, u1 * grain);
    if (b < e) fn(b, e, t);
  });
}

}  // namespace dsv4
