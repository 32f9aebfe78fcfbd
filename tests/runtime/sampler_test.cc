#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "runtime/generator.h"
#include "util/error.h"

namespace dsv4 {
namespace {

std::vector<float> random_logits(int n, uint64_t seed, float scale = 3.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(g);
  return v;
}

TEST(Sampler, GreedyIsArgmaxAndIgnoresPaddingRows) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p, 100);
  std::vector<float> l = random_logits(120, 1);
  l[110] = 1000.0f;  // beyond the vocabulary: must never be chosen
  l[37] = 50.0f;
  EXPECT_EQ(s.sample(l), 37);
  // Lowest index on ties; NaN and inf are skipped.
  std::vector<float> t(100, 0.0f);
  t[5] = 2;
  t[9] = 2;
  t[3] = std::numeric_limits<float>::quiet_NaN();
  t[4] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(s.sample(t), 5);
}

TEST(Sampler, NeverSamplesOutsideVocab) {
  SamplingParams p;  // temperature 1, top-p 1 (defaults)
  p.seed = 7;
  const int V = 1000;
  Sampler s(p, V);
  std::vector<float> l = random_logits(V + 64, 2);
  for (int i = V; i < V + 64; ++i) l[static_cast<size_t>(i)] = 100.0f;
  for (int k = 0; k < 2000; ++k) {
    int32_t t = s.sample(l);
    ASSERT_GE(t, 0);
    ASSERT_LT(t, V);
  }
}

TEST(Sampler, SeededRunsAreReproducible) {
  SamplingParams p;
  p.seed = 1234;
  p.top_k = 50;
  p.top_p = 0.9f;
  Sampler a(p, 5000), b(p, 5000);
  std::vector<int32_t> ta, tb;
  for (int k = 0; k < 200; ++k) {
    auto l = random_logits(5000, 100 + k, 2.0f);
    ta.push_back(a.sample(l));
    tb.push_back(b.sample(l));
  }
  EXPECT_EQ(ta, tb);
  // reset() replays the same stream.
  a.reset();
  std::vector<int32_t> tc;
  for (int k = 0; k < 200; ++k) tc.push_back(a.sample(random_logits(5000, 100 + k, 2.0f)));
  EXPECT_EQ(ta, tc);
  // Another seed gives another stream.
  p.seed = 99;
  Sampler c(p, 5000);
  std::vector<int32_t> td;
  for (int k = 0; k < 200; ++k) td.push_back(c.sample(random_logits(5000, 100 + k, 2.0f)));
  EXPECT_NE(ta, td);
}

TEST(Sampler, MatchesSoftmaxDistribution) {
  SamplingParams p;
  p.seed = 5;
  p.temperature = 0.7f;
  std::vector<float> l = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
  Sampler s(p, 5);
  std::vector<double> expect(5);
  double z = 0;
  for (int i = 0; i < 5; ++i) z += expect[i] = std::exp(l[i] / 0.7);
  std::vector<int> count(5, 0);
  const int N = 200000;
  for (int k = 0; k < N; ++k) ++count[s.sample(l)];
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(count[i] / double(N), expect[i] / z, 0.005) << i;
}

