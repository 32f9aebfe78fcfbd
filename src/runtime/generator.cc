#include "runtime/generator.h"

#include <algorithm>
#include <limits>

#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace dsv4 {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::kNone:
      return "none";
    case StopReason::kEos:
      return "eos";
    case StopReason::kStopString:
      return "stop";
    case StopReason::kMaxTokens:
      return "length";
    case StopReason::kContextFull:
      return "context";
    case StopReason::kInterrupted:
      return "interrupted";
    case StopReason::kHalted:
      return "halted";
  }
  return "?";
}

// ---- StopMatcher ------------------------------------------------------------------------------

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (size_t i = 0; i < stops.size(); ++i)
    if (!stops[i].empty()) stops_.emplace_back(std::move(stops[i]), static_cast<int>(i));
}

std::string StopMatcher::push(std::string_view piece) {
  if (stopped_) return {};
  held_.append(piece);
  // A complete stop string: emit what precedes the earliest one.
  size_t best = std::string::npos;
  for (const auto& [s, index] : stops_) {
    size_t at = held_.find(s);
    if (at != std::string::npos && at < best) {
      best = at;
      matched_ = s;
      matched_index_ = index;
    }
  }
  if (best != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, best);
    held_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const auto& [s, index] : stops_) {
    for (size_t len = std::min(s.size() - 1, held_.size()); len > keep; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::flush() {
  if (stopped_) return {};
  std::string out;
  out.swap(held_);
  return out;
}

// ---- SequenceGenerator ------------------------------------------------------------------------

namespace {
constexpr int64_t kOpenEndedReserve = 4096;
}  // namespace

SequenceGenerator::SequenceGenerator(const Model& model, const tok::Tokenizer* tok,
                                     SequenceState& seq, Sampler& sampler,
                                     const GenerationParams& params)
    : model_(model), tok_(tok), seq_(seq), sampler_(sampler), p_(params), stops_(params.stop) {
  const ModelConfig& c = model.config();
  n_ctx_ = p_.n_ctx > 0 ? p_.n_ctx : c.max_position_embeddings;
  if (p_.eos_ids.empty()) p_.eos_ids.push_back(c.eos_token_id);
  if (p_.prefill_chunk <= 0) p_.prefill_chunk = 256;
  if (!p_.stop.empty() && !tok_) throw Error("stop strings need a tokenizer");
  if (tok_) detok_ = std::make_unique<tok::StreamingDetokenizer>(*tok_, p_.skip_special);
  fed_ = seq.n_past;
}

SequenceGenerator::~SequenceGenerator() = default;

void SequenceGenerator::set_prompt(std::span<const int32_t> tokens) {
  const int V = model_.config().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= V) {
      throw Error("prompt token " + std::to_string(i) + " is id " + std::to_string(tokens[i]) +
                  ", outside the vocabulary [0, " + std::to_string(V) + ")");
    }
  }
  const int64_t total = seq_.n_past + static_cast<int64_t>(tokens.size());
  if (total >= n_ctx_) {
    throw Error("prompt is " + std::to_string(tokens.size()) + " tokens" +
                (seq_.n_past ? " (+ " + std::to_string(seq_.n_past) + " already in context)"
                             : std::string()) +
                ", which leaves no room to generate in a context of " + std::to_string(n_ctx_) +
                " tokens (raise -c or shorten the prompt)");
  }
  if (tokens.empty() && seq_.n_past == 0) throw Error("empty prompt");
  // The sequence's caches for the whole request up front, so that decode steps do not
  // reallocate them; an open-ended request gets the next kOpenEndedReserve positions and grows
  // geometrically beyond.
  const int64_t room = p_.max_tokens >= 0 ? p_.max_tokens + static_cast<int64_t>(p_.forced.size())
                                          : kOpenEndedReserve;
  seq_.reserve(std::min(n_ctx_, total + room));
  prompt_.assign(tokens.begin(), tokens.end());
  prompt_pos_ = 0;
  for (int32_t t : tokens) sampler_.accept(t);
  timings_.prompt_tokens = static_cast<int64_t>(tokens.size());
  for (size_t i = 0; i < p_.forced.size(); ++i) {
    if (p_.forced[i] < 0 || p_.forced[i] >= V) {
      throw Error("forced token " + std::to_string(i) + " is id " + std::to_string(p_.forced[i]) +
                  ", outside the vocabulary [0, " + std::to_string(V) + ")");
    }
  }
  if (p_.force_after < 0 && !p_.forced.empty()) {
    // Forced output at the start rides with the prompt's last chunk, so the row that chunk
    // returns already predicts the token after it; it is output once the prefill is done.
    forced_done_ = true;
    release_ = forced_room(total);
    prompt_.insert(prompt_.end(), p_.forced.begin(), p_.forced.begin() + release_);
    for (size_t i = 0; i < release_; ++i) sampler_.accept(p_.forced[i]);
  }
}

