// Per-thread scratch buffers of the forward pass, reused across calls: large per-call vectors
// (tens of MB in a 512-token prefill) would otherwise be mapped, zeroed and page-faulted anew in
// every layer. Each call site uses its own Tag; contents are unspecified on return. They make a
// warm decode step free of heap allocations (tests/model/decode_allocation_test.cc).
// Both return the calling thread's buffer: take it before a parallel section and let the lambdas
// capture the pointer or reference (a thread_local named inside a lambda that the pool runs on
// another thread would be that thread's object). Buffers a parallel section needs per thread come
// from per_thread_workspace, sized on the calling thread too.
#pragma once

#include <cstddef>
#include <vector>

namespace dsv4 {

template <class Tag, class T = float>
T* workspace(size_t n) {
  static thread_local std::vector<T> v;
  if (v.size() < n) v.resize(n);
  return v.data();
}

// The vector itself, for call sites that push_back or nest vectors: it keeps the size and
// capacity of the last call (inner vectors keep theirs), so callers clear or resize it.
template <class Tag, class T>
std::vector<T>& workspace_vector() {
  static thread_local std::vector<T> v;
  return v;
}

// One buffer of `n` elements per thread of a parallel section: buffer i is at
// base + i·stride. All are sized at once on the calling thread, before the section starts. A
// buffer first taken inside the section would be sized on whichever thread the dynamic scheduler
// happened to give the biggest piece of work (or any work: a worker may miss a whole section), so
// a warm step could still allocate. Slices start a cache line apart (no false sharing).
template <class T>
struct PerThread {
  T* base = nullptr;
  size_t stride = 0;
  T* operator[](int thread) const { return base + static_cast<size_t>(thread) * stride; }
};

template <class Tag, class T = float>
PerThread<T> per_thread_workspace(int n_threads, size_t n) {
  constexpr size_t kLine = 64 / sizeof(T) > 0 ? 64 / sizeof(T) : 1;
  const size_t stride = (n + kLine - 1) / kLine * kLine;
  return {workspace<Tag, T>(stride * static_cast<size_t>(n_threads)), stride};
}

}  // namespace dsv4
