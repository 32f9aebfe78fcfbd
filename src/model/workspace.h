// Per-thread scratch buffers of the forward pass, reused across calls: large per-call vectors
// (tens of MB in a 512-token prefill) would otherwise be mapped, zeroed and page-faulted anew in
// every layer. Each call site uses its own Tag; contents are unspecified on return. Together with
// the few `static thread_local` vectors of the forward pass they make a warm decode step free of
// heap allocations (tests/model/decode_allocation_test.cc). A thread_local named inside a lambda
// that the pool runs elsewhere is that thread's object: such code goes through a local reference
// (the `*_of_caller` variables) or a pointer taken by the calling thread.
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

}  // namespace dsv4
