// Generation against the reference goldens, reproducibility, and chat state reuse.
#include "runtime/generator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/chat_session.h"
#include "runtime/synth.h"
#include "runtime/token_constraint.h"
#include "synth_tiny.h"
#include "test_support.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  EXPECT_TRUE(in.good()) << p;
  return nlohmann::json::parse(in);
}

Sampler greedy_sampler(const Model& model) {
  SamplingParams sp;
  sp.temperature = 0;
  return Sampler(sp, model.config().vocab_size);
}

float margin_of(const float* row, int n, int32_t* top) {
  int32_t a = Sampler::argmax(row, n);
  float best = row[a], second = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (i != a) second = std::max(second, row[i]);
  if (top) *top = a;
  return best - second;
}

// Issue 5 acceptance: starting from each golden prompt, the engine's greedy continuation equals
// the recorded fed tokens up to the first step where mode D's argmax differs from them; from there
// on each generated token is the argmax of the engine's own logits.
class GoldenGreedy : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenGreedy, FollowsReferenceThenOwnArgmax) {
  const fs::path dir = test::shared_dir() / "golden" / "tiny";
  const std::string run = GetParam();
  const nlohmann::json prompts = read_json(dir / "prompts.json");
  const nlohmann::json d = read_json(dir / ("decode_" + run + "_D.json"));
  const std::vector<int32_t> ids = prompts[run]["ids"].get<std::vector<int32_t>>();
  const std::vector<int32_t> fed = d["fed_tokens"].get<std::vector<int32_t>>();
  const std::vector<int32_t> ref_argmax = d["argmax_per_row"].get<std::vector<int32_t>>();
  const std::vector<float> ref_margin = d["top1_top2_margin_per_row"].get<std::vector<float>>();
  size_t first_diff = fed.size();
  for (size_t i = 0; i < fed.size(); ++i) {
    if (ref_argmax[i] != fed[i]) {
      first_diff = i;
      break;
    }
  }
  auto model = Model::load(dir.string());
  ThreadPool pool(2);
  SequenceState seq = model->new_sequence();
  Sampler sampler = greedy_sampler(*model);
  GenerationParams gp;
  gp.max_tokens = static_cast<int>(fed.size()) + 1;
  gp.ignore_eos = true;
  const int V = model->config().vocab_size;
  std::vector<int32_t> own_argmax;
  std::vector<float> own_margin;
  GenerationCallbacks cb;
  cb.on_token = [&](int32_t t, const std::string&, const float* logits) {
    ASSERT_NE(logits, nullptr);
    int32_t a;
    own_margin.push_back(margin_of(logits, V, &a));
    own_argmax.push_back(a);
  };
  GenerationResult r = generate(*model, pool, nullptr, seq, ids, sampler, gp, cb);
  ASSERT_EQ(r.tokens.size(), fed.size() + 1);
  ASSERT_EQ(own_argmax.size(), r.tokens.size());
  for (size_t i = 0; i < first_diff; ++i) {
    EXPECT_EQ(r.tokens[i], fed[i]) << "step " << i << " (reference margin " << ref_margin[i]
                                   << ", engine margin " << own_margin[i] << ")";
  }
  for (size_t i = 0; i < r.tokens.size(); ++i)
    EXPECT_EQ(r.tokens[i], own_argmax[i]) << "step " << i;
  EXPECT_EQ(r.stop, StopReason::kMaxTokens);
  EXPECT_EQ(seq.n_past, static_cast<int64_t>(ids.size() + fed.size()));
  std::printf(
      "[golden tiny/%s] greedy equals fed tokens for the first %zu of %zu steps (reference "
      "diverges at %zu)\n",
      run.c_str(), first_diff, fed.size(), first_diff);
}

INSTANTIATE_TEST_SUITE_P(Tiny, GoldenGreedy, ::testing::Values("short", "long"));

using test::synth_tiny;

