// One exception type for every rejected input. Messages name what is wrong: file, tensor, field,
// byte offset. Callers at the edge (CLI, server) print what() and exit / answer with an error.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dsv4 {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// A parser's message made safe to print: JSON parsers quote the bytes they stopped at ("last
// read: '…'"), which in a corrupt file are arbitrary; bytes outside printable ASCII become \xNN
// so that the message stays valid UTF-8 on a terminal, in a log or in a JSON error body.
inline std::string printable(std::string_view s) {
  std::string r;
  r.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f) {
      r += ch;
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      r += buf;
    }
  }
  return r;
}

}  // namespace dsv4
