// How one cached vector is stored. Native (the production layout, value-identical to the demo):
//   KV entry  = (head_dim − rope) e4m3 codes + one E8M0 scale per 64 + rope dims as bf16 (RNE);
//   index key = e2m1 codes packed two per byte + one E8M0 scale per 32.
// Exact (debug, `--exact-kv`): plain fp32, no rounding at all (compares with the reference's B).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dsv4 {

enum class KvStorage { kNative, kExactF32 };

class KvCodec {
 public:
  enum class Kind { kKvEntry, kIndexKey };
  KvCodec() = default;
  KvCodec(Kind kind, KvStorage storage, int dim, int rope_dim);

  size_t entry_bytes() const { return bytes_; }
  int dim() const { return dim_; }
  KvStorage storage() const { return storage_; }

  // Rounds v[0..dim) in place to exactly what storing it would keep (the demo's in-place
  // "simulation"), then writes the stored bytes to dst. After this, decode(dst) == v bit for bit.
  void store(float* v, uint8_t* dst) const;
  void decode(const uint8_t* src, float* out) const;

 private:
  Kind kind_ = Kind::kKvEntry;
  KvStorage storage_ = KvStorage::kNative;
  int dim_ = 0, rope_ = 0;
  size_t bytes_ = 0;
};

}  // namespace dsv4
