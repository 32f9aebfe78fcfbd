// `dsv4 run` / `dsv4 chat` / `dsv4 synth` from the outside: bad input gets a clear message and a
// non-zero exit (never a crash), the golden greedy check through --prompt-ids, seeded runs, and a
// scripted chat session over a pipe covering every slash command and a SIGINT during generation.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "test_support.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using test::dsv4_binary;
using test::run_command;

std::string q(const fs::path& p) {
  std::string r = "'";  // appended, not "'" + s + "'": GCC 12 warns (-Wrestrict, a false positive)
  r += p.string();
  return r += "'";
}

// Written by the command line's own `synth`, once per build tree (test::cached_dir).
const fs::path& tiny() {
  return test::cached_dir("cli-synth-tiny", [](const fs::path& out) {
    std::string log;
    int rc = run_command(dsv4_binary() + " synth --preset tiny -o " + q(out) + " --tokenizer-dir " +
                             q(test::shared_dir() / "tokenizer"),
                         &log);
    if (rc != 0) throw std::runtime_error("dsv4 synth failed:\n" + log);
  });
}

void expect_fails(const std::string& args, const std::string& message) {
  std::string out;
  int rc = run_command(dsv4_binary() + " " + args + " 2>&1", &out);
  EXPECT_NE(rc, 0) << args << "\n" << out;
  EXPECT_LT(rc, 128) << "crashed (signal): " << args << "\n" << out;
  EXPECT_NE(out.find(message), std::string::npos) << "expected '" << message << "' in:\n" << out;
}

TEST(RunCli, BadInputGivesClearErrors) {
  expect_fails("run -m /nonexistent/model -p hi", "does not exist");
  test::TempDir notok("cli-notok");
  fs::copy_file(tiny() / "config.json", notok.path() / "config.json");
  expect_fails("run -m " + q(notok.path()) + " -p hi", "no tokenizer.json");
  expect_fails("run -m " + q(tiny()) + " -p hi --no-such-flag", "--no-such-flag");
  expect_fails("run -m " + q(tiny()) + " -p hi -c 100000000", "larger than the model allows");
  std::string long_prompt(400, 'x');
  for (size_t i = 0; i < long_prompt.size(); i += 2) long_prompt[i] = ' ';
  expect_fails("run -m " + q(tiny()) + " -c 64 -p '" + long_prompt + "'", "leaves no room");
  test::TempDir tmp("cli-bad");
  {
    std::ofstream f(tmp.path() / "bad.txt", std::ios::binary);
    f << "hello \xff\xfe world";
  }
  expect_fails("run -m " + q(tiny()) + " -f " + q(tmp.path() / "bad.txt"), "not valid UTF-8");
  expect_fails("run -m " + q(tiny()) + " -f " + q(tmp.path() / "missing.txt"),
               "cannot read prompt file");
  expect_fails("run -m " + q(tiny()), "no prompt");
  expect_fails("run -m " + q(tiny()) + " -p hi --top-p 0", "--top-p");
  expect_fails("run -m " + q(tiny()) + " --prompt-ids 1,x,3", "not a token id");
  expect_fails("run -m " + q(tiny()) + " --prompt-ids 1,999999999", "outside the vocabulary");
  expect_fails("chat -m /nonexistent/model", "does not exist");
  expect_fails("synth --preset huge -o " + q(tmp.path() / "x"), "huge");
  // Counts that would start 10^5 threads or never schedule a prompt are refused by name.
  expect_fails("run -m " + q(tiny()) + " -p hi -t 100000", "--threads: Value 100000 not in range");
  expect_fails("synth --preset tiny -t -1 -o " + q(tmp.path() / "y"), "--threads");
  expect_fails("serve -m " + q(tiny()) + " -np 100000", "--parallel: Value 100000 not in range");
  expect_fails("serve -m " + q(tiny()) + " --threads-http 100000", "--threads-http");
  expect_fails("serve -m " + q(tiny()) + " -b 0", "--batch-size: must be at least 1, got 0");
  expect_fails("serve -m " + q(tiny()) + " --timeout -1", "--timeout: must be at least 0");
  expect_fails("serve -m " + q(tiny()) + " --max-body x", "'x' is not a number");
  std::string out;
  EXPECT_EQ(run_command(dsv4_binary() + " run --help", &out), 0);
  for (const char* flag :
       {"-m", "-p", "-f", "-n", "-c", "-t", "--temp", "--top-k", "--top-p", "--min-p", "--seed",
        "--raw", "--think", "--reasoning-effort", "--prompt-ids", "--progress"}) {
    EXPECT_NE(out.find(flag), std::string::npos) << flag;
  }
}

