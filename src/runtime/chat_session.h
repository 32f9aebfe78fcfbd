// A multi-turn conversation over one SequenceState that keeps the model state between turns:
// each turn renders the whole conversation with the V4 chat encoder, keeps the longest prefix of
// tokens the state already holds, and prefills only the rest. Where the rendering of earlier turns
// changes (drop_thinking removes old reasoning; a reply re-tokenises differently), the state is
// rolled back to a snapshot taken at the start of the last assistant replies (or re-prefilled).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "api/chat_encoder.h"
#include "kv/sequence_state.h"
#include "runtime/generator.h"

namespace dsv4 {

class ChatSession {
 public:
  ChatSession(const Model& model, ThreadPool& pool, const tok::Tokenizer& tok, int64_t n_ctx);

  api::ojson& messages() { return messages_; }
  const api::ojson& messages() const { return messages_; }
  api::ChatOptions& options() { return opts_; }
  int prefill_chunk = 256;

  // Forgets the conversation (keeps a system message if `keep_system`) and clears the state.
  void reset(bool keep_system = true);
  // Sets, replaces or (empty text) removes the leading system message.
  void set_system(const std::string& text);

  struct Turn {
    GenerationResult gen;
    std::string reasoning, content;  // split at </think> (thinking mode)
    int64_t reused_tokens = 0;       // prompt tokens already in the state
    int64_t prefilled_tokens = 0;    // prompt tokens prefilled this turn
    double prefill_s = 0;            // all prefill forward time of this turn
  };
  // Appends a user message, then reply().
  Turn say(const std::string& user_text, Sampler& sampler, const GenerationParams& params,
           const GenerationCallbacks& cb = {});
  // Generates the assistant reply to the conversation as it stands and appends it (also when cut
  // short by an interrupt during decoding; an interrupt during prefill appends nothing).
  Turn reply(Sampler& sampler, const GenerationParams& params, const GenerationCallbacks& cb = {});

  int64_t used() const { return seq_.n_past; }
  int64_t n_ctx() const { return n_ctx_; }
  const SequenceState& state() const { return seq_; }
  const std::vector<int32_t>& context_tokens() const { return ctx_; }
  // The prompt tokens the next reply would be generated from.
  std::vector<int32_t> render_tokens() const;

 private:
  void sync_to(const std::vector<int32_t>& tokens, size_t keep_last, const GenerationCallbacks& cb,
               Turn& turn, bool* interrupted);

  const Model& model_;
  ThreadPool& pool_;
  const tok::Tokenizer& tok_;
  int64_t n_ctx_;
  api::ojson messages_ = api::ojson::array();
  api::ChatOptions opts_;
  SequenceState seq_;
  std::vector<int32_t> ctx_;  // tokens held by seq_
  std::deque<std::pair<size_t, SequenceState>> snapshots_;  // (ctx length, state)
};

}  // namespace dsv4
