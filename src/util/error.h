// One exception type for every rejected input. Messages name what is wrong: file, tensor, field,
// byte offset. Callers at the edge (CLI, server) print what() and exit / answer with an error.
#pragma once

#include <stdexcept>
#include <string>

namespace dsv4 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

}  // namespace dsv4