TEST(RunCli, GoldenGreedyThroughPromptIds) {
  // tiny/short: the reference's greedy tokens start 151, 679 (mode D agrees on both rows).
  test::TempDir tmp("cli-golden");
  const fs::path golden = test::shared_dir() / "golden" / "tiny";
  std::string out;
  int rc = run_command(dsv4_binary() + " run -m " + q(golden) +
                           " --prompt-ids 0,203,261 --temp 0 -n 2 --output-json " +
                           q(tmp.path() / "o.json") + " 2>&1",
                       &out);
  ASSERT_EQ(rc, 0) << out;
  std::ifstream in(tmp.path() / "o.json");
  auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["tokens"], nlohmann::json::array({151, 679})) << out;
  EXPECT_NE(out.find("tok/s"), std::string::npos);
}

TEST(RunCli, SeededRunsAreIdentical) {
  auto go = [&](int seed) {
    std::string out;
    int rc =
        run_command(dsv4_binary() + " run -m " + q(tiny()) + " -p 'Tell me a story' -n 10 --seed " +
                        std::to_string(seed) + " 2>/dev/null",
                    &out);
    EXPECT_EQ(rc, 0) << out;
    return out.substr(0, out.find("\nload:"));  // the generated text (timings differ)
  };
  const std::string a = go(11), b = go(11), c = go(12);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_FALSE(a.empty());
}

struct Child {
  pid_t pid = -1;
  int in = -1, out = -1;  // child's stdin (write end), merged stdout+stderr (read end)
};

Child spawn(const std::vector<std::string>& argv) {
  int pin[2], pout[2];
  EXPECT_EQ(pipe(pin), 0);
  EXPECT_EQ(pipe(pout), 0);
  Child c;
  c.pid = fork();
  if (c.pid == 0) {
    dup2(pin[0], 0);
    dup2(pout[1], 1);
    dup2(pout[1], 2);
    close(pin[1]);
    close(pout[0]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(pin[0]);
  close(pout[1]);
  c.in = pin[1];
  c.out = pout[0];
  return c;
}

// Reads what is available until `needle` appears in `acc` or the timeout passes.
bool read_until(int fd, std::string& acc, const std::string& needle, double timeout_s) {
  auto t0 = std::chrono::steady_clock::now();
  while (acc.find(needle) == std::string::npos) {
    double left =
        timeout_s - std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left * 1000)) <= 0) return false;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) return acc.find(needle) != std::string::npos;
    acc.append(buf, static_cast<size_t>(n));
  }
  return true;
}

void send(const Child& c, const std::string& s) {
  ASSERT_EQ(write(c.in, s.data(), s.size()), (ssize_t)s.size());
}