TEST(Generator, SeededSamplingIsReproducible) {
  auto model = Model::load(synth_tiny().string());
  auto tk = tok::Tokenizer::load(synth_tiny());
  ThreadPool pool(2);
  std::vector<int32_t> prompt = tk.encode("Once upon a time");
  auto run = [&](uint64_t seed, int chunk) {
    SequenceState seq = model->new_sequence();
    SamplingParams sp;
    sp.seed = seed;
    Sampler s(sp, model->config().vocab_size);
    GenerationParams gp;
    gp.max_tokens = 12;
    gp.prefill_chunk = chunk;
    return generate(*model, pool, &tk, seq, prompt, s, gp).tokens;
  };
  auto a = run(42, 256), b = run(42, 2), c = run(43, 256);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a.size(), 12u);
}

// set_prompt reserves the sequence's compressed caches for the whole request (prompt +
// max_tokens; an open-ended request: prompt + 4096 positions, within the context), so decode
// steps do not reallocate them (tests/model/decode_allocation_test.cc).
TEST(Generator, PromptReservesTheRequestsCaches) {
  auto model = Model::load((test::shared_dir() / "golden" / "tiny").string());
  const std::vector<int32_t> prompt(20, 7);
  auto capacity_ok = [&](const SequenceState& seq, int64_t positions) {
    int checked = 0;
    for (const LayerState& L : seq.layers) {
      if (!L.ratio) continue;
      const size_t need =
          static_cast<size_t>(positions / L.ratio + 1) * seq.kv_codec().entry_bytes();
      EXPECT_GE(L.compressed.capacity(), need) << "ratio " << L.ratio << ", " << positions;
      ++checked;
    }
    EXPECT_GT(checked, 0);
  };
  const int64_t max_pos = model->config().max_position_embeddings;
  ASSERT_GT(max_pos, 600);
  struct Case {
    int max_tokens;
    int64_t n_ctx, positions;
  };
  for (const Case& c :
       {Case{100, 0, 120}, Case{-1, 0, std::min<int64_t>(max_pos, 4116)}, Case{-1, 600, 600}}) {
    SequenceState seq = model->new_sequence();
    Sampler s = greedy_sampler(*model);
    GenerationParams gp;
    gp.max_tokens = c.max_tokens;
    gp.n_ctx = c.n_ctx;
    SequenceGenerator g(*model, nullptr, seq, s, gp);
    g.set_prompt(prompt);
    capacity_ok(seq, c.positions);
  }
}

TEST(Generator, ContextLimitAndPromptTooLong) {
  auto model = Model::load(synth_tiny().string());
  ThreadPool pool(2);
  Sampler s = greedy_sampler(*model);
  GenerationParams gp;
  gp.n_ctx = 10;
  gp.ignore_eos = true;
  std::vector<int32_t> prompt = {0, 100, 200, 300};
  SequenceState seq = model->new_sequence();
  GenerationResult r = generate(*model, pool, nullptr, seq, prompt, s, gp);
  EXPECT_EQ(r.stop, StopReason::kContextFull);
  EXPECT_EQ(r.tokens.size(), 6u);  // positions 4..9
  EXPECT_LE(seq.n_past, 10);
  std::vector<int32_t> too_long(10, 5);
  SequenceState seq2 = model->new_sequence();
  EXPECT_THROW(generate(*model, pool, nullptr, seq2, too_long, s, gp), Error);
  std::vector<int32_t> bad = {0, model->config().vocab_size};
  EXPECT_THROW(generate(*model, pool, nullptr, seq2, bad, s, gp), Error);
}

TEST(Generator, InterruptStopsDuringPrefillAndDecode) {
  auto model = Model::load(synth_tiny().string());
  ThreadPool pool(2);
  Sampler s = greedy_sampler(*model);
  std::atomic<bool> stop{false};
  GenerationParams gp;
  gp.prefill_chunk = 4;
  gp.ignore_eos = true;
  GenerationCallbacks cb;
  cb.interrupt = &stop;
  cb.on_prefill_progress = [&](int64_t d, int64_t) {
    if (d >= 8) stop = true;
  };
  std::vector<int32_t> prompt(40, 7);
  SequenceState seq = model->new_sequence();
  GenerationResult r = generate(*model, pool, nullptr, seq, prompt, s, gp, cb);
  EXPECT_EQ(r.stop, StopReason::kInterrupted);
  EXPECT_TRUE(r.tokens.empty());
  EXPECT_EQ(seq.n_past, 8);
  stop = false;
  int n = 0;
  GenerationCallbacks cb2;
  cb2.interrupt = &stop;
  cb2.on_token = [&](int32_t, const std::string&, const float*) {
    if (++n == 3) stop = true;
  };
  SequenceState seq2 = model->new_sequence();
  r = generate(*model, pool, nullptr, seq2, prompt, s, gp, cb2);
  EXPECT_EQ(r.stop, StopReason::kInterrupted);
  EXPECT_EQ(r.tokens.size(), 3u);
}

