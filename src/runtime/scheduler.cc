#include "runtime/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/thread_pool.h"

namespace dsv4 {

using Clock = std::chrono::steady_clock;

// ---- RequestHandle ----------------------------------------------------------------------------

bool RequestHandle::next(GenEvent& ev, std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!cv_.wait_for(lk, wait, [&] { return !events_.empty(); })) return false;
  ev = std::move(events_.front());
  events_.pop_front();
  return true;
}

void RequestHandle::push(GenEvent ev) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

// ---- Scheduler --------------------------------------------------------------------------------

struct Scheduler::Slot {
  SequenceState seq;
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<SequenceGenerator> gen;
  std::shared_ptr<RequestHandle> handle;
  GenRequest req;
  size_t forced_pos = 0;
  Clock::time_point deadline{};
  bool busy = false;
};

Scheduler::Scheduler(const Model& model, const tok::Tokenizer* tok, ThreadPool& pool,
                     const SchedulerOptions& opts)
    : model_(model), tok_(tok), pool_(pool), opts_(opts) {
  if (opts_.n_parallel < 1) throw Error("-np must be at least 1");
  if (opts_.max_queue < 0) opts_.max_queue = 0;
  if (opts_.prefill_chunk <= 0) opts_.prefill_chunk = 256;
  if (opts_.prefill_budget < opts_.prefill_chunk) opts_.prefill_budget = opts_.prefill_chunk;
  const int64_t model_max = model.config().max_position_embeddings;
  n_ctx_ = opts_.n_ctx > 0 ? std::min<int64_t>(opts_.n_ctx, model_max) : model_max;
  vocab_ = model.config().vocab_size;
  for (int i = 0; i < opts_.n_parallel; ++i) {
    auto s = std::make_unique<Slot>();
    s->seq = model.new_sequence();
    slots_.push_back(std::move(s));
  }
  forced_row_.assign(static_cast<size_t>(vocab_), 0.0f);
  stats_.n_parallel = opts_.n_parallel;
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<RequestHandle> Scheduler::submit(GenRequest req) {
  if (req.prompt.empty()) throw Error("empty prompt");
  for (size_t i = 0; i < req.prompt.size(); ++i) {
    if (req.prompt[i] < 0 || req.prompt[i] >= vocab_) {
      throw Error("prompt token " + std::to_string(i) + " is id " + std::to_string(req.prompt[i]) +
                  ", outside the model's vocabulary [0, " + std::to_string(vocab_) + ")");
    }
  }
  if (static_cast<int64_t>(req.prompt.size()) >= n_ctx_) {
    throw Error("the prompt is " + std::to_string(req.prompt.size()) +
                " tokens, which does not fit the context of " + std::to_string(n_ctx_) +
                " tokens per sequence (at least one token must remain for the reply)");
  }
  req.sampling.validate();
  auto h = std::make_shared<RequestHandle>();
  h->id_ = next_id_.fetch_add(1);
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) return nullptr;
    int free_slots = 0;
    for (auto& s : slots_) free_slots += !s->busy;
    // Requests that will find a slot at the next step do not count against the queue bound.
    if (static_cast<int>(queue_.size()) >= free_slots + opts_.max_queue) return nullptr;
    Pending p;
    p.deadline =
        req.timeout_s > 0
            ? Clock::now() + std::chrono::microseconds(static_cast<int64_t>(req.timeout_s * 1e6))
            : Clock::time_point{};
    p.req = std::move(req);
    p.handle = h;
    queue_.push_back(std::move(p));
    stats_.queued = static_cast<int>(queue_.size());
  }
  cv_.notify_all();
  return h;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void Scheduler::finish_slot(Slot& s, StopReason r, const std::string& error, bool timed_out,
                            std::string tail) {
  if (!tail.empty()) {
    GenEvent t;
    t.kind = GenEvent::Kind::kToken;
    t.text = std::move(tail);
    s.handle->push(std::move(t));
  }
  GenEvent ev;
  ev.kind = GenEvent::Kind::kDone;
  ev.stop = r;
  ev.error = error;
  ev.timed_out = timed_out;
  if (s.gen) {
    const GenerationTimings& t = s.gen->timings();
    ev.prompt_tokens = t.prompt_tokens;
    ev.gen_tokens = t.gen_tokens;
    ev.prompt_s = t.prompt_s;
    ev.gen_s = t.gen_s;
  }
  const bool cancelled = s.handle->cancelled();
  std::shared_ptr<RequestHandle> h = std::move(s.handle);
  s.gen.reset();
  s.sampler.reset();
  s.req = GenRequest{};
  s.seq.reset();
  s.busy = false;
  size_t kv = 0;  // (this runs on the worker thread, the only one touching the slots)
  for (auto& sp : slots_)
    if (sp->busy) kv += sp->seq.bytes();
  {
    // Stats first, so a client that sees its final event also sees its slot freed in /metrics.
    std::lock_guard<std::mutex> lk(mu_);
    stats_.kv_bytes = kv;
    stats_.active = std::max(0, stats_.active - 1);
    ++stats_.requests_done;
    if (cancelled) ++stats_.requests_cancelled;
    if (timed_out) ++stats_.requests_timed_out;
  }
  h->push(std::move(ev));
}

