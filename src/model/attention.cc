#include "model/attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/compressor.h"
#include "model/workspace.h"
#include "numerics/formats.h"
#include "util/thread_pool.h"

namespace dsv4 {

namespace {

struct Dims {
  int H, hd, rd, nope, ql, win;
  int nI, ihd;
};

// Normalises and rotates a pooled compressor entry at position ratio·w, then stores it (KV codec
// rounds it to its stored value) at the end of `cache`.
void finish_compressed_entry(float* entry, const std::vector<float>& norm, int dim, int rd,
                             float eps, const RopeTable& rope, int64_t pos, bool hadamard,
                             const KvCodec& codec, std::vector<uint8_t>& cache) {
  rms_norm(entry, norm.data(), dim, eps, entry);
  float cs[256], sn[256];
  rope.angles(pos, cs, sn);
  rope_apply(entry + (dim - rd), cs, sn, rd / 2, false);
  if (hadamard) hadamard_transform(entry, dim);
  const size_t off = cache.size();
  cache.resize(off + codec.entry_bytes());
  codec.store(entry, cache.data() + off);
}

// Top-k of the index scores (highest first; ties go to the earlier entry).
void top_k(const std::vector<float>& scores, int64_t k, std::vector<int64_t>& sel) {
  // sel ends at k entries; growing it back by one entry per new compressed entry would reallocate
  // it each time (resize from a small size grows to the exact size): grow geometrically instead.
  if (sel.capacity() < scores.size()) sel.reserve(2 * scores.size());
  sel.resize(scores.size());
  std::iota(sel.begin(), sel.end(), 0);
  k = std::min<int64_t>(k, static_cast<int64_t>(scores.size()));
  std::partial_sort(sel.begin(), sel.begin() + k, sel.end(), [&](int64_t a, int64_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  sel.resize(k);
}

// Lightning Indexer scores of `nb` keys (decoded to fp32, [nb, ihd]) for one query:
// Σ_h wI[h]·relu(qI_h · K_w), qI transposed (its nI heads × ihd dims). The nb × nI dot
// products are computed together (sequential sums, as a scalar dot would, so the result does
// not depend on how keys are split into blocks); hw holds nb × nI floats.
void index_scores_block(const TransposedQueries& qI, const float* wI, const float* keys, size_t nb,
                        float* scores, float* hw) {
  const size_t nI = qI.nq;
  dot_rows_seq_t(qI, keys, qI.dim, nb, hw, nI);
  for (size_t w = 0; w < nb; ++w) {
    float s = 0.0f;
    for (size_t h = 0; h < nI; ++h) s += wI[h] * std::max(hw[w * nI + h], 0.0f);
    scores[w] = s;
  }
}

// Keys per scoring block: its decoded keys and dot products stay in L1/L2, so scoring needs
// O(block) memory however long the context (at 1M tokens a whole layer's keys would be 134 MB
// decoded, 67 MB of dot products).
constexpr size_t kIndexBlock = 64;

// Floats of index_scores' buffer per thread: a block's dot products and its decoded keys.
size_t index_scratch_floats(int nI, int ihd) { return kIndexBlock * static_cast<size_t>(nI + ihd); }

// Index scores of the first n stored keys. Without `keys` (fp32, [n, ihd]), each block of stored
// keys is decoded where it is scored: a single query then reads the native keys once, spread over
// the pool's threads, instead of decoding the whole context up front. `pool` may be null: then
// the calling thread, pool thread `th`, does it all. `scratch` holds index_scratch_floats per
// thread.
void index_scores(const TransposedQueries& qI, const float* wI, const float* keys,
                  const uint8_t* stored, const KvCodec& codec, size_t n, float* scores,
                  ThreadPool* pool, PerThread<float> scratch, int th) {
  const size_t ihd = qI.dim;
  auto blocks = [&](size_t b, size_t e, int thread) {
    float* hw = scratch[thread];
    float* kb = hw + kIndexBlock * qI.nq;
    for (size_t b0 = b; b0 < e; b0 += kIndexBlock) {
      const size_t nb = std::min(kIndexBlock, e - b0);
      const float* k = keys ? keys + b0 * ihd : kb;
      if (!keys)
        for (size_t w = 0; w < nb; ++w)
          codec.decode(stored + (b0 + w) * codec.entry_bytes(), kb + w * ihd);
      index_scores_block(qI, wI, k, nb, scores + b0, hw);
    }
  };
  if (pool && n > kIndexBlock)
    pool->parallel_for_dynamic(n, blocks, kIndexBlock);
  else
    blocks(0, n, th);
}

// Per-thread buffers of the attention phase.
struct Scratch {
  std::vector<float> entries, z, scores, st;
  std::vector<int64_t> sel;
  std::vector<float> qt, qit;  // the token's attention and indexer queries, transposed
};

// Grows `sc` to what a query at position max_pos or before can need (phase B's sizes grow with
// the position), so that no buffer grows inside the parallel section, whichever thread the
// scheduler gives the latest token.
void reserve_for_position(Scratch& sc, const Dims& d, int ratio, int64_t topk, int64_t max_pos) {
  const size_t seen = static_cast<size_t>(max_pos + 1);
  const size_t n_avail = ratio ? seen / static_cast<size_t>(ratio) : 0;
  const size_t n_sel = ratio == 4 ? std::min(n_avail, static_cast<size_t>(topk)) : n_avail;
  const size_t n_ent = std::min(seen, static_cast<size_t>(d.win)) + n_sel;
  const size_t H = static_cast<size_t>(d.H), hd = static_cast<size_t>(d.hd);
  sc.entries.reserve(n_ent * hd);
  sc.st.reserve(n_ent * H);
  sc.z.reserve(n_ent * H);
  if (ratio == 4) sc.scores.reserve(n_avail);
  sc.sel.reserve(n_avail);  // top_k ranks all n_avail before keeping k
  sc.qt.resize(transposed_queries_floats(H, hd));
  if (ratio == 4) sc.qit.resize(transposed_queries_floats(d.nI, d.ihd));
}

}  // namespace

void attention_forward(const ForwardContext& ctx, const BlockWeights& bw, int layer, const float* x,
                       float* out) {
  const ModelConfig& cfg = ctx.cfg;
  const AttentionWeights& aw = bw.attn;
  const size_t N = ctx.n_rows;
  const int ratio = bw.ratio;
  const Dims d{cfg.n_heads,     cfg.head_dim, cfg.rope_dim,      cfg.nope_dim(),
               cfg.q_lora_rank, cfg.window,   cfg.index_n_heads, cfg.index_head_dim};
  const RopeTable& rope = ratio ? ctx.rope_compressed : ctx.rope_plain;
  ThreadPool& pool = ctx.pool;
  const float eps = cfg.norm_eps;

  // ---- Projections for all rows at once (weights read once per call) ----
  struct QrTag;
  struct QTag;
  struct KvTag;
  struct OTag;
  struct UTag;
  float* qr = workspace<QrTag>(N * d.ql);
  float* q = workspace<QTag>(N * d.H * d.hd);
  float* kv = workspace<KvTag>(N * d.hd);
  matmul(aw.wq_a, x, N, qr, &pool);
  for (size_t t = 0; t < N; ++t)
    rms_norm(&qr[t * d.ql], aw.q_norm.data(), d.ql, eps, &qr[t * d.ql]);
  matmul(aw.wq_b, qr, N, q, &pool);
  for (size_t i = 0; i < N * d.H; ++i) rms_norm(&q[i * d.hd], nullptr, d.hd, eps, &q[i * d.hd]);
  matmul(aw.wkv, x, N, kv, &pool);
  for (size_t t = 0; t < N; ++t)
    rms_norm(&kv[t * d.hd], aw.kv_norm.data(), d.hd, eps, &kv[t * d.hd]);

  struct CkTag;
  struct CzTag;
  struct IckTag;
  struct IczTag;
  struct IqTag;
  struct IwTag;
  const size_t cw = ratio ? aw.compressor.wkv.rows : 0;
  const size_t icw = ratio == 4 ? aw.idx_compressor.wkv.rows : 0;
  float* ck = workspace<CkTag>(N * cw);
  float* cz = workspace<CzTag>(N * cw);
  float* ick = workspace<IckTag>(N * icw);
  float* icz = workspace<IczTag>(N * icw);
  float* iq = workspace<IqTag>(ratio == 4 ? N * d.nI * d.ihd : 0);
  float* iw = workspace<IwTag>(ratio == 4 ? N * d.nI : 0);
  if (ratio) {
    matmul(aw.compressor.wkv, x, N, ck, &pool);
    matmul(aw.compressor.wgate, x, N, cz, &pool);
  }
  if (ratio == 4) {
    matmul(aw.idx_compressor.wkv, x, N, ick, &pool);
    matmul(aw.idx_compressor.wgate, x, N, icz, &pool);
    matmul(aw.idx_wq_b, qr, N, iq, &pool);
    matmul(aw.idx_weights_proj, x, N, iw, &pool);
    const float wscale =
        1.0f / std::sqrt(static_cast<float>(d.ihd)) / std::sqrt(static_cast<float>(d.nI));
    for (size_t i = 0; i < N * d.nI; ++i) iw[i] *= wscale;
  }

  // ---- Phase A, token by token within each sequence: RoPE, window ring, compressors ----
  // State updates must run in order; the attention itself (phase B) then runs in parallel.
  // Window rows older than this call are decoded first, because a chunk longer than the
  // window overwrites their ring slots; rows of this call are read from `kv` (already rounded
  // to their stored value by the codec).
  // Phase B runs one token per thread when there are enough tokens, else one token at a time
  // with its heads (and index keys) split over the threads.
  const bool per_token = N >= static_cast<size_t>(pool.size());
  auto& prior = workspace_vector<struct PriorTag, std::vector<float>>();
  auto& ikeys = workspace_vector<struct IndexKeysTag, std::vector<float>>();
  if (prior.size() < ctx.spans.size()) {
    prior.resize(ctx.spans.size());
    ikeys.resize(ctx.spans.size());
  }
  float cs[256], sn[256];
  float* pooled = workspace<struct PooledTag>(std::max(d.hd, d.ihd));
  for (size_t si = 0; si < ctx.spans.size(); ++si) {
    const SeqSpan& sp = ctx.spans[si];
    LayerState& L = sp.seq->layers[layer];
    const KvCodec& kvc = sp.seq->kv_codec();
    const KvCodec& ixc = sp.seq->index_codec();
    const bool native_index = ixc.storage() == KvStorage::kNative;
    const int64_t prior_first = std::max<int64_t>(0, sp.pos0 - d.win + 1);
    prior[si].resize(static_cast<size_t>(sp.pos0 - prior_first) * d.hd);
    for (int64_t p = prior_first; p < sp.pos0; ++p) {
      kvc.decode(L.window.data() + static_cast<size_t>(p % d.win) * kvc.entry_bytes(),
                 &prior[si][(p - prior_first) * d.hd]);
    }
    for (size_t t = sp.begin; t < sp.end; ++t) {
      const int64_t pos = sp.pos0 + static_cast<int64_t>(t - sp.begin);
      rope.angles(pos, cs, sn);
      float* qt = &q[t * d.H * d.hd];
      for (int h = 0; h < d.H; ++h) rope_apply(qt + h * d.hd + d.nope, cs, sn, d.rd / 2, false);
      float* kvt = &kv[t * d.hd];
      rope_apply(kvt + d.nope, cs, sn, d.rd / 2, false);
      kvc.store(kvt, L.window.data() + static_cast<size_t>(pos % d.win) * kvc.entry_bytes());
      if (ratio) {
        if (compressor_push(L.compressor, &ck[t * cw], &cz[t * cw], aw.compressor.ape, pos,
                            pooled)) {
          const int64_t w = pos / ratio;
          finish_compressed_entry(pooled, aw.compressor.norm, d.hd, d.rd, eps, rope, w * ratio,
                                  false, kvc, L.compressed);
          L.n_compressed = w + 1;
        }
      }
      if (ratio == 4) {
        if (compressor_push(L.index_compressor, &ick[t * icw], &icz[t * icw], aw.idx_compressor.ape,
                            pos, pooled)) {
          finish_compressed_entry(pooled, aw.idx_compressor.norm, d.ihd, d.rd, eps, rope,
                                  (pos / 4) * 4, true, ixc, L.index_keys);
        }
        float* qI = &iq[t * d.nI * d.ihd];
        for (int h = 0; h < d.nI; ++h) {
          float* qh = qI + h * d.ihd;
          rope_apply(qh + (d.ihd - d.rd), cs, sn, d.rd / 2, false);
          hadamard_transform(qh, d.ihd);
          if (native_index) roundtrip_blocks(qh, d.ihd, 32, BlockFormat::kFp4E2M1);
        }
      }
    }
    if (ratio == 4 && per_token) {  // many queries: every key they can select, decoded once
      const size_t n = L.index_keys.size() / ixc.entry_bytes();
      ikeys[si].resize(n * d.ihd);
      for (size_t w = 0; w < n; ++w)
        ixc.decode(L.index_keys.data() + w * ixc.entry_bytes(), &ikeys[si][w * d.ihd]);
    }
  }

  // ---- Phase B: selection and attention per token (parallel over tokens, or over heads) ----
  float* o = workspace<OTag>(N * d.H * d.hd);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hd));
  auto& tokens = workspace_vector<struct TokensTag, std::pair<size_t, size_t>>();  // (span, row)
  tokens.clear();
  for (size_t si = 0; si < ctx.spans.size(); ++si) {
    for (size_t t = ctx.spans[si].begin; t < ctx.spans[si].end; ++t) tokens.push_back({si, t});
  }
  auto& scratch = workspace_vector<struct ScratchTag, Scratch>();
  if (scratch.size() < static_cast<size_t>(pool.size())) scratch.resize(pool.size());
  int64_t max_pos = 0;
  for (const SeqSpan& sp : ctx.spans)
    if (sp.end > sp.begin) max_pos = std::max(max_pos, sp.pos0 + int64_t(sp.end - sp.begin) - 1);
  for (Scratch& sc : scratch) reserve_for_position(sc, d, ratio, cfg.index_topk, max_pos);
  const PerThread<float> index_scratch = per_thread_workspace<struct IndexScratchTag>(
      pool.size(), ratio == 4 ? index_scratch_floats(d.nI, d.ihd) : 0);