TEST(StopMatcher, ReportsTheIndexOfTheStringThatMatched) {
  // Empty stop strings are ignored but keep their place in the numbering.
  StopMatcher m({"", "never", "b", "abc"});
  EXPECT_EQ(m.matched_index(), -1);
  EXPECT_EQ(m.push("xxa"), "xx");
  EXPECT_EQ(m.push("bc"), "");
  ASSERT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "abc");  // earliest start wins over the shorter "b" inside it
  EXPECT_EQ(m.matched_index(), 3);
}

TEST(Generator, StopIndexIsTheStopStringThatMatched) {
  auto model = Model::load(synth_tiny().string());
  auto tk = tok::Tokenizer::load(synth_tiny());
  ThreadPool pool(2);
  const std::vector<int32_t> prompt = tk.encode("Once upon a time");
  auto run = [&](std::vector<std::string> stops, int* reported) {
    SequenceState seq = model->new_sequence();
    Sampler s = greedy_sampler(*model);
    GenerationParams gp;
    gp.max_tokens = 24;
    gp.ignore_eos = true;
    gp.stop = std::move(stops);
    if (reported) gp.on_stop_string = [reported](size_t i) { *reported = static_cast<int>(i); };
    return generate(*model, pool, &tk, seq, prompt, s, gp);
  };
  const GenerationResult free_run = run({}, nullptr);
  EXPECT_EQ(free_run.stop_index, -1);
  const std::string piece = test::middle_piece(free_run.text, 3);
  ASSERT_FALSE(piece.empty()) << free_run.text;
  int reported = -1;
  const GenerationResult r = run({"zzz-never", piece, "qqq-never"}, &reported);
  EXPECT_EQ(r.stop, StopReason::kStopString);
  EXPECT_EQ(r.stop_index, 1);
  EXPECT_EQ(reported, 1);
  EXPECT_EQ(r.text, free_run.text.substr(0, free_run.text.find(piece)));
}

