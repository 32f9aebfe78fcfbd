// A `dsv4 serve` process for the server tests: started on a free port (read from its
// "listening on ...:PORT" line), waited for until healthy, stopped with SIGTERM (SIGKILL after 5
// s).
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

namespace dsv4::test {

struct ServerProc {
  pid_t pid = -1;
  int port = 0;
  std::string log;

  ServerProc() = default;
  ServerProc(const ServerProc&) = delete;
  ServerProc& operator=(const ServerProc&) = delete;
  ~ServerProc() { stop(); }  // also when an assertion ends the test early

  // Starts `dsv4 serve ARGS` (stderr to `log`) and waits up to `health_wait_s` for /health.
  void start(const std::vector<std::string>& args, int health_wait_s = 30) {
    int out[2];
    ASSERT_EQ(pipe(out), 0);
    log = (std::filesystem::temp_directory_path() /
           ("dsv4-serve-test-" + std::to_string(getpid()) + "-" +
            std::to_string(reinterpret_cast<uintptr_t>(this) & 0xffff) + ".log"))
              .string();
    pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      dup2(out[1], 1);
      FILE* errf = fopen(log.c_str(), "w");
      if (errf) dup2(fileno(errf), 2);
      close(out[0]);
      std::vector<std::string> full = {test::dsv4_binary(), "serve"};
      full.insert(full.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : full) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(out[1]);
    // Read "listening on http://127.0.0.1:PORT\n".
    std::string line;
    char c;
    while (read(out[0], &c, 1) == 1 && c != '\n') line += c;
    close(out[0]);
    std::smatch m;
    ASSERT_TRUE(std::regex_search(line, m, std::regex(R"(:(\d+)$)"))) << "server said: " << line;
    port = std::stoi(m[1]);
    // Wait for the model to load.
    httplib::Client cli("127.0.0.1", port);
    for (int i = 0; i < health_wait_s * 20; ++i) {
      auto r = cli.Get("/health");
      if (r && r->status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << "server did not become healthy";
  }
  void stop() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      int st = 0;
      for (int i = 0; i < 100; ++i) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
          pid = -1;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        pid = -1;
      }
    }
    std::filesystem::remove(log);
  }
  bool alive() const { return pid > 0 && ::kill(pid, 0) == 0; }
};

}  // namespace dsv4::test