size_t SequenceGenerator::forced_room(int64_t pos) const {
  int64_t k = std::min<int64_t>(static_cast<int64_t>(p_.forced.size()), n_ctx_ - pos);
  if (p_.max_tokens >= 0)
    k = std::min<int64_t>(k, p_.max_tokens - static_cast<int64_t>(generated_.size()));
  return static_cast<size_t>(std::max<int64_t>(k, 0));
}

bool SequenceGenerator::release_forced(Step& step) {
  const size_t n = release_;
  release_ = 0;
  for (size_t i = 0; i < n; ++i) {  // params.forced is placed once, always from its start
    const int32_t f = p_.forced[i];
    generated_.push_back(f);
    ++timings_.gen_tokens;
    step.forced.push_back(f);
    if (emit_ends_at_stop(f, &step.text)) return false;
  }
  if (end_at_max_tokens(&step.text)) return false;
  if (n == p_.forced.size() && p_.after_forced) {
    constraining_ = true;
    constrained_.clear();
  }
  return true;
}

const float* SequenceGenerator::constrained_row(const float* row) {
  const int V = model_.config().vocab_size;
  p_.after_forced->allowed(constrained_, allowed_);
  masked_.assign(static_cast<size_t>(V), -std::numeric_limits<float>::infinity());
  bool any = false;
  for (int32_t id : allowed_) {
    if (id >= V) continue;  // the tokenizer may know ids the model's head has no row for
    masked_[static_cast<size_t>(id)] = row[id];
    any = true;
  }
  if (!any) {
    throw Error("no token of the model's vocabulary continues the constrained output \"" +
                constrained_ + "\" towards one of its " +
                std::to_string(p_.after_forced->choices().size()) + " choices");
  }
  return masked_.data();
}

bool SequenceGenerator::emit_ends_at_stop(int32_t t, std::string* text) {
  *text += emit(t);
  if (!stops_.stopped()) return false;
  end(StopReason::kStopString, text);
  return true;
}

bool SequenceGenerator::end_at_max_tokens(std::string* text) {
  if (p_.max_tokens < 0 || static_cast<int64_t>(generated_.size()) < p_.max_tokens) return false;
  end(StopReason::kMaxTokens, text);
  return true;
}

BatchItem SequenceGenerator::next_item() {
  if (done()) throw Error("SequenceGenerator: next_item() after the generation ended");
  BatchItem it;
  it.seq = &seq_;
  if (in_prefill()) {
    if (!prefill_started_) {
      prefill_started_ = true;
      t_prefill_start_ = Clock::now();
    }
    chunk_len_ = std::min(prompt_.size() - prompt_pos_, static_cast<size_t>(p_.prefill_chunk));
    chunk_wants_logits_ = prompt_pos_ + chunk_len_ == prompt_.size();
    it.tokens = std::span<const int32_t>(prompt_.data() + prompt_pos_, chunk_len_);
    it.no_logits = !chunk_wants_logits_;
    return it;
  }
  if (feed_.empty()) throw Error("SequenceGenerator: nothing to run (no prompt set)");
  chunk_len_ = feed_.size();
  chunk_wants_logits_ = true;
  it.tokens = std::span<const int32_t>(feed_.data(), feed_.size());
  return it;
}

std::string SequenceGenerator::emit(int32_t token) {
  if (!detok_) return {};
  if (p_.skip_special && tok_->is_added(token)) return {};  // markers (<think>, </think>, …)
  std::string piece = detok_->push(token);
  std::string out = stops_.push(piece);
  text_ += out;
  return out;
}

void SequenceGenerator::end(StopReason r, std::string* out) {
  if (stop_ != StopReason::kNone) return;
  stop_ = r;
  if (detok_ && r != StopReason::kStopString) {
    std::string tail = stops_.push(detok_->flush());
    tail += stops_.flush();
    if (stops_.stopped()) stop_ = StopReason::kStopString;
    text_ += tail;
    if (out) *out += tail;
  }
  if (stop_ == StopReason::kStopString && p_.on_stop_string && stops_.matched_index() >= 0)
    p_.on_stop_string(static_cast<size_t>(stops_.matched_index()));
  if (timings_.gen_tokens > 0 || t_gen_start_ != Clock::time_point{}) {
    timings_.gen_s = std::chrono::duration<double>(Clock::now() - t_gen_start_).count();
  }
}

std::string SequenceGenerator::finish(StopReason r) {
  std::string out;
  end(r, &out);
  return out;
}

