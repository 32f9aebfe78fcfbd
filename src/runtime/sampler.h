// Token sampling over fp32 logits of the full vocabulary (llama.cpp semantics, DeepSeek defaults).
//
// Order of operations (as llama.cpp's default chain): penalties (repetition, presence, frequency)
// over the last `penalty_last_n` tokens → top-k → (temperature 0: argmax) → softmax at
// temperature → top-p → min-p → draw with the seeded RNG. Ids ≥ vocab_size (padding rows of a
// head wider than the tokenizer) and non-finite logits are never sampled.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace dsv4 {

struct SamplingParams {
  float temperature = 1.0f;   // 0 = greedy argmax (DeepSeek recommends 1.0)
  int top_k = 0;              // 0 = off
  float top_p = 1.0f;         // 1 = off (DeepSeek recommends 1.0)
  float min_p = 0.0f;         // 0 = off
  float repeat_penalty = 1.0f;     // 1 = off; logit/p if > 0 else logit·p, for seen tokens
  float presence_penalty = 0.0f;   // subtracted once per seen token
  float frequency_penalty = 0.0f;  // subtracted per occurrence
  int penalty_last_n = 64;         // window of recent tokens the penalties look at (-1 = all)
  uint64_t seed = 0xFFFFFFFFFFFFFFFFull;  // default: random (std::random_device)
  bool greedy() const { return temperature <= 0.0f; }
  // Checks ranges; throws dsv4::Error naming the flag.
  void validate() const;
};

class Sampler {
 public:
  Sampler(const SamplingParams& p, int vocab_size);

  // Picks the next token from `logits` (at least vocab_size entries; extra entries are ignored).
  // Does not record the token: call accept() with whatever token is actually appended.
  int32_t sample(std::span<const float> logits);
  // Records a token of the context (prompt or generated) for the penalties.
  void accept(int32_t token);
  // Clears the penalty history only (the RNG stream continues).
  void clear_history();
  // Clears the penalty history and reseeds the RNG with the original seed.
  void reset();

  const SamplingParams& params() const { return p_; }
  uint64_t seed() const { return seed_; }  // the seed actually used (random one resolved)

  // Index of the largest finite value among the first n (lowest index on ties); -1 if none.
  static int32_t argmax(const float* logits, int n);

 private:
  SamplingParams p_;
  int vocab_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::deque<int32_t> recent_;
  std::vector<float> work_;
  std::vector<int32_t> ids_;
  std::vector<int32_t> counts_;  // occurrences per id in recent_
};

}  // namespace dsv4
