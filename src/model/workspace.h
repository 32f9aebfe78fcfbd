// Per-thread scratch buffers of the forward pass, reused across calls: large per-call vectors
// (tens of MB in a 512-token prefill) would otherwise be mapped, zeroed and page-faulted anew in
// every layer. Each call site uses its own Tag; contents are unspecified on return.
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