// Runs the generator the way generate() does and counts the forward calls.
struct StepRun {
  std::vector<int32_t> tokens;
  std::string text;
  StopReason stop = StopReason::kNone;
  int forwards = 0;
  std::vector<std::vector<int32_t>> forced;  // Step::forced of each step that had some
};
StepRun step_run(const Model& model, ThreadPool& pool, const tok::Tokenizer& tk,
                 const std::vector<int32_t>& prompt, const GenerationParams& gp) {
  SequenceState seq = model.new_sequence();
  Sampler s = greedy_sampler(model);
  SequenceGenerator g(model, &tk, seq, s, gp);
  g.set_prompt(prompt);
  StepRun out;
  ForwardResult fr;
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  while (!g.done()) {
    BatchItem item = g.next_item();
    model.forward(std::span<const BatchItem>(&item, 1), pool, fr);
    ++out.forwards;
    const SequenceGenerator::Step st =
        g.on_logits(item.no_logits ? nullptr : fr.logits.data() + fr.first_row.at(0) * V);
    if (!st.forced.empty()) out.forced.push_back(st.forced);
  }
  out.tokens = g.generated();
  out.text = g.text();
  out.stop = g.stop_reason();
  return out;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(Generator, ForcedTokensAtTheStartRideWithThePrompt) {
  auto model = Model::load(synth_tiny().string());
  auto tk = tok::Tokenizer::load(synth_tiny());
  ThreadPool pool(2);
  const std::vector<int32_t> prompt = tk.encode("Once upon a time");
  const std::vector<int32_t> forced = tk.encode(" there was a forced opening");
  ASSERT_GE(forced.size(), 4u);
  GenerationParams gp;
  gp.ignore_eos = true;
  gp.forced = forced;
  gp.max_tokens = static_cast<int>(forced.size()) + 5;
  const StepRun a = step_run(*model, pool, tk, prompt, gp);
  // The same as a prompt that ends with the forced tokens, in as many forward calls.
  GenerationParams plain;
  plain.ignore_eos = true;
  plain.max_tokens = 5;
  const StepRun b = step_run(*model, pool, tk, concat(prompt, forced), plain);
  EXPECT_EQ(a.tokens, concat(forced, b.tokens));
  EXPECT_EQ(a.text, tk.decode(forced) + b.text);
  EXPECT_EQ(a.stop, StopReason::kMaxTokens);
  EXPECT_EQ(a.forwards, b.forwards);
  ASSERT_EQ(a.forced.size(), 1u);
  EXPECT_EQ(a.forced[0], forced);

  // Cut short by max_tokens, by the context, and ended by a stop string inside them.
  gp.max_tokens = 2;
  StepRun c = step_run(*model, pool, tk, prompt, gp);
  EXPECT_EQ(c.tokens, std::vector<int32_t>(forced.begin(), forced.begin() + 2));
  EXPECT_EQ(c.stop, StopReason::kMaxTokens);
  EXPECT_EQ(c.text, tk.decode(c.tokens));
  gp.max_tokens = -1;
  gp.n_ctx = static_cast<int64_t>(prompt.size()) + 3;
  c = step_run(*model, pool, tk, prompt, gp);
  EXPECT_EQ(c.tokens, std::vector<int32_t>(forced.begin(), forced.begin() + 3));
  EXPECT_EQ(c.stop, StopReason::kContextFull);
  gp.n_ctx = 0;
  gp.stop = {"forced"};
  c = step_run(*model, pool, tk, prompt, gp);
  EXPECT_EQ(c.stop, StopReason::kStopString);
  EXPECT_EQ(c.text, " there was a ");
}

TEST(Generator, ForcedTokensFollowTheTriggerTokenInTheSameStep) {
  auto model = Model::load(synth_tiny().string());
  auto tk = tok::Tokenizer::load(synth_tiny());
  ThreadPool pool(2);
  const std::vector<int32_t> prompt = tk.encode("Once upon a time");
  GenerationParams plain;
  plain.ignore_eos = true;
  plain.max_tokens = 12;
  const StepRun free_run = step_run(*model, pool, tk, prompt, plain);
  // The trigger: the first generated token (after the first) not generated before it.
  size_t j = 1;
  while (j < free_run.tokens.size() &&
         std::find(free_run.tokens.begin(), free_run.tokens.begin() + j, free_run.tokens[j]) !=
             free_run.tokens.begin() + j)
    ++j;
  ASSERT_LT(j, free_run.tokens.size());
  const std::vector<int32_t> head(free_run.tokens.begin(), free_run.tokens.begin() + j + 1);
  const std::vector<int32_t> forced = tk.encode(" and then, forced,");
  GenerationParams gp = plain;
  gp.forced = forced;
  gp.force_after = free_run.tokens[j];
  gp.max_tokens = static_cast<int>(head.size() + forced.size()) + 4;
  const StepRun a = step_run(*model, pool, tk, prompt, gp);
  GenerationParams rest = plain;
  rest.max_tokens = 4;
  const StepRun b = step_run(*model, pool, tk, concat(concat(prompt, head), forced), rest);
  EXPECT_EQ(a.tokens, concat(concat(head, forced), b.tokens));
  // One forward call per sampled token: the forced ones went in with the trigger.
  EXPECT_EQ(a.forwards, static_cast<int>(head.size()) + 4);
  ASSERT_EQ(a.forced.size(), 1u);  // placed once, even if the trigger comes again
  EXPECT_EQ(a.forced[0], forced);
}

// The tokens after `forced` that the constraint governed: those up to where the text they
// make completes one of `choices`.
size_t constrained_count(const tok::Tokenizer& tk, const std::vector<int32_t>& after,
                         const std::vector<std::string>& choices) {
  std::string text;
  for (size_t i = 0; i < after.size(); ++i) {
    text += tk.token_bytes(after[i]);
    for (const std::string& c : choices)
      if (text.starts_with(c)) return i + 1;
  }
  return after.size() + 1;  // never completed
}

TEST(Generator, AfterForcedConstraintKeepsTheOutputOnAChoice) {
  auto model = Model::load(synth_tiny().string());
  auto tk = tok::Tokenizer::load(synth_tiny());
  ThreadPool pool(2);
  const std::vector<int32_t> prompt = tk.encode("Once upon a time");
  const std::vector<int32_t> forced = tk.encode(" she called name=\"");
  const std::vector<std::string> choices = {"get_weather\">\n", "get_time\">\n"};
  GenerationParams plain;
  plain.ignore_eos = true;
  plain.forced = forced;
  plain.max_tokens = static_cast<int>(forced.size()) + 24;
  GenerationParams gp = plain;
  gp.after_forced =
      std::make_shared<const ChoiceConstraint>(std::make_shared<const VocabIndex>(tk), choices);
  const StepRun free_run = step_run(*model, pool, tk, prompt, plain);
  const StepRun a = step_run(*model, pool, tk, prompt, gp);
  const std::string opener = tk.decode(forced);
  auto on_a_choice = [&](const std::string& text) {
    const std::string after = text.substr(opener.size());
    return after.starts_with(choices[0]) || after.starts_with(choices[1]);
  };
  ASSERT_FALSE(on_a_choice(free_run.text)) << "the model names a tool unconstrained";
  EXPECT_TRUE(on_a_choice(a.text)) << a.text;
  // No forward call of its own, and once a choice is complete the model is free again: the rest is
  // the greedy continuation of everything before it.
  EXPECT_EQ(a.forwards, free_run.forwards);
  const std::vector<int32_t> after(a.tokens.begin() + static_cast<long>(forced.size()),
                                   a.tokens.end());
  const size_t k = constrained_count(tk, after, choices);
  ASSERT_LT(k, after.size());
  std::vector<int32_t> head = concat(prompt, forced);
  head.insert(head.end(), after.begin(), after.begin() + static_cast<long>(k));
  GenerationParams rest;
  rest.ignore_eos = true;
  rest.max_tokens = static_cast<int>(after.size() - k);
  EXPECT_EQ(step_run(*model, pool, tk, head, rest).tokens,
            std::vector<int32_t>(after.begin() + static_cast<long>(k), after.end()));

  // Sampling at a high temperature stays on a choice too.
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    SamplingParams sp;
    sp.temperature = 1.5f;
    sp.seed = seed;
    Sampler s(sp, model->config().vocab_size);
    SequenceState seq = model->new_sequence();
    const GenerationResult r = generate(*model, pool, &tk, seq, prompt, s, gp);
    EXPECT_TRUE(on_a_choice(r.text)) << "seed " << seed << ": " << r.text;
  }
  // In force after a trigger token as well (thinking mode's </think>).
  GenerationParams first;
  first.ignore_eos = true;
  first.max_tokens = 1;
  const int32_t trigger = step_run(*model, pool, tk, prompt, first).tokens.at(0);
  GenerationParams trig = gp;
  trig.force_after = trigger;
  const StepRun t = step_run(*model, pool, tk, prompt, trig);
  const std::vector<int32_t> t_head = concat({trigger}, forced);
  ASSERT_GT(t.tokens.size(), t_head.size());
  EXPECT_EQ(std::vector<int32_t>(t.tokens.begin(), t.tokens.begin() + t_head.size()), t_head);
  const std::vector<int32_t> t_after(t.tokens.begin() + t_head.size(), t.tokens.end());
  EXPECT_LE(constrained_count(tk, t_after, choices), t_after.size()) << t.text;
}