TEST(Sampler, TopKTopPMinP) {
  std::vector<float> l = {5.0f, 4.0f, 3.0f, 2.0f, 1.0f, 0.0f};
  {
    SamplingParams p;
    p.seed = 1;
    p.top_k = 2;
    Sampler s(p, 6);
    std::map<int, int> seen;
    for (int k = 0; k < 3000; ++k) ++seen[s.sample(l)];
    EXPECT_EQ(seen.size(), 2u);
    EXPECT_TRUE(seen.count(0) && seen.count(1));
  }
  {
    SamplingParams p;
    p.seed = 1;
    p.top_p = 0.5f;  // p(0) = 0.636 > 0.5: only the top token survives
    Sampler s(p, 6);
    for (int k = 0; k < 500; ++k) EXPECT_EQ(s.sample(l), 0);
  }
  {
    SamplingParams p;
    p.seed = 1;
    p.top_p = 0.9f;  // 0.636 + 0.234 = 0.87 < 0.9 → three tokens
    Sampler s(p, 6);
    std::map<int, int> seen;
    for (int k = 0; k < 5000; ++k) ++seen[s.sample(l)];
    EXPECT_EQ(seen.size(), 3u);
  }
  {
    SamplingParams p;
    p.seed = 1;
    p.min_p = 0.3f;  // keeps p ≥ 0.3·p_max: e^-1 = 0.37 survives, e^-2 = 0.135 does not
    Sampler s(p, 6);
    std::map<int, int> seen;
    for (int k = 0; k < 5000; ++k) ++seen[s.sample(l)];
    EXPECT_EQ(seen.size(), 2u);
  }
}

TEST(Sampler, Penalties) {
  std::vector<float> l = {3.0f, 2.9f, 0.0f, -5.0f};
  SamplingParams p;
  p.temperature = 0;
  p.repeat_penalty = 1.5f;
  Sampler s(p, 4);
  EXPECT_EQ(s.sample(l), 0);
  s.accept(0);  // 3.0 / 1.5 = 2.0 < 2.9
  EXPECT_EQ(s.sample(l), 1);
  SamplingParams q;
  q.temperature = 0;
  q.presence_penalty = 0.05f;
  q.frequency_penalty = 0.05f;
  Sampler f(q, 4);
  f.accept(0);
  EXPECT_EQ(f.sample(l), 0);  // 3.0 - 0.1 = 2.9: tie → lowest index
  f.accept(0);                // 3.0 - 0.05 - 0.1 = 2.85
  EXPECT_EQ(f.sample(l), 1);
  // The window forgets old tokens.
  SamplingParams w = p;
  w.penalty_last_n = 2;
  Sampler g(w, 4);
  g.accept(0);
  g.accept(2);
  g.accept(3);
  EXPECT_EQ(g.sample(l), 0);
}

TEST(Sampler, RejectsBadParameters) {
  SamplingParams p;
  p.top_p = 0;
  EXPECT_THROW(Sampler(p, 10), Error);
  p = {};
  p.temperature = -1;
  EXPECT_THROW(Sampler(p, 10), Error);
  p = {};
  p.min_p = 2;
  EXPECT_THROW(Sampler(p, 10), Error);
  p = {};
  Sampler s(p, 10);
  std::vector<float> shortv(5, 0.0f);
  EXPECT_THROW(s.sample(shortv), Error);
}

TEST(StopMatcher, HoldsBackPartialMatches) {
  StopMatcher m({"</stop>", "END"});
  std::string out;
  out += m.push("Hello </st");
  EXPECT_EQ(out, "Hello ");
  out += m.push("ill here E");
  EXPECT_EQ(out, "Hello </still here ");
  out += m.push("N");
  EXPECT_FALSE(m.stopped());
  out += m.push("D and more");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "END");
  EXPECT_EQ(out, "Hello </still here ");
  EXPECT_EQ(m.push("x"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, SplitAtEveryByteAndUtf8) {
  const std::string text = "Grüße, 世界! STOP》 tail";
  const std::string stop = "STOP》";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    StopMatcher m({stop});
    std::string out = m.push(text.substr(0, cut));
    out += m.push(text.substr(cut));
    out += m.flush();
    EXPECT_EQ(out, "Grüße, 世界! ") << cut;
    EXPECT_TRUE(m.stopped());
  }
  StopMatcher none(std::vector<std::string>{});
  EXPECT_EQ(none.push("abc"), "abc");
  StopMatcher tail({"xyz"});
  EXPECT_EQ(tail.push("abcx"), "abc");
  EXPECT_EQ(tail.flush(), "x");
}

}  // namespace
}  // namespace dsv4
