#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace dsv4::test {

const std::filesystem::path& shared_dir() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path p;
    if (const char* env = std::getenv("DSV4_SHARED"); env && *env) {
      p = env;
    } else {
      p = std::filesystem::path(DSV4_SOURCE_DIR) / ".." / "shared";
    }
    std::error_code ec;
    auto canon = std::filesystem::weakly_canonical(p, ec);
    if (!std::filesystem::is_directory(p / "golden")) {
      std::cerr << "FATAL: shared data not found at " << p
                << " (expected golden/ and tokenizer/ there). Set DSV4_SHARED or place the"
                   " project's shared/ folder beside the repository root.\n";
      std::exit(2);
    }
    return ec ? p : canon;
  }();
  return dir;
}

std::string dsv4_binary() { return DSV4_BINARY; }

TempDir::TempDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  path_ = std::filesystem::temp_directory_path() /
          ("dsv4-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int run_command(const std::string& cmd, std::string* output) {
  std::string full = cmd + " 2>&1";
  FILE* pipe = popen(full.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf;
  size_t n;
  if (output) output->clear();
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) {
    if (output) output->append(buf.data(), n);
  }
  int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string middle_piece(const std::string& text, size_t max_len) {
  auto continuation = [&](size_t i) {
    return (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80;
  };
  size_t a = text.size() / 3;
  while (a < text.size() && continuation(a)) ++a;
  size_t b = std::min(text.size(), a + max_len);
  while (b < text.size() && continuation(b)) ++b;
  return text.substr(a, b - a);
}

}  // namespace dsv4::test
