#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "util/error.h"

namespace dsv4 {

void SamplingParams::validate() const {
  auto bad = [](const std::string& what) { throw Error(what); };
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) bad("--temp must be >= 0");
  if (top_k < 0) bad("--top-k must be >= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f)) bad("--top-p must be in (0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) bad("--min-p must be in [0, 1]");
  if (!(repeat_penalty > 0.0f) || !std::isfinite(repeat_penalty)) bad("--repeat-penalty must be > 0");
  if (!std::isfinite(presence_penalty)) bad("--presence-penalty must be finite");
  if (!std::isfinite(frequency_penalty)) bad("--frequency-penalty must be finite");
  if (penalty_last_n < -1) bad("--repeat-last-n must be >= -1");
}

Sampler::Sampler(const SamplingParams& p, int vocab_size) : p_(p), vocab_(vocab_size) {
  p_.validate();
  if (vocab_size <= 0) throw Error("sampler: vocabulary size must be positive");
  seed_ = p.seed;
  if (seed_ == 0xFFFFFFFFFFFFFFFFull) {
    std::random_device rd;
    seed_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    if (seed_ == 0xFFFFFFFFFFFFFFFFull) seed_ = 0;
  }
  rng_.seed(seed_);
  counts_.assign(static_cast<size_t>(vocab_), 0);
}

void Sampler::reset() {
  rng_.seed(seed_);
  recent_.clear();
  std::fill(counts_.begin(), counts_.end(), 0);
}

void Sampler::clear_history() {
  recent_.clear();
  std::fill(counts_.begin(), counts_.end(), 0);
}

void Sampler::accept(int32_t token) {
  if (token < 0 || token >= vocab_) return;
  if (p_.penalty_last_n == 0) return;
  recent_.push_back(token);
  ++counts_[token];
  if (p_.penalty_last_n > 0 && static_cast<int>(recent_.size()) > p_.penalty_last_n) {
    --counts_[recent_.front()];
    recent_.pop_front();
  }
}

int32_t Sampler::argmax(const float* logits, int n) {
  int32_t best = -1;
  float bv = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i) {
    const float v = logits[i];
    if (std::isfinite(v) && (best < 0 || v > bv)) {
      bv = v;
      best = i;
    }
  }
  return best;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.size() < static_cast<size_t>(vocab_)) {
    throw Error("sampler: got " + std::to_string(logits.size()) + " logits, vocabulary has " +
                std::to_string(vocab_));
  }
  const int n = vocab_;
  work_.assign(logits.begin(), logits.begin() + n);
  float* l = work_.data();
  for (int i = 0; i < n; ++i)
    if (!std::isfinite(l[i])) l[i] = -std::numeric_limits<float>::infinity();

  // Penalties over the distinct recent tokens.
  const bool penalise = p_.repeat_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f;
  if (penalise && !recent_.empty()) {
    for (int32_t t : recent_) {
      const int c = counts_[t];
      if (c <= 0 || l[t] == -std::numeric_limits<float>::infinity()) continue;
      if (l[t] != l[t]) continue;
      // Apply once per distinct token: mark by temporarily negating the count.
      counts_[t] = -c;
      float v = l[t];
      if (p_.repeat_penalty != 1.0f) v = v > 0 ? v / p_.repeat_penalty : v * p_.repeat_penalty;
      v -= p_.presence_penalty + p_.frequency_penalty * static_cast<float>(c);
      l[t] = v;
    }
    for (int32_t t : recent_)
      if (counts_[t] < 0) counts_[t] = -counts_[t];
  }

  if (p_.greedy()) {
    int32_t a = argmax(l, n);
    if (a < 0) throw Error("sampler: every logit is non-finite");
    return a;
  }

  // Candidates (ids sorted by logit, descending), cut to top-k.
  ids_.resize(static_cast<size_t>(n));
  std::iota(ids_.begin(), ids_.end(), 0);
  int m = n;
  auto by_logit = [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
  if (p_.top_k > 0 && p_.top_k < n) {
    m = p_.top_k;
    std::partial_sort(ids_.begin(), ids_.begin() + m, ids_.end(), by_logit);
  } else if (p_.top_p < 1.0f || p_.min_p > 0.0f) {
    std::sort(ids_.begin(), ids_.end(), by_logit);
  }
  ids_.resize(static_cast<size_t>(m));
  // Drop -inf candidates (keeps sorted order when sorted; otherwise just filters).
  ids_.erase(std::remove_if(ids_.begin(), ids_.end(),
                            [&](int32_t i) { return l[i] == -std::numeric_limits<float>::infinity(); }),
             ids_.end());
  if (ids_.empty()) throw Error("sampler: every logit is non-finite");

  // Softmax at temperature (fp32, max-subtracted; sums in double).
  float mx = -std::numeric_limits<float>::infinity();
  for (int32_t i : ids_) mx = std::max(mx, l[i]);
  const float inv_t = 1.0f / p_.temperature;
  std::vector<double> prob(ids_.size());
  double sum = 0.0;
  for (size_t k = 0; k < ids_.size(); ++k) {
    prob[k] = std::exp(static_cast<double>((l[ids_[k]] - mx) * inv_t));
    sum += prob[k];
  }
  for (double& p : prob) p /= sum;

  size_t keep = ids_.size();
  const bool sorted = (p_.top_k > 0 && p_.top_k < n) || p_.top_p < 1.0f || p_.min_p > 0.0f;
  if (sorted && p_.top_p < 1.0f) {
    double cum = 0.0;
    for (size_t k = 0; k < keep; ++k) {
      cum += prob[k];
      if (cum >= p_.top_p) {
        keep = k + 1;
        break;
      }
    }
  }
  if (sorted && p_.min_p > 0.0f) {
    const double floor_p = prob[0] * p_.min_p;
    size_t k = 1;
    while (k < keep && prob[k] >= floor_p) ++k;
    keep = k;
  }
  double total = 0.0;
  for (size_t k = 0; k < keep; ++k) total += prob[k];
  std::uniform_real_distribution<double> U(0.0, total);
  const double r = U(rng_);
  double acc = 0.0;
  for (size_t k = 0; k < keep; ++k) {
    acc += prob[k];
    if (r < acc) return ids_[k];
  }
  return ids_[keep - 1];
}

}  // namespace dsv4
