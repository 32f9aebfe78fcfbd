#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "io/mapped_file.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/workspace.h"
#include "util/thread_pool.h"

namespace dsv4 {

namespace {

// Activations smaller than this run on the calling thread (a parallel section costs microseconds).
constexpr size_t kParallelActivationMin = 16384;
// Experts with at most this many rows are GEMVs (memory-bound): see use_expert_parallel.
constexpr size_t kExpertParallelMaxRows = 8;

// SwiGLU with the V4 clamp: gate ≤ limit, up ∈ [−limit, limit]; `scale` is the routing weight,
// applied to the activation before w2 as in the reference.
// pool == nullptr: everything on the calling thread. `gu` holds 2·n·I floats (gate and up).
void swiglu_expert(const ExpertWeights& e, const float* x, size_t n, const float* scale,
                   float limit, float* y, ThreadPool* pool, float* gu) {
  const size_t I = e.w1.rows;
  float* g = gu;
  float* u = gu + n * I;
  matmul(e.w1, x, n, g, pool);
  matmul(e.w3, x, n, u, pool);
  auto act = [&](size_t b, size_t end, int) {
    for (size_t k = b; k < end;) {  // token by token: each has its routing weight
      const size_t t = k / I, row_end = std::min(end, (t + 1) * I);
      swiglu_clamp(g + k, u + k, row_end - k, limit, scale ? scale[t] : 1.0f);
      k = row_end;
    }
  };
  // A prefill expert's activation (~96 tokens × 2048) is ~200 K exp() calls: split it too.
  if (pool && n * I >= kParallelActivationMin)
    pool->parallel_for(n * I, act, 1024);
  else
    act(0, n * I, 0);
  matmul(e.w2, g, n, y, pool);
}

// Experts run one per thread when each is a GEMV (few rows: memory-bound, nothing gained by
// splitting its rows) and they share out evenly: as many experts as threads or a multiple, or
// enough that the last round leaves threads idle for at most a quarter of the time.
bool use_expert_parallel(size_t active, size_t max_rows, size_t threads) {
  if (threads <= 1 || active < threads || max_rows > kExpertParallelMaxRows) return false;
  return active % threads == 0 || active >= 4 * threads;
}

float sqrt_softplus(float l) {
  const float sp = l > 20.0f ? l : std::log1p(std::exp(l));
  return std::sqrt(sp);
}

}  // namespace

void moe_forward(const ForwardContext& ctx, const BlockWeights& bw, const float* x, float* out,
                 int32_t* ids_out, float* weights_out) {
  const ModelConfig& cfg = ctx.cfg;
  const MoeWeights& mw = bw.ffn;
  const size_t N = ctx.n_rows, D = cfg.dim;
  const int E = cfg.n_routed_experts, K = cfg.n_activated_experts;

  // Per-thread buffers (model/workspace.h): a decode step allocates nothing.
  float* logits = workspace<struct MoeLogitsTag>(N * E);
  matmul(mw.gate, x, N, logits, &ctx.pool);
  int* sel = workspace<struct MoeSelTag, int>(N * K);
  float* wsel = workspace<struct MoeWeightsTag>(N * K);
  float* s = workspace<struct MoeScoreTag>(E);
  float* biased = workspace<struct MoeBiasedTag>(E);
  int* order = workspace<struct MoeOrderTag, int>(E);
  for (size_t t = 0; t < N; ++t) {
    for (int e = 0; e < E; ++e) s[e] = sqrt_softplus(logits[t * E + e]);
    int* st = &sel[t * K];
    if (bw.hash) {
      const int64_t* row = mw.tid2eid + static_cast<size_t>(ctx.ids[t]) * K;
      for (int k = 0; k < K; ++k) st[k] = static_cast<int>(row[k]);
    } else {
      for (int e = 0; e < E; ++e) biased[e] = s[e] + mw.bias[e];  // bias steers selection only
      std::iota(order, order + E, 0);
      std::partial_sort(order, order + K, order + E, [&](int a, int b) {
        return biased[a] > biased[b] || (biased[a] == biased[b] && a < b);
      });
      std::copy(order, order + K, st);
    }
    float sum = 0.0f;
    for (int k = 0; k < K; ++k) sum += s[st[k]];
    for (int k = 0; k < K; ++k) wsel[t * K + k] = s[st[k]] / sum * cfg.route_scale;
  }
  if (ids_out) std::copy(sel, sel + N * K, ids_out);
  if (weights_out) std::copy(wsel, wsel + N * K, weights_out);

  // Group rows by expert; run each active expert once over its rows; accumulate in expert order.
  // The per-expert lists keep their capacity from call to call.
  auto& rows = workspace_vector<struct MoeRowsTag, std::vector<std::pair<size_t, float>>>();
  if (rows.size() < static_cast<size_t>(E)) rows.resize(E);
  for (int e = 0; e < E; ++e) rows[e].clear();
  for (size_t t = 0; t < N; ++t) {
    for (int k = 0; k < K; ++k) rows[sel[t * K + k]].push_back({t, wsel[t * K + k]});
  }
  if (ctx.prefetch_experts) {
    for (int e = 0; e < E; ++e) {
      if (rows[e].empty()) continue;
      for (const MatrixView* m : {&mw.experts[e].w1, &mw.experts[e].w2, &mw.experts[e].w3}) {
        advise_willneed(m->data, m->data_bytes());
        advise_willneed(m->scales, m->scale_span_bytes());
      }
    }
  }
  // The shared expert first (its own buffer, added last as before): its compute overlaps the
  // routed experts' page reads when they are prefetched.
  float* ys = nullptr;
  if (mw.has_shared) {
    ys = workspace<struct SharedOutTag>(N * D);
    float* gu = workspace<struct SharedGateUpTag>(2 * N * mw.shared.w1.rows);
    swiglu_expert(mw.shared, x, N, nullptr, cfg.swiglu_limit, ys, &ctx.pool, gu);
  }
  std::fill(out, out + N * D, 0.0f);
  // Expert e's rows gathered (routing weights beside them), run, and their outputs written to
  // ye; on the given pool, or on the calling thread alone. `buf` holds expert_floats(rows) floats.
  const size_t I = static_cast<size_t>(cfg.moe_inter_dim);  // every routed expert's w1 rows
  auto expert_floats = [&](size_t n) { return n * (D + 1 + 2 * I); };
  auto run_expert = [&](int e, float* ye, ThreadPool* pool, float* buf) {
    const auto& r = rows[e];
    float* xe = buf;
    float* we = xe + r.size() * D;
    for (size_t i = 0; i < r.size(); ++i) {
      std::copy(x + r[i].first * D, x + (r[i].first + 1) * D, &xe[i * D]);
      we[i] = r[i].second;
    }
    swiglu_expert(mw.experts[e], xe, r.size(), we, cfg.swiglu_limit, ye, pool, we + r.size());
  };
  auto add_expert = [&](int e, const float* ye) {
    const auto& r = rows[e];
    for (size_t i = 0; i < r.size(); ++i) {
      float* dst = out + r[i].first * D;
      for (size_t c = 0; c < D; ++c) dst[c] += ye[i * D + c];
    }
  };
  auto& active = workspace_vector<struct MoeActiveTag, int>();
  active.clear();
  size_t max_rows = 0;
  for (int e = 0; e < E; ++e) {
    if (rows[e].empty()) continue;
    active.push_back(e);
    max_rows = std::max(max_rows, rows[e].size());
  }
  const size_t nt = static_cast<size_t>(ctx.pool.size());
  if (use_expert_parallel(active.size(), max_rows, nt)) {
    // Each expert whole on one thread: its three GEMVs need no hand-off between threads and its
    // SwiGLU no serial step while the others wait. Every row's value is independent of the
    // thread count (kernels/matmul.h), and outputs are added in expert order as below, so the
    // result is the same bits.
    float* ys_all = workspace<struct ExpertOutsTag>(active.size() * max_rows * D);
    const PerThread<float> bufs =
        per_thread_workspace<struct ExpertBufsTag>(static_cast<int>(nt), expert_floats(max_rows));
    ctx.pool.parallel_for_dynamic(active.size(), [&](size_t b, size_t end, int th) {
      for (size_t k = b; k < end; ++k)
        run_expert(active[k], ys_all + k * max_rows * D, nullptr, bufs[th]);
    });
    for (size_t k = 0; k < active.size(); ++k) add_expert(active[k], ys_all + k * max_rows * D);
  } else {
    float* ye = workspace<struct ExpertOutTag>(N * D);
    float* buf = workspace<struct ExpertBufTag>(expert_floats(max_rows));
    for (int e : active) {
      run_expert(e, ye, &ctx.pool, buf);
      add_expert(e, ye);
    }
  }
  if (ys)
    for (size_t i = 0; i < N * D; ++i) out[i] += ys[i];
}

}  // namespace dsv4