TEST(Generator, HaltEndsTheGenerationWhenTheCallbackSaysSo) {
  auto model = Model::load(synth_tiny().string());
  auto tk = tok::Tokenizer::load(synth_tiny());
  ThreadPool pool(2);
  const std::vector<int32_t> prompt = tk.encode("Once upon a time");
  GenerationParams gp;
  gp.ignore_eos = true;
  gp.forced = tk.encode(" there was");
  gp.max_tokens = 40;
  Sampler s0 = greedy_sampler(*model);
  SequenceState seq0 = model->new_sequence();
  const GenerationResult free_run = generate(*model, pool, &tk, seq0, prompt, s0, gp);
  ASSERT_EQ(free_run.stop, StopReason::kMaxTokens);
  std::string seen;
  int calls = 0;
  gp.halt = [&](std::string_view text) {
    seen += text;
    return ++calls == 3;
  };
  Sampler s = greedy_sampler(*model);
  SequenceState seq = model->new_sequence();
  const GenerationResult r = generate(*model, pool, &tk, seq, prompt, s, gp);
  EXPECT_EQ(r.stop, StopReason::kHalted);
  EXPECT_STREQ(stop_reason_name(r.stop), "halted");
  EXPECT_EQ(calls, 3);
  EXPECT_TRUE(seen.starts_with(" there was")) << seen;  // the forced tokens' text comes too
  EXPECT_TRUE(r.text.starts_with(seen)) << r.text;
  ASSERT_LT(r.tokens.size(), free_run.tokens.size());
  EXPECT_EQ(r.tokens, std::vector<int32_t>(free_run.tokens.begin(),
                                           free_run.tokens.begin() + r.tokens.size()));
}

