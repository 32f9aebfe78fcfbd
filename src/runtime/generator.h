// Text generation over one SequenceState: chunked prefill of the prompt, then decode token by
// token until EOS, a stop string, the token limit or the context limit.
//
// Two levels:
//  * SequenceGenerator: a per-sequence step machine that never calls the model itself. A caller
//    (the single-sequence loop below, or the server batching many sequences into one
//    Model::forward) asks it for its next BatchItem (a prefill chunk, or the last sampled token),
//    runs the forward pass, and hands back the item's logits row. It samples, detokenizes
//    (UTF-8-safe pieces), applies stop strings with hold-back, and keeps timings.
//  * generate(): the plain loop for one sequence, with progress and interrupt support.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kv/sequence_state.h"
#include "model/model.h"
#include "runtime/sampler.h"
#include "runtime/token_constraint.h"

namespace dsv4 {

class ThreadPool;
namespace tok {
class Tokenizer;
class StreamingDetokenizer;
}  // namespace tok

// kHalted: GenerationParams::halt asked to end it.
enum class StopReason { kNone, kEos, kStopString, kMaxTokens, kContextFull, kInterrupted, kHalted };
// "eos", "stop", "length", "context", "interrupted", "halted"
const char* stop_reason_name(StopReason r);

struct GenerationParams {
  int max_tokens = -1;      // generated tokens at most (-1: until EOS or context full)
  int64_t n_ctx = 0;        // context limit in tokens (0: the model's max_position_embeddings)
  int prefill_chunk = 256;  // tokens per prefill forward call
  std::vector<std::string> stop;  // stop strings, matched on the output text
  std::vector<int32_t> eos_ids;   // empty: {config eos_token_id}
  bool ignore_eos = false;
  bool skip_special = true;  // added tokens (markers like </think>) give no output text
  // Called on the generating thread when a stop string ends the generation, with its index in
  // `stop`: callers that drive the generator through the Scheduler never see the generator
  // itself, and the stop string is cut from the text, so this is how they learn which one it was.
  std::function<void(size_t stop_index)> on_stop_string;
  // Tokens written into the output instead of sampled (the server forces the opening of a DSML
  // tool call this way when a request requires one): at the start of the output when
  // force_after < 0, else right after the first generated `force_after` token (e.g. </think>).
  // They are output tokens like sampled ones (counted, detokenized, matched against stop
  // strings) but take no forward pass of their own: they are fed in the same step as the prompt's
  // last chunk or as the token that triggered them. Cut short to fit max_tokens and the context.
  std::vector<int32_t> forced;
  int32_t force_after = -1;
  // Constrains the tokens sampled right after `forced` (once all of it was output) until the text
  // written since then completes one of its choices. The server makes a tool call forced by
  // tool_choice "required" name a declared tool this way: forced ends with `name="`, the choices
  // are the tools' `NAME">\n`.
  std::shared_ptr<const ChoiceConstraint> after_forced;
  // Called on the generating thread with the output text each step releases (in order, the
  // forced tokens' included); returning true ends the generation with kHalted. The server stops
  // a forced tool call this way as soon as its output can no longer parse.
  std::function<bool(std::string_view text)> halt;
};

// Finds stop strings in streamed text. Text that might be the start of a stop string is held back
// until it is decided, so what push() returns never contains (part of) a stop string. Pieces are
// valid UTF-8 and cuts happen only at the first byte of a stop string, so output stays valid UTF-8.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops = {});
  std::string push(std::string_view piece);  // returns text safe to emit
  std::string flush();                       // held-back text at the end (when not stopped)
  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }
  // Index of the matched stop string in the list given to the constructor (-1: none).
  int matched_index() const { return matched_index_; }

 private:
  std::vector<std::pair<std::string, int>> stops_;  // non-empty stop strings, original index
  std::string held_;
  bool stopped_ = false;
  std::string matched_;
  int matched_index_ = -1;
};

struct GenerationTimings {
  int64_t prompt_tokens = 0;
  double prompt_s = 0;  // wall time of the prefill forward calls
  int64_t gen_tokens = 0;
  double gen_s = 0;  // wall time from the end of the prefill to the last token
  double prompt_tok_s() const { return prompt_s > 0 ? prompt_tokens / prompt_s : 0; }
  double gen_tok_s() const { return gen_s > 0 ? gen_tokens / gen_s : 0; }
};

class SequenceGenerator {
 public:
  // `tok` may be null (then no text is produced and stop strings are not supported). The
  // sequence, sampler and tokenizer must outlive this object.
  SequenceGenerator(const Model& model, const tok::Tokenizer* tok, SequenceState& seq,
                    Sampler& sampler, const GenerationParams& params);
  ~SequenceGenerator();

  // Queues prompt tokens after what `seq` already holds and records them in the sampler's
  // penalty window. Throws dsv4::Error if they do not fit in the context (room must remain for
  // at least one generated token). Call once, before the first next_item().
  void set_prompt(std::span<const int32_t> tokens);

