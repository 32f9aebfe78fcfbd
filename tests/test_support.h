// Shared helpers for the test suite: where ../shared lives, where the dsv4 binary is, temp dirs.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

namespace dsv4::test {

// The directory holding docs/, golden/ and tokenizer/ (the project's ../shared). Resolved once:
// $DSV4_SHARED if set, else <source dir>/../shared. Aborts the test binary with a clear message if
// it is missing, because every golden test depends on it.
const std::filesystem::path& shared_dir();

// Path of the built `dsv4` executable (for tests that run the command line).
std::string dsv4_binary();

// A fresh empty directory under the system temp dir, removed when the returned object dies.
class TempDir {
 public:
  explicit TempDir(const std::string& tag);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A directory that `make(dir)` fills once per build tree and test binary, then shared by every
// test process of that binary (ctest runs each test in its own process; regenerating a 165 MB
// synthetic checkpoint in each, and never deleting it, once filled a CI machine's disk). It lives
// under <build>/test-cache/<binary>-<key>-<stamp>, the stamp being the test binary's and the dsv4
// binary's size and mtime, so a rebuild makes a fresh one and removes the stale ones. `make` runs
// in a private directory renamed into place, so concurrent processes never see a partial one.
const std::filesystem::path& cached_dir(
    const std::string& key, const std::function<void(const std::filesystem::path&)>& make);

// Runs a shell command, returns its exit status and captures stdout+stderr into *output.
int run_command(const std::string& cmd, std::string* output);

// A piece of `text` of up to about max_len bytes at UTF-8 character boundaries, about a third of
// the way in (a stop string that greedy output is known to contain).
std::string middle_piece(const std::string& text, size_t max_len);

}  // namespace dsv4::test