SequenceGenerator::Step SequenceGenerator::on_logits(const float* row) {
  Step step;
  if (done()) return step;
  // Account for the tokens just fed.
  fed_ += static_cast<int64_t>(chunk_len_);
  if (in_prefill()) {
    prompt_pos_ += chunk_len_;
    if (!in_prefill()) {
      timings_.prompt_s = std::chrono::duration<double>(Clock::now() - t_prefill_start_).count();
      t_gen_start_ = Clock::now();
    } else {
      if (interrupted_.load()) end(StopReason::kInterrupted, &step.text);
      return step;  // intermediate chunk: no logits
    }
  } else {
    feed_.clear();
  }
  if (!row) throw Error("SequenceGenerator: missing logits row");
  if (release_ > 0 && !release_forced(step)) return step;
  if (interrupted_.load()) {
    end(StopReason::kInterrupted, &step.text);
    return step;
  }
  // Position of the token about to be sampled is seq.n_past; it must fit in the context.
  if (seq_.n_past >= n_ctx_) {
    end(StopReason::kContextFull, &step.text);
    return step;
  }
  const float* sample_from = constraining_ ? constrained_row(row) : row;
  const int32_t t =
      sampler_.sample(std::span<const float>(sample_from, model_.config().vocab_size));
  sampler_.accept(t);
  if (constraining_) {
    constrained_ += p_.after_forced->token_bytes(t);
    if (p_.after_forced->complete(constrained_)) constraining_ = false;
  }
  generated_.push_back(t);
  ++timings_.gen_tokens;
  step.token = t;
  step.logits = row;
  const bool is_eos =
      !p_.ignore_eos && std::find(p_.eos_ids.begin(), p_.eos_ids.end(), t) != p_.eos_ids.end();
  if (is_eos) {
    end(StopReason::kEos, &step.text);
    return step;
  }
  if (emit_ends_at_stop(t, &step.text) || end_at_max_tokens(&step.text)) return step;
  if (p_.halt && !step.text.empty() && p_.halt(step.text)) {
    end(StopReason::kHalted, &step.text);
    return step;
  }
  feed_.assign(1, t);
  if (!forced_done_ && p_.force_after >= 0 && t == p_.force_after && !p_.forced.empty()) {
    // The forced tokens go into the next forward call together with `t` (one step for all of
    // them); the row it returns predicts the token after them.
    forced_done_ = true;
    release_ = forced_room(seq_.n_past + 1);
    feed_.insert(feed_.end(), p_.forced.begin(), p_.forced.begin() + release_);
    for (size_t i = 0; i < release_; ++i) sampler_.accept(p_.forced[i]);
  }
  return step;
}

// ---- Loops -----------------------------------------------------------------------------------

GenerationResult generate(const Model& model, ThreadPool& pool, const tok::Tokenizer* tok,
                          SequenceState& seq, std::span<const int32_t> prompt, Sampler& sampler,
                          const GenerationParams& params, const GenerationCallbacks& cb) {
  SequenceGenerator g(model, tok, seq, sampler, params);
  g.set_prompt(prompt);
  ForwardResult fr;
  const int V = model.config().vocab_size;
  while (!g.done()) {
    if (cb.interrupt && cb.interrupt->load()) {
      std::string tail = g.finish(StopReason::kInterrupted);
      if (!tail.empty() && cb.on_token) cb.on_token(-1, tail, nullptr);
      break;
    }
    const bool prefilling = g.in_prefill();
    BatchItem item = g.next_item();
    model.forward(std::span<const BatchItem>(&item, 1), pool, fr);
    const float* row =
        item.no_logits ? nullptr : fr.logits.data() + fr.first_row.at(0) * static_cast<size_t>(V);
    if (cb.interrupt && cb.interrupt->load()) g.interrupt();
    SequenceGenerator::Step s = g.on_logits(row);
    if (prefilling && cb.on_prefill_progress)
      cb.on_prefill_progress(g.prompt_done(), g.prompt_total());
    if (s.token >= 0 && cb.on_token)
      cb.on_token(s.token, s.text, s.logits);
    else if (!s.text.empty() && cb.on_token)
      cb.on_token(-1, s.text, nullptr);
  }
  GenerationResult r;
  r.tokens = g.generated();
  r.text = g.text();
  r.stop = g.stop_reason();
  r.stop_index = g.stop_index();
  r.timings = g.timings();
  return r;
}

bool prefill(const Model& model, ThreadPool& pool, SequenceState& seq,
             std::span<const int32_t> tokens, int chunk, std::vector<float>* last_logits,
             const std::function<void(int64_t, int64_t)>& progress,
             const std::atomic<bool>* interrupt) {
  if (chunk <= 0) chunk = 256;
  ForwardResult fr;
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  size_t pos = 0;
  while (pos < tokens.size()) {
    if (interrupt && interrupt->load()) return false;
    const size_t n = std::min(tokens.size() - pos, static_cast<size_t>(chunk));
    BatchItem it;
    it.seq = &seq;
    it.tokens = tokens.subspan(pos, n);
    const bool last = pos + n == tokens.size();
    it.no_logits = !(last && last_logits);
    model.forward(std::span<const BatchItem>(&it, 1), pool, fr);
    pos += n;
    if (last && last_logits) {
      const float* row = fr.logits.data() + fr.first_row.at(0) * V;
      last_logits->assign(row, row + V);
    }
    if (progress) progress(static_cast<int64_t>(pos), static_cast<int64_t>(tokens.size()));
  }
  return true;
}

}  // namespace dsv4