  // Which compressed entries the query at `pos` sees (w < (pos+1)/ratio); CSA: the indexer's top-k.
  auto select = [&](size_t si, size_t t, int64_t pos, Scratch& sc, int th, bool parallel) {
    sc.sel.clear();
    if (ratio == 128) {
      for (int64_t w = 0; w < (pos + 1) / 128; ++w) sc.sel.push_back(w);
    } else if (ratio == 4) {
      const int64_t n_avail = (pos + 1) / 4;
      sc.scores.resize(n_avail);
      const TransposedQueries qI =
          transpose_queries(&iq[t * d.nI * d.ihd], d.ihd, d.nI, d.ihd, sc.qit.data());
      const float* wI = &iw[t * d.nI];
      const LayerState& L = ctx.spans[si].seq->layers[layer];
      index_scores(qI, wI, per_token ? ikeys[si].data() : nullptr, L.index_keys.data(),
                   ctx.spans[si].seq->index_codec(), static_cast<size_t>(n_avail), sc.scores.data(),
                   parallel ? &pool : nullptr, index_scratch, th);
      top_k(sc.scores, cfg.index_topk, sc.sel);
    }
  };
  // K=V rows: the window (oldest first), then the selected compressed entries.
  auto gather = [&](size_t si, size_t t, int64_t pos, Scratch& sc, ThreadPool* par) -> size_t {
    const SeqSpan& sp = ctx.spans[si];
    const LayerState& L = sp.seq->layers[layer];
    const KvCodec& kvc = sp.seq->kv_codec();
    const int64_t first = std::max<int64_t>(0, pos - d.win + 1);
    const int64_t prior_first = std::max<int64_t>(0, sp.pos0 - d.win + 1);
    const size_t n_win = static_cast<size_t>(pos - first + 1), n_ent = n_win + sc.sel.size();
    sc.entries.resize(n_ent * d.hd);
    for (int64_t p = first; p <= pos; ++p) {
      const float* src = p < sp.pos0 ? &prior[si][(p - prior_first) * d.hd]
                                     : &kv[(sp.begin + (p - sp.pos0)) * d.hd];
      std::copy(src, src + d.hd, &sc.entries[(p - first) * d.hd]);
    }
    auto decode = [&](size_t b, size_t e, int) {
      for (size_t i = b; i < e; ++i)
        kvc.decode(L.compressed.data() + sc.sel[i] * kvc.entry_bytes(),
                   &sc.entries[(n_win + i) * d.hd]);
    };
    if (par)
      par->parallel_for_dynamic(sc.sel.size(), decode, 32);
    else
      decode(0, sc.sel.size(), 0);
    return n_ent;
  };
  // Scores of every head against the entries, z [H, n_ent] (then probabilities in place). The
  // lanes of dot_rows_seq_t run over heads, so entries are read row by row (no transposes; the
  // queries are transposed once per token, not once per share of the entries); `par` splits the
  // entries over the pool.
  auto scores = [&](size_t t, Scratch& sc, size_t n_ent, ThreadPool* par) {
    const size_t H = static_cast<size_t>(d.H), hd = static_cast<size_t>(d.hd);
    sc.st.resize(n_ent * H);
    sc.z.resize(n_ent * H);
    const TransposedQueries qt = transpose_queries(&q[t * H * hd], hd, H, hd, sc.qt.data());
    auto part = [&](size_t b, size_t e, int) {
      dot_rows_seq_t(qt, sc.entries.data() + b * hd, hd, e - b, sc.st.data() + b * H, H);
    };
    if (par)
      par->parallel_for_dynamic(n_ent, part, 64);
    else
      part(0, n_ent, 0);
  };
  // Softmax of heads [h0, h1) with the sink in the denominator only.
  auto softmax = [&](Scratch& sc, size_t n_ent, size_t h0, size_t h1) {
    const size_t H = static_cast<size_t>(d.H);
    for (size_t h = h0; h < h1; ++h) {
      float* zh = sc.z.data() + h * n_ent;
      for (size_t j = 0; j < n_ent; ++j) zh[j] = sc.st[j * H + h];
      softmax_with_sink(zh, n_ent, scale, aw.attn_sink[h]);
    }
  };
  // Output dims [c0, c1) of every head: Σ_j p_hj · entry_j (each sum in entry order, whatever
  // the split of dims).
  auto weighted = [&](size_t t, const Scratch& sc, size_t n_ent, size_t c0, size_t c1) {
    weighted_rows_sum(sc.z.data(), n_ent, d.H, sc.entries.data() + c0, d.hd, n_ent, c1 - c0,
                      &o[t * d.H * d.hd + c0], d.hd);
  };
  auto unrope = [&](size_t t, int64_t pos) {
    float cs2[256], sn2[256];
    rope.angles(pos, cs2, sn2);
    for (int h = 0; h < d.H; ++h)
      rope_apply(&o[(t * d.H + h) * d.hd] + d.nope, cs2, sn2, d.rd / 2, true);
  };
  auto pos_of = [&](size_t si, size_t t) {
    return ctx.spans[si].pos0 + static_cast<int64_t>(t - ctx.spans[si].begin);
  };

