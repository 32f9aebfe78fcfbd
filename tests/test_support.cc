#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>

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

namespace {

std::string file_stamp(const std::filesystem::path& p) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(p, ec);
  const auto time = std::filesystem::last_write_time(p, ec);
  if (ec) return "0";
  return std::to_string(size) + "." + std::to_string(time.time_since_epoch().count());
}

}  // namespace

const std::filesystem::path& cached_dir(
    const std::string& key, const std::function<void(const std::filesystem::path&)>& make) {
  namespace fs = std::filesystem;
  static std::map<std::string, fs::path> done;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = done.find(key); it != done.end()) return it->second;

  const fs::path self = fs::read_symlink("/proc/self/exe");
  const std::string prefix = self.filename().string() + "-" + key + "-";
  const std::string stamp =
      std::to_string(std::hash<std::string>{}(file_stamp(self) + "/" + file_stamp(dsv4_binary())));
  const fs::path root = fs::path(dsv4_binary()).parent_path() / "test-cache";
  const fs::path final_dir = root / (prefix + stamp);
  if (!fs::is_directory(final_dir)) {
    fs::create_directories(root);
    const fs::path tmp = root / (".tmp-" + prefix + std::to_string(getpid()));
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    try {
      make(tmp);
    } catch (...) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
      throw;
    }
    std::error_code ec;
    fs::rename(tmp, final_dir, ec);  // fails if another process got there first: use theirs
    if (ec) fs::remove_all(tmp, ec);
    if (!fs::is_directory(final_dir)) {
      std::cerr << "FATAL: could not create the test cache directory " << final_dir << "\n";
      std::exit(2);
    }
    for (const auto& e : fs::directory_iterator(root, ec)) {  // stale stamps of this key
      const std::string name = e.path().filename().string();
      if (name.rfind(prefix, 0) == 0 && e.path() != final_dir) fs::remove_all(e.path(), ec);
    }
  }
  return done.emplace(key, final_dir).first->second;
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