// Logits of the first reply token of a later turn, computed by the session (state reused) and
// by a fresh prefill of the whole rendered conversation.
void check_turn_reuse(bool thinking) {
  auto model = Model::load(synth_tiny().string());
  auto tk = tok::Tokenizer::load(synth_tiny());
  ThreadPool pool(2);
  const int V = model->config().vocab_size;
  ChatSession chat(*model, pool, tk, 4096);
  chat.options().thinking = thinking;
  chat.prefill_chunk = 7;  // odd chunking on purpose
  chat.set_system("You are terse.");
  SamplingParams sp;
  sp.temperature = 0;
  Sampler s(sp, V);
  GenerationParams gp;
  gp.max_tokens = 6;
  ChatSession::Turn t1 = chat.say("Hello there", s, gp);
  EXPECT_EQ(t1.reused_tokens, 0);
  EXPECT_EQ(t1.gen.tokens.size(), 6u);
  chat.messages().push_back({{"role", "user"}, {"content", "And a second question?"}});
  const std::vector<int32_t> full = chat.render_tokens();
  std::vector<float> first;
  GenerationCallbacks cb;
  cb.on_token = [&](int32_t, const std::string&, const float* l) {
    if (first.empty()) first.assign(l, l + V);
  };
  ChatSession::Turn t2 = chat.reply(s, gp, cb);
  ASSERT_EQ(first.size(), static_cast<size_t>(V));
  EXPECT_GT(t2.reused_tokens, 0);
  EXPECT_EQ(t2.reused_tokens + t2.prefilled_tokens, static_cast<int64_t>(full.size()));
  // At least turn 1's prompt is reused (up to the start of the reply; random weights often
  // produce non-canonical tokenisations, so the reply itself may be re-prefilled).
  EXPECT_GE(t2.reused_tokens, t1.prefilled_tokens - 1);

  SequenceState fresh = model->new_sequence();
  std::vector<float> ref;
  ASSERT_TRUE(prefill(*model, pool, fresh, full, 4096, &ref));
  double maxd = 0;
  for (int i = 0; i < V; ++i)
    maxd = std::max(maxd, static_cast<double>(std::fabs(ref[i] - first[i])));
  EXPECT_LT(maxd, 1e-3) << "turn-2 logits differ from a fresh prefill of the conversation";
  EXPECT_EQ(Sampler::argmax(ref.data(), V), Sampler::argmax(first.data(), V));
  std::printf(
      "[chat reuse, %s] reused %lld, prefilled %lld tokens; max |Δlogit| vs fresh prefill %.3g\n",
      thinking ? "thinking" : "chat", static_cast<long long>(t2.reused_tokens),
      static_cast<long long>(t2.prefilled_tokens), maxd);
}

TEST(ChatSession, SecondTurnEqualsFreshPrefill) { check_turn_reuse(false); }
TEST(ChatSession, SecondTurnEqualsFreshPrefillThinkingDropsReasoning) { check_turn_reuse(true); }

}  // namespace
}  // namespace dsv4