// Sends /quit, closes stdin, collects the rest of the output and waits: true if the program
// exited with status 0.
bool quits_cleanly(Child& c, std::string& acc) {
  send(c, "/quit\n");
  close(c.in);
  read_until(c.out, acc, "\x01never", 30);
  int status = 0;
  waitpid(c.pid, &status, 0);
  close(c.out);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(ChatCli, ScriptedSessionWithEveryCommandAndSigint) {
  test::TempDir tmp("cli-chat");
  const std::string save = (tmp.path() / "conv.json").string();
  Child c = spawn({dsv4_binary(), "chat", "-m", tiny().string(), "-n", "6", "--seed", "1"});
  std::string acc;
  ASSERT_TRUE(read_until(c.out, acc, "/help for commands", 60)) << acc;
  send(c, "/help\nHello there\n/ctx\n");
  ASSERT_TRUE(read_until(c.out, acc, "context: ", 60)) << acc;
  send(c,
       "/think\n/effort max\n\"\"\"\nA question\nover two lines\n\"\"\"\n/nothink\n/system Be "
       "brief.\n");
  ASSERT_TRUE(read_until(c.out, acc, "system prompt set", 60)) << acc;
  send(c, "/save " + save + "\n");
  ASSERT_TRUE(read_until(c.out, acc, "saved 5 messages", 60)) << acc;
  // A long reply, interrupted with SIGINT once tokens flow.
  send(c, "/effort high\n/nothink\n");
  ASSERT_TRUE(read_until(c.out, acc, "reasoning effort: high", 60)) << acc;
  // A message continued over two lines with a trailing backslash.
  send(c, "Write a longer answer \\\nplease\n/ctx\n");
  ASSERT_TRUE(read_until(c.out, acc, "[prompt", 60)) << acc;
  send(c, "/reset\n/ctx\n");
  ASSERT_TRUE(read_until(c.out, acc, "context: 0 /", 60)) << acc;
  send(c, "/load " + save + "\n/ctx\n/bogus\n");
  ASSERT_TRUE(read_until(c.out, acc, "unknown command /bogus", 60)) << acc;
  EXPECT_TRUE(quits_cleanly(c, acc)) << acc;
  for (const char* s : {"thinking mode on", "thinking mode off", "reasoning effort: max",
                        "conversation cleared", "loaded 5 messages", "<think>", "/quit"}) {
    EXPECT_NE(acc.find(s), std::string::npos) << s << "\n" << acc;
  }
  std::ifstream in(save);
  auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["messages"].size(), 5u);
  EXPECT_EQ(j["messages"][0]["content"], "Be brief.");
  EXPECT_EQ(j["messages"][3]["content"], "A question\nover two lines");
}

TEST(ChatCli, SigintStopsGenerationNotTheProgram) {
  Child c = spawn(
      {dsv4_binary(), "chat", "-m", tiny().string(), "-n", "-1", "--ignore-eos", "-c", "1024"});
  std::string acc;
  ASSERT_TRUE(read_until(c.out, acc, "/help for commands", 60)) << acc;
  auto wait_for_tokens = [&](size_t start) {
    auto t0 = std::chrono::steady_clock::now();
    while (acc.size() < start + 40 &&
           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
      read_until(c.out, acc, "\x01never", 0.2);
    }
    return acc.size() >= start + 40;
  };
  for (int turn = 0; turn < 2; ++turn) {
    // A reply that would run until the context is full, interrupted once tokens flow.
    send(c, turn == 0 ? "Go on forever\n" : "And again\n");
    const size_t start = acc.size();
    ASSERT_TRUE(wait_for_tokens(start)) << acc;
    kill(c.pid, SIGINT);
    ASSERT_TRUE(read_until(c.out, acc, "[interrupted]", 30)) << acc;
    EXPECT_EQ(acc.find("context full"), std::string::npos) << "the reply was not interrupted:\n"
                                                           << acc;
    send(c, "/ctx\n");
    ASSERT_TRUE(read_until(c.out, acc, "context: ", 30)) << acc;
    acc.replace(acc.find("[interrupted]"), 13, "[handled]");
    acc.replace(acc.find("context: "), 9, "ctx: ");
  }
  kill(c.pid, SIGINT);  // while idle: ignored
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_TRUE(quits_cleanly(c, acc)) << acc;
}

}  // namespace
}  // namespace dsv4