  if (per_token) {
    pool.parallel_for_dynamic(tokens.size(), [&](size_t b, size_t e, int th) {
      Scratch& sc = scratch[th];
      for (size_t i = b; i < e; ++i) {
        const auto [si, t] = tokens[i];
        const int64_t pos = pos_of(si, t);
        select(si, t, pos, sc, th, false);
        const size_t n_ent = gather(si, t, pos, sc, nullptr);
        scores(t, sc, n_ent, nullptr);
        softmax(sc, n_ent, 0, d.H);
        weighted(t, sc, n_ent, 0, d.hd);
        unrope(t, pos);
      }
    });
  } else {  // few tokens: each one's work spread over the pool (entries, heads, then dims)
    for (const auto& [si, t] : tokens) {
      Scratch& sc = scratch[0];
      const int64_t pos = pos_of(si, t);
      select(si, t, pos, sc, 0, true);
      const size_t n_ent = gather(si, t, pos, sc, &pool);
      scores(t, sc, n_ent, &pool);
      pool.parallel_for_dynamic(
          d.H, [&](size_t h0, size_t h1, int) { softmax(sc, n_ent, h0, h1); }, 8);
      pool.parallel_for_dynamic(
          d.hd, [&](size_t c0, size_t c1, int) { weighted(t, sc, n_ent, c0, c1); }, 64);
      unrope(t, pos);
    }
  }

