#include "runtime/chat_session.h"

#include <algorithm>
#include <chrono>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace dsv4 {

ChatSession::ChatSession(const Model& model, ThreadPool& pool, const tok::Tokenizer& tok, int64_t n_ctx)
    : model_(model), pool_(pool), tok_(tok), n_ctx_(n_ctx > 0 ? n_ctx : model.config().max_position_embeddings),
      seq_(model.new_sequence()) {}

void ChatSession::reset(bool keep_system) {
  api::ojson kept = api::ojson::array();
  if (keep_system && !messages_.empty() && messages_[0].value("role", "") == "system") kept.push_back(messages_[0]);
  messages_ = kept;
  seq_.reset();
  ctx_.clear();
  snapshots_.clear();
}

void ChatSession::set_system(const std::string& text) {
  const bool has = !messages_.empty() && messages_[0].value("role", "") == "system";
  if (text.empty()) {
    if (has) messages_.erase(messages_.begin());
    return;
  }
  api::ojson m = {{"role", "system"}, {"content", text}};
  if (has) messages_[0] = m;
  else messages_.insert(messages_.begin(), m);
}

std::vector<int32_t> ChatSession::render_tokens() const { return api::encode_chat(tok_, messages_, opts_); }

ChatSession::Turn ChatSession::say(const std::string& user_text, Sampler& sampler,
                                   const GenerationParams& params, const GenerationCallbacks& cb) {
  messages_.push_back({{"role", "user"}, {"content", user_text}});
  Turn t = reply(sampler, params, cb);
  if (t.gen.stop == StopReason::kInterrupted && t.gen.tokens.empty()) messages_.erase(messages_.end() - 1);
  return t;
}

void ChatSession::sync_to(const std::vector<int32_t>& tokens, size_t keep_last, const GenerationCallbacks& cb,
                          Turn& turn, bool* interrupted) {
  *interrupted = false;
  size_t common = 0;
  while (common < ctx_.size() && common < tokens.size() && ctx_[common] == tokens[common]) ++common;
  if (common < ctx_.size()) {
    // The state holds tokens the new rendering does not have: roll back.
    while (!snapshots_.empty() && snapshots_.back().first > common) snapshots_.pop_back();
    if (!snapshots_.empty()) {
      seq_ = snapshots_.back().second;
      ctx_.resize(snapshots_.back().first);
    } else {
      seq_.reset();
      ctx_.clear();
    }
  }
  turn.reused_tokens = static_cast<int64_t>(ctx_.size());
  const size_t target = tokens.size() - keep_last;
  if (ctx_.size() < target) {
    std::span<const int32_t> todo(tokens.data() + ctx_.size(), target - ctx_.size());
    const size_t base = ctx_.size();
    auto t0 = std::chrono::steady_clock::now();
    std::function<void(int64_t, int64_t)> progress;
    if (cb.on_prefill_progress) {
      const int64_t total = static_cast<int64_t>(tokens.size() - base);
      progress = [&, total](int64_t d, int64_t) { cb.on_prefill_progress(d, total); };
    }
    const bool ok = prefill(model_, pool_, seq_, todo, prefill_chunk, nullptr, progress, cb.interrupt);
    turn.prefill_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const size_t now = static_cast<size_t>(seq_.n_past);
    ctx_.assign(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(now));
    turn.prefilled_tokens += static_cast<int64_t>(now - base);
    if (!ok) *interrupted = true;
  }
}

ChatSession::Turn ChatSession::reply(Sampler& sampler, const GenerationParams& params,
                                     const GenerationCallbacks& cb) {
  Turn turn;
  const std::vector<int32_t> tokens = render_tokens();
  if (static_cast<int64_t>(tokens.size()) >= n_ctx_) {
    throw Error("the conversation is " + std::to_string(tokens.size()) + " tokens, which leaves no room to " +
                "generate in a context of " + std::to_string(n_ctx_) + " tokens (/reset, or raise -c)");
  }
  bool interrupted = false;
  // Everything but the last prompt token; snapshot there (the start of the assistant reply).
  sync_to(tokens, 1, cb, turn, &interrupted);
  if (interrupted) {
    turn.gen.stop = StopReason::kInterrupted;
    return turn;
  }
  if (snapshots_.empty() || snapshots_.back().first != ctx_.size()) {
    snapshots_.emplace_back(ctx_.size(), seq_);
    while (snapshots_.size() > 2) snapshots_.pop_front();
  }
  // Penalty window: the whole prompt (set_prompt adds the last token).
  sampler.clear_history();
  for (size_t i = 0; i + 1 < tokens.size(); ++i) sampler.accept(tokens[i]);

  GenerationParams p = params;
  p.n_ctx = n_ctx_;
  turn.gen = generate(model_, pool_, &tok_, seq_, std::span<const int32_t>(&tokens.back(), 1), sampler, p, cb);
  turn.prefilled_tokens += 1;
  turn.prefill_s += turn.gen.timings.prompt_s;
  // Tokens the state now holds: the prompt plus the generated tokens that were fed back.
  ctx_ = tokens;
  const size_t fed = static_cast<size_t>(seq_.n_past) - tokens.size();
  ctx_.insert(ctx_.end(), turn.gen.tokens.begin(), turn.gen.tokens.begin() + static_cast<std::ptrdiff_t>(fed));

  // Split reasoning / content at </think> (thinking mode: the prompt ends with <think>).
  const int32_t think_start = tok_.token_id("<think>");
  const int32_t think_end = tok_.token_id("</think>");
  std::vector<int32_t> gen = turn.gen.tokens;
  if (turn.gen.stop == StopReason::kEos && !gen.empty()) gen.pop_back();
  auto split = gen.end();
  const bool thinking = think_start >= 0 && tokens.back() == think_start;
  if (thinking) split = std::find(gen.begin(), gen.end(), think_end);
  std::vector<int32_t> reasoning_ids, content_ids;
  if (thinking) {
    reasoning_ids.assign(gen.begin(), split);
    if (split != gen.end()) content_ids.assign(split + 1, gen.end());
  } else {
    content_ids = gen;
  }
  turn.reasoning = tok_.decode(reasoning_ids, false);
  turn.content = tok_.decode(content_ids, false);
  if (turn.gen.stop == StopReason::kStopString) {
    // The reply ends at the stop string: keep the released text (markers skipped).
    turn.content = thinking && split == gen.end() ? std::string() : turn.gen.text;
    if (thinking && split == gen.end()) turn.reasoning = turn.gen.text;
  }
  api::ojson msg = {{"role", "assistant"}, {"content", turn.content}};
  if (thinking) msg["reasoning_content"] = turn.reasoning;
  messages_.push_back(msg);
  return turn;
}

}  // namespace dsv4
