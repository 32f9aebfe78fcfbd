// Per-thread scratch buffers of the forward pass, reused across calls: large per-call vectors
// (tens of MB in a 512-token prefill) would otherwise be mapped, zeroed and page-faulted anew in
// every layer. Each call site uses its own Tag; contents are unspecified on return. They make a
// warm decode step free of heap allocations (tests/model/decode_allocation_test.cc).
// Both return the calling thread's buffer: take it before a parallel section and let the lambdas
// capture the pointer or reference (a thread_local named inside a lambda that the pool runs on
// another thread would be that thread's object).
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

}  // namespace dsv4