  bool done() const { return stop_ != StopReason::kNone; }
  StopReason stop_reason() const { return stop_; }
  // With kStopString: the index in params.stop of the stop string that matched (else -1).
  int stop_index() const { return stops_.matched_index(); }
  bool in_prefill() const { return prompt_pos_ < prompt_.size(); }
  int64_t prompt_done() const { return static_cast<int64_t>(prompt_pos_); }
  int64_t prompt_total() const { return static_cast<int64_t>(prompt_.size()); }

  // The work for the next forward call: a prefill chunk (logits only for the last chunk), or the
  // last sampled token (with the forced tokens that follow it, if any). Spans stay valid until
  // on_logits(). Must not be called when done().
  BatchItem next_item();

  struct Step {
    int32_t token = -1;             // token sampled at this step (-1: prefill chunk without logits)
    std::vector<int32_t> forced;    // output tokens forced before `token` (params.forced)
    std::string text;               // output text released by this step (stop-string safe)
    const float* logits = nullptr;  // the row sampled from (valid during the call)
  };
  // Hands back the logits row of the item from next_item() (nullptr if it asked for none).
  Step on_logits(const float* row);

  // Ends generation at the next step (reason kInterrupted). Safe from another thread.
  void interrupt() { interrupted_.store(true); }
  // Ends generation now with `r` (e.g. a server cancelling); releases held-back text.
  std::string finish(StopReason r);

  const std::vector<int32_t>& generated() const { return generated_; }
  const std::string& text() const { return text_; }  // all output text released so far
  const GenerationTimings& timings() const { return timings_; }
  // Tokens actually fed into the sequence (prompt + generated except the last sampled one).
  int64_t fed_tokens() const { return fed_; }

 private:
  using Clock = std::chrono::steady_clock;
  std::string emit(int32_t token);
  void end(StopReason r, std::string* out);
  // Appends token t's text; true (the generation has ended) if that completed a stop string.
  bool emit_ends_at_stop(int32_t t, std::string* text);
  // True (the generation has ended) once max_tokens tokens have been generated.
  bool end_at_max_tokens(std::string* text);
  // How many of params.forced fit after `pos` more tokens are fed (max_tokens, context).
  size_t forced_room(int64_t pos) const;
  // Appends the forced tokens just fed to the output; false when that ended the generation.
  bool release_forced(Step& step);
  // `row` with every token that params.after_forced does not allow at this point set to -inf.
  const float* constrained_row(const float* row);

  const Model& model_;
  const tok::Tokenizer* tok_;
  SequenceState& seq_;
  Sampler& sampler_;
  GenerationParams p_;
  int64_t n_ctx_ = 0;
  std::vector<int32_t> prompt_;
  size_t prompt_pos_ = 0, chunk_len_ = 0;
  bool chunk_wants_logits_ = false;
  std::vector<int32_t> generated_;
  std::vector<int32_t> feed_;  // for the next decode step: the last sampled token, then forced
  size_t release_ = 0;         // forced tokens in the item being run, output at on_logits()
  bool forced_done_ = false;   // params.forced was placed (it is used once)
  bool constraining_ = false;  // params.after_forced is in force
  std::string constrained_;    // token bytes sampled since it came into force
  std::vector<int32_t> allowed_;
  std::vector<float> masked_;
  std::string text_;
  std::unique_ptr<tok::StreamingDetokenizer> detok_;
  StopMatcher stops_;
  StopReason stop_ = StopReason::kNone;
  std::atomic<bool> interrupted_{false};
  GenerationTimings timings_;
  Clock::time_point t_prefill_start_, t_gen_start_;
  bool prefill_started_ = false;
  int64_t fed_ = 0;
};

struct GenerationCallbacks {
  // Prefill progress (tokens done, total), called after each chunk.
  std::function<void(int64_t, int64_t)> on_prefill_progress;
  // Every sampled token with the text it released (may be empty) and its logits row.
  std::function<void(int32_t token, const std::string& text, const float* logits)> on_token;
  // Checked between forward calls; when it reads true, generation ends with kInterrupted.
  const std::atomic<bool>* interrupt = nullptr;
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated tokens (EOS included when it ended the generation)
  std::string text;             // output text (stop string and after removed)
  StopReason stop = StopReason::kNone;
  int stop_index = -1;  // kStopString: index in params.stop of the one that matched
  GenerationTimings timings;
};

// Prefills `prompt` into `seq` (after what it holds) and generates. Throws dsv4::Error when the
// prompt does not fit into the context.
GenerationResult generate(const Model& model, ThreadPool& pool, const tok::Tokenizer* tok,
                          SequenceState& seq, std::span<const int32_t> prompt, Sampler& sampler,
                          const GenerationParams& params, const GenerationCallbacks& cb = {});

// Prefill only (no sampling): feeds `tokens` in chunks; returns the logits row of the last token
// in `last_logits` (if non-null). Returns false if interrupted (seq then holds a partial prefill).
bool prefill(const Model& model, ThreadPool& pool, SequenceState& seq,
             std::span<const int32_t> tokens, int chunk, std::vector<float>* last_logits,
             const std::function<void(int64_t, int64_t)>& progress = {},
             const std::atomic<bool>* interrupt = nullptr);

}  // namespace dsv4