void Scheduler::loop() {
  std::vector<Slot*> active;
  std::vector<Pending> expired;
  for (;;) {
    active.clear();
    expired.clear();
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lk(mu_);
      const auto now = Clock::now();
      // Drop queued requests that were cancelled or ran out of time while waiting.
      for (auto it = queue_.begin(); it != queue_.end();) {
        const bool late = it->deadline != Clock::time_point{} && now >= it->deadline;
        if (it->handle->cancelled() || late) {
          expired.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      // Admit waiting requests into free slots.
      for (auto& sp : slots_) {
        if (queue_.empty() || stop_) break;
        Slot& s = *sp;
        if (s.busy) continue;
        Pending p = std::move(queue_.front());
        queue_.pop_front();
        s.busy = true;
        s.handle = p.handle;
        s.req = std::move(p.req);
        s.deadline = p.deadline;
        s.forced_pos = 0;
        s.seq.reset();
        GenerationParams gp = s.req.gen;
        gp.n_ctx = n_ctx_;
        gp.prefill_chunk = opts_.prefill_chunk;
        try {
          s.sampler = std::make_unique<Sampler>(s.req.sampling, vocab_);
          s.gen = std::make_unique<SequenceGenerator>(model_, tok_, s.seq, *s.sampler, gp);
          s.gen->set_prompt(s.req.prompt);
          ++stats_.active;
        } catch (const std::exception& e) {
          GenEvent ev;
          ev.kind = GenEvent::Kind::kDone;
          ev.error = e.what();
          s.handle->push(std::move(ev));
          s.gen.reset();
          s.sampler.reset();
          s.handle.reset();
          s.busy = false;
          ++stats_.requests_done;
        }
      }
      stats_.queued = static_cast<int>(queue_.size());
      for (auto& sp : slots_)
        if (sp->busy) active.push_back(sp.get());
      stopping = stop_;
      if (active.empty() && expired.empty()) {
        if (stopping) break;
        cv_.wait_for(lk, std::chrono::milliseconds(50));
        continue;
      }
      stats_.requests_done += expired.size();
      for (const Pending& p : expired) stats_.requests_cancelled += p.handle->cancelled();
    }
    for (Pending& p : expired) {
      GenEvent ev;
      ev.kind = GenEvent::Kind::kDone;
      ev.stop = StopReason::kInterrupted;
      ev.timed_out = !p.handle->cancelled();
      p.handle->push(std::move(ev));
    }
    if (stopping) {
      for (Slot* s : active)
        finish_slot(*s, StopReason::kInterrupted, "server shutting down", false,
                    s->gen->finish(StopReason::kInterrupted));
      std::lock_guard<std::mutex> lk(mu_);
      for (Pending& p : queue_) {
        GenEvent ev;
        ev.kind = GenEvent::Kind::kDone;
        ev.stop = StopReason::kInterrupted;
        ev.error = "server shutting down";
        p.handle->push(std::move(ev));
      }
      queue_.clear();
      break;
    }
    if (!active.empty()) step(active);
  }
}

void Scheduler::step(std::vector<Slot*>& active) {
  const auto now = Clock::now();
  std::vector<Slot*> batch_slots;
  std::vector<BatchItem> items;
  int budget = opts_.prefill_budget;
  int64_t prefill_tokens = 0, decode_tokens = 0;
  for (Slot* s : active) {
    const bool late = s->deadline != Clock::time_point{} && now >= s->deadline;
    if (s->handle->cancelled() || late) {
      finish_slot(*s, StopReason::kInterrupted, "", late && !s->handle->cancelled(),
                  s->gen->finish(StopReason::kInterrupted));
      continue;
    }
    if (s->gen->in_prefill()) {
      if (budget <= 0) continue;  // waits for a later step; decoding sequences go first
      BatchItem it = s->gen->next_item();
      budget -= static_cast<int>(it.tokens.size());
      prefill_tokens += static_cast<int64_t>(it.tokens.size());
      items.push_back(it);
    } else {
      BatchItem it = s->gen->next_item();
      decode_tokens += static_cast<int64_t>(it.tokens.size());
      items.push_back(it);
    }
    batch_slots.push_back(s);
  }
  if (items.empty()) return;

  const auto t0 = Clock::now();
  try {
    model_.forward(std::span<const BatchItem>(items.data(), items.size()), pool_, fr_);
  } catch (const std::exception& e) {
    for (Slot* s : batch_slots)
      finish_slot(*s, StopReason::kInterrupted, std::string("forward pass failed: ") + e.what(),
                  false, s->gen->finish(StopReason::kInterrupted));
    return;
  }
  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();

  const size_t V = static_cast<size_t>(vocab_);
  int64_t sampled = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    Slot& s = *batch_slots[i];
    const float* row = items[i].no_logits ? nullptr : fr_.logits.data() + fr_.first_row[i] * V;
    const float* use = row;
    int32_t forced_tok = -1;
    if (row && s.req.force) {
      forced_tok = s.forced_pos < s.req.forced.size() ? s.req.forced[s.forced_pos++]
                                                      : model_.config().eos_token_id;
      if (forced_tok < 0 || forced_tok >= vocab_) forced_tok = model_.config().eos_token_id;
      // The scripted token leads every other by at least 1e4, which no temperature (≤ 2) or
      // penalty the server accepts can overturn, but the others keep the model's order: where a
      // constraint (GenerationParams::after_forced) forbids the scripted token, the model's own
      // choice among the allowed ones is taken, as it would be without the hook.
      float mx = -std::numeric_limits<float>::infinity();
      for (size_t v = 0; v < V; ++v)
        if (std::isfinite(row[v])) mx = std::max(mx, row[v]);
      if (!std::isfinite(mx)) mx = 0;
      for (size_t v = 0; v < V; ++v) forced_row_[v] = row[v] - mx - 1e4f;
      forced_row_[static_cast<size_t>(forced_tok)] = 0.0f;
      use = forced_row_.data();
    }
    SequenceGenerator::Step st;
    std::string err;
    try {
      st = s.gen->on_logits(use);
    } catch (const std::exception& e) {
      err = e.what();
    }
    if (!err.empty()) {
      finish_slot(s, StopReason::kInterrupted, err, false, s.gen->finish(StopReason::kInterrupted));
      continue;
    }
    sampled += static_cast<int64_t>(st.forced.size());  // output tokens too (tool_choice)
    if (st.token >= 0 || !st.text.empty()) {
      GenEvent ev;
      ev.kind = GenEvent::Kind::kToken;
      ev.token = st.token;
      ev.text = std::move(st.text);
      if (st.token >= 0) ++sampled;
      if (st.token >= 0 && row && s.req.logprobs >= 0) {
        // log-softmax of the model's row (before any forcing / sampling transforms)
        float mx = -std::numeric_limits<float>::infinity();
        for (size_t v = 0; v < V; ++v)
          if (std::isfinite(row[v])) mx = std::max(mx, row[v]);
        double sum = 0;
        for (size_t v = 0; v < V; ++v)
          if (std::isfinite(row[v])) sum += std::exp(static_cast<double>(row[v] - mx));
        const float lse = mx + static_cast<float>(std::log(sum));
        ev.logprob = row[st.token] - lse;
        const int k = std::min<int>(s.req.logprobs, static_cast<int>(V));
        if (k > 0) {
          std::vector<int32_t> ids(V);
          for (size_t v = 0; v < V; ++v) ids[v] = static_cast<int32_t>(v);
          auto val = [&](int32_t id) {
            float x = row[id];
            return std::isfinite(x) ? x : -std::numeric_limits<float>::infinity();
          };
          std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
            float va = val(a), vb = val(b);
            return va != vb ? va > vb : a < b;
          });
          for (int j = 0; j < k; ++j) ev.top.push_back({ids[j], val(ids[j]) - lse});
        }
      }
      s.handle->push(std::move(ev));
    }
    if (s.gen->done()) finish_slot(s, s.gen->stop_reason(), "", false, "");
  }

  size_t kv = 0;
  for (auto& sp : slots_)
    if (sp->busy) kv += sp->seq.bytes();
  std::lock_guard<std::mutex> lk(mu_);
  const double total = static_cast<double>(prefill_tokens + decode_tokens);
  if (total > 0) {
    stats_.prompt_s += dt * static_cast<double>(prefill_tokens) / total;
    stats_.gen_s += dt * static_cast<double>(decode_tokens) / total;
  }
  stats_.prompt_tokens += static_cast<uint64_t>(prefill_tokens);
  stats_.gen_tokens += static_cast<uint64_t>(sampled);
  stats_.kv_bytes = kv;
  ++stats_.steps;
  stats_.batch_seqs += items.size();
}

}  // namespace dsv4
