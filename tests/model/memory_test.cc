// Loading maps, never copies: resident memory after load stays far below the checkpoint size.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "golden_util.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "test_support.h"
#include "util/huge_pages.h"
#include "util/process_stats.h"
#include "util/thread_pool.h"

namespace dsv4::test {
namespace {

TEST(Memory, LoadMapsWeightsInPlace) {
  // The largest golden checkpoint.
  GoldenRun biggest;
  size_t biggest_bytes = 0;
  for (auto& r : discover_golden_runs()) {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(r.dir)) {
      if (e.path().extension() == ".safetensors") n += std::filesystem::file_size(e.path());
    }
    if (n > biggest_bytes) {
      biggest_bytes = n;
      biggest = r;
    }
  }
  const size_t before = resident_set_bytes(), anon_before = anonymous_resident_bytes();
  auto m = Model::load(biggest.dir.string());
  const size_t after_load = resident_set_bytes(), anon_after_load = anonymous_resident_bytes();
  ThreadPool pool(2);
  SequenceState s = m->new_sequence();
  BatchItem it;
  it.seq = &s;
  it.tokens = biggest.ids;
  ForwardResult res;
  m->forward(std::span<const BatchItem>(&it, 1), pool, res);
  const size_t after_prefill = resident_set_bytes();
  std::printf(
      "[memory] %s: checkpoint %.1f MB; RSS before load %.1f MB, after load %.1f MB (+%.1f, of "
      "it allocated +%.1f), after %zu-token prefill %.1f MB\n",
      biggest.config.c_str(), biggest_bytes / 1e6, before / 1e6, after_load / 1e6,
      (after_load - before) / 1e6, (anon_after_load - anon_before) / 1e6, biggest.ids.size(),
      after_prefill / 1e6);
  // Validation touches only headers, norms and the hash tables, and allocates far less than the
  // weights. The allocated part is what a copy would show in: the total also counts touched file
  // pages, which with 2 MiB pages can cover all of an 18 MB checkpoint, depending on whether the
  // page cache holds its files in 2 MiB or 4 KiB pages (`dsv4 bench` prints total RSS on flash-4l).
  ASSERT_GT(anon_after_load, 0u) << "RssAnon missing from /proc/self/status";
  EXPECT_LT(anon_after_load - anon_before, biggest_bytes / 4);
}

// Every shard is mapped for 2 MiB pages: file offset 0 on a 2 MiB boundary (the kernel can only
// back a file mapping with 2 MiB pages where address and file offset agree modulo 2 MiB) and
// MADV_HUGEPAGE set on the mapping ("hg" among its VmFlags in /proc/self/smaps).
TEST(Memory, CheckpointFilesAreMappedForHugePages) {
  auto ck = Checkpoint::open((shared_dir() / "golden" / "tiny").string());
  size_t checked = 0;
  for (const auto& [name, t] : ck->tensors()) {
    const auto start = reinterpret_cast<uintptr_t>(t.data) - t.file_offset;
    EXPECT_EQ(start % kHugePageBytes, 0u) << name << " in " << t.file;
    ++checked;
  }
  EXPECT_GT(checked, 100u);
  std::set<std::string> shards;
  for (const auto& [name, t] : ck->tensors()) {
    if (!shards.insert(t.file).second) continue;
    const std::string flags = mapping_vm_flags(t.data) + " ";
    EXPECT_NE(flags.find(" hg "), std::string::npos) << t.file << ":" << flags;
  }
  EXPECT_EQ(shards.size(), 3u);  // tiny is sharded in three files
}

// What `dsv4 bench` streams as "the pages one token reads": each range is a checkpoint tensor
// in place (or the aligned copy the loader makes of a small misaligned one), and together they
// hold the weight bytes token_cost counts (its weight bytes less the one embedding row, which is
// not streamed; scale rows have no padding in tiny).
TEST(Memory, TokenWeightRangesAreTheCountedTensorsInPlace) {
  auto m = Model::load((shared_dir() / "golden" / "tiny").string());
  std::multimap<size_t, const TensorInfo*> by_size;
  for (const auto& [name, t] : m->checkpoint().tensors()) by_size.emplace(t.nbytes, &t);
  size_t total = 0;
  for (const auto& r : m->token_weight_ranges()) {
    bool in_place = false, copy = false;
    for (auto [it, end] = by_size.equal_range(r.size()); it != end; ++it) {
      in_place |= it->second->data == r.data();
      copy |= std::memcmp(it->second->data, r.data(), r.size()) == 0;
    }
    EXPECT_TRUE(in_place || copy) << "a range of " << r.size() << " bytes is no tensor";
    total += r.size();
  }
  const SequenceState s = m->new_sequence();
  const auto cost = m->token_cost(s);
  EXPECT_EQ(total, cost.weight_bytes - static_cast<size_t>(m->config().dim) * 2);
  size_t by_part = 0;
  for (size_t b : cost.part_bytes) by_part += b;
  EXPECT_EQ(by_part, total + cost.kv_bytes);
  // The head alone is vocab × dim BF16: the ranges are not just scales or norms.
  EXPECT_GT(total, static_cast<size_t>(m->config().vocab_size) * m->config().dim * 2);
  // One part's ranges are that part's weight bytes (attention's also count the KV it reads), and
  // the parts' ranges together are all of them.
  size_t parts_total = 0;
  for (int p = 0; p < static_cast<int>(ForwardPart::kCount); ++p) {
    size_t part = 0;
    for (const auto& r : m->token_weight_ranges(static_cast<ForwardPart>(p))) part += r.size();
    const size_t kv = static_cast<ForwardPart>(p) == ForwardPart::kAttention ? cost.kv_bytes : 0;
    EXPECT_EQ(part + kv, cost.part_bytes[p]) << forward_part_name(static_cast<ForwardPart>(p));
    EXPECT_GT(part, 0u) << forward_part_name(static_cast<ForwardPart>(p));
    parts_total += part;
  }
  EXPECT_EQ(parts_total, total);
}

TEST(Memory, ExpertPrefetchChangesNoResult) {
  // Prefetching routed experts (madvise) and moving the shared expert ahead of them must leave
  // every logit bit-identical; kAuto stays off for a checkpoint far smaller than RAM.
  const GoldenRun r = find_golden_run("tiny", "long");
  ThreadPool pool(2);
  std::vector<float> logits[2];
  for (int on = 0; on < 2; ++on) {
    ModelOptions o;
    o.expert_prefetch = on ? ModelOptions::ExpertPrefetch::kOn : ModelOptions::ExpertPrefetch::kOff;
    auto m = Model::load(r.dir.string(), o);
    EXPECT_EQ(m->prefetches_experts(), on == 1);
    logits[on] = prefill_all_logits(*m, r.ids, pool);
  }
  ASSERT_EQ(logits[0].size(), logits[1].size());
  EXPECT_EQ(std::memcmp(logits[0].data(), logits[1].data(), logits[0].size() * sizeof(float)), 0);
  EXPECT_FALSE(Model::load(r.dir.string())->prefetches_experts());
}

}  // namespace
}  // namespace dsv4::test
