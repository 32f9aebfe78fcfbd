#include "model/attention.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "model/compressor.h"
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

// Lightning Indexer selection for one query: top-k compressed entries among w < n_avail.
void indexer_select(const float* qI, const float* wI, int nI, int ihd, const LayerState& L,
                    const KvCodec& codec, int64_t n_avail, int topk, std::vector<float>& key,
                    std::vector<float>& scores, std::vector<int64_t>& sel) {
  scores.assign(n_avail, 0.0f);
  key.resize(ihd);
  for (int64_t w = 0; w < n_avail; ++w) {
    codec.decode(L.index_keys.data() + w * codec.entry_bytes(), key.data());
    float s = 0.0f;
    for (int h = 0; h < nI; ++h) {
      const float d = dot(qI + static_cast<size_t>(h) * ihd, key.data(), ihd);
      s += wI[h] * std::max(d, 0.0f);
    }
    scores[w] = s;
  }
  const int64_t k = std::min<int64_t>(topk, n_avail);
  sel.resize(n_avail);
  std::iota(sel.begin(), sel.end(), 0);
  // Highest score first; ties go to the earlier entry.
  std::partial_sort(sel.begin(), sel.begin() + k, sel.end(), [&](int64_t a, int64_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  sel.resize(k);
}

}  // namespace

void attention_forward(const ForwardContext& ctx, const BlockWeights& bw, int layer,
                       const float* x, float* out) {
  const ModelConfig& cfg = ctx.cfg;
  const AttentionWeights& aw = bw.attn;
  const size_t N = ctx.n_rows;
  const int ratio = bw.ratio;
  const Dims d{cfg.n_heads, cfg.head_dim, cfg.rope_dim, cfg.nope_dim(), cfg.q_lora_rank,
               cfg.window, cfg.index_n_heads, cfg.index_head_dim};
  const RopeTable& rope = ratio ? ctx.rope_compressed : ctx.rope_plain;
  ThreadPool& pool = ctx.pool;
  const float eps = cfg.norm_eps;

  // ---- Projections for all rows at once (weights read once per call) ----
  std::vector<float> qr(N * d.ql), q(N * d.H * d.hd), kv(N * d.hd);
  matmul(aw.wq_a, x, N, qr.data(), &pool);
  for (size_t t = 0; t < N; ++t) rms_norm(&qr[t * d.ql], aw.q_norm.data(), d.ql, eps, &qr[t * d.ql]);
  matmul(aw.wq_b, qr.data(), N, q.data(), &pool);
  for (size_t i = 0; i < N * d.H; ++i) rms_norm(&q[i * d.hd], nullptr, d.hd, eps, &q[i * d.hd]);
  matmul(aw.wkv, x, N, kv.data(), &pool);
  for (size_t t = 0; t < N; ++t) rms_norm(&kv[t * d.hd], aw.kv_norm.data(), d.hd, eps, &kv[t * d.hd]);

  std::vector<float> ck, cz, ick, icz, iq, iw;
  const size_t cw = ratio ? aw.compressor.wkv.rows : 0;
  const size_t icw = ratio == 4 ? aw.idx_compressor.wkv.rows : 0;
  if (ratio) {
    ck.resize(N * cw);
    cz.resize(N * cw);
    matmul(aw.compressor.wkv, x, N, ck.data(), &pool);
    matmul(aw.compressor.wgate, x, N, cz.data(), &pool);
  }
  if (ratio == 4) {
    ick.resize(N * icw);
    icz.resize(N * icw);
    matmul(aw.idx_compressor.wkv, x, N, ick.data(), &pool);
    matmul(aw.idx_compressor.wgate, x, N, icz.data(), &pool);
    iq.resize(N * d.nI * d.ihd);
    iw.resize(N * d.nI);
    matmul(aw.idx_wq_b, qr.data(), N, iq.data(), &pool);
    matmul(aw.idx_weights_proj, x, N, iw.data(), &pool);
    const float wscale = 1.0f / std::sqrt(static_cast<float>(d.ihd)) / std::sqrt(static_cast<float>(d.nI));
    for (float& v : iw) v *= wscale;
  }

  // ---- Token by token within each sequence: state updates, selection, attention ----
  std::vector<float> o(N * d.H * d.hd);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.hd));
  std::vector<float> cs(d.rd / 2), sn(d.rd / 2), pooled(std::max(d.hd, d.ihd));
  std::vector<float> entries, z, key, scores;
  std::vector<int64_t> sel;
  for (const SeqSpan& sp : ctx.spans) {
    LayerState& L = sp.seq->layers[layer];
    const KvCodec& kvc = sp.seq->kv_codec();
    const KvCodec& ixc = sp.seq->index_codec();
    const bool native_index = ixc.storage() == KvStorage::kNative;
    for (size_t t = sp.begin; t < sp.end; ++t) {
      const int64_t pos = sp.pos0 + static_cast<int64_t>(t - sp.begin);
      rope.angles(pos, cs.data(), sn.data());
      float* qt = &q[t * d.H * d.hd];
      for (int h = 0; h < d.H; ++h) rope_apply(qt + h * d.hd + d.nope, cs.data(), sn.data(), d.rd / 2, false);
      float* kvt = &kv[t * d.hd];
      rope_apply(kvt + d.nope, cs.data(), sn.data(), d.rd / 2, false);
      kvc.store(kvt, L.window.data() + static_cast<size_t>(pos % d.win) * kvc.entry_bytes());

      if (ratio) {
        if (compressor_push(L.compressor, &ck[t * cw], &cz[t * cw], aw.compressor.ape, pos, pooled.data())) {
          const int64_t w = pos / ratio;
          finish_compressed_entry(pooled.data(), aw.compressor.norm, d.hd, d.rd, eps, rope, w * ratio,
                                  false, kvc, L.compressed);
          L.n_compressed = w + 1;
        }
      }
      if (ratio == 4) {
        if (compressor_push(L.index_compressor, &ick[t * icw], &icz[t * icw], aw.idx_compressor.ape, pos,
                            pooled.data())) {
          finish_compressed_entry(pooled.data(), aw.idx_compressor.norm, d.ihd, d.rd, eps, rope,
                                  (pos / 4) * 4, true, ixc, L.index_keys);
        }
      }

      // Which compressed entries this query sees: w < (pos+1)/ratio.
      sel.clear();
      if (ratio == 128) {
        const int64_t n_avail = (pos + 1) / 128;
        for (int64_t w = 0; w < n_avail; ++w) sel.push_back(w);
      } else if (ratio == 4) {
        const int64_t n_avail = (pos + 1) / 4;
        float* qI = &iq[t * d.nI * d.ihd];
        for (int h = 0; h < d.nI; ++h) {
          float* qh = qI + h * d.ihd;
          rope_apply(qh + (d.ihd - d.rd), cs.data(), sn.data(), d.rd / 2, false);
          hadamard_transform(qh, d.ihd);
          if (native_index) roundtrip_blocks(qh, d.ihd, 32, BlockFormat::kFp4E2M1);
        }
        indexer_select(qI, &iw[t * d.nI], d.nI, d.ihd, L, ixc, n_avail, cfg.index_topk, key, scores, sel);
      }

      // Gather K=V rows: the window (oldest first), then the selected compressed entries.
      const int64_t first = std::max<int64_t>(0, pos - d.win + 1);
      const size_t n_win = static_cast<size_t>(pos - first + 1);
      const size_t n_ent = n_win + sel.size();
      entries.resize(n_ent * d.hd);
      for (int64_t p = first; p <= pos; ++p) {
        kvc.decode(L.window.data() + static_cast<size_t>(p % d.win) * kvc.entry_bytes(),
                   &entries[(p - first) * d.hd]);
      }
      for (size_t i = 0; i < sel.size(); ++i) {
        kvc.decode(L.compressed.data() + sel[i] * kvc.entry_bytes(), &entries[(n_win + i) * d.hd]);
      }

      z.resize(n_ent);
      float* ot = &o[t * d.H * d.hd];
      for (int h = 0; h < d.H; ++h) {
        const float* qh = qt + h * d.hd;
        float m = -INFINITY;
        for (size_t j = 0; j < n_ent; ++j) {
          z[j] = dot(qh, &entries[j * d.hd], d.hd) * scale;
          m = std::max(m, z[j]);
        }
        float den = std::exp(aw.attn_sink[h] - m);  // the sink adds mass to the denominator only
        for (size_t j = 0; j < n_ent; ++j) den += (z[j] = std::exp(z[j] - m));
        float* oh = ot + h * d.hd;
        std::fill(oh, oh + d.hd, 0.0f);
        for (size_t j = 0; j < n_ent; ++j) axpy(z[j] / den, &entries[j * d.hd], d.hd, oh);
        rope_apply(oh + d.nope, cs.data(), sn.data(), d.rd / 2, true);
      }
    }
  }

  // ---- Grouped output projection: each group of H/G heads → o_lora, then wo_b ----
  const int G = cfg.o_groups;
  const size_t gin = static_cast<size_t>(d.H / G) * d.hd, lora = cfg.o_lora_rank;
  std::vector<float> u(N * G * lora);
  for (int g = 0; g < G; ++g) {
    MatrixView wg = aw.wo_a.row_slice(g * lora, lora);
    matmul(wg, o.data() + g * gin, d.H * d.hd, N, u.data() + g * lora, G * lora, &pool);
  }
  matmul(aw.wo_b, u.data(), N, out, &pool);
}

}  // namespace dsv4