  // ---- Grouped output projection: each group of H/G heads → o_lora, then wo_b ----
  const int G = cfg.o_groups;
  const size_t gin = static_cast<size_t>(d.H / G) * d.hd, lora = cfg.o_lora_rank;
  float* u = workspace<UTag>(N * G * lora);
  auto project_group = [&](size_t g, ThreadPool* p) {
    MatrixView wg = aw.wo_a.row_slice(g * lora, lora);
    matmul(wg, o + g * gin, d.H * d.hd, N, u + g * lora, G * lora, p);
  };
  // When the groups share out evenly over several threads (Flash: 8 over 2, 4 or 8), each thread
  // takes whole groups, as MoE takes whole experts, instead of every group's rows being split over
  // all threads: one hand-off instead of G, and each thread streams a whole 4 MiB matrix. Rows do
  // not depend on the thread count (kernels/matmul.h), so the result is the same bits. Measured in
  // flash-4l `dsv4 bench` runs alternating both ways pass by pass (Zen 5, 2 threads; the 8 groups
  // of one layer): decode 1.00-1.14 → 0.92-1.13 ms, 512-token prompt 199-217 → 181-186 ms.
  const size_t nt = static_cast<size_t>(pool.size());
  if (nt > 1 && static_cast<size_t>(G) % nt == 0) {
    pool.parallel_for_dynamic(static_cast<size_t>(G), [&](size_t g0, size_t g1, int) {
      for (size_t g = g0; g < g1; ++g) project_group(g, nullptr);
    });
  } else {
    for (int g = 0; g < G; ++g) project_group(static_cast<size_t>(g), &pool);
  }
  matmul(aw.wo_b, u, N, out, &pool);
}

}  // namespace dsv4
