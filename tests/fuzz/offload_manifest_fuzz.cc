// libFuzzer target: ParseOffloadManifest on arbitrary text. It must never crash, every
// error must name the file, and a manifest it accepts must keep every promise the loaders
// rely on: blobs and tensors inside their files, aligned, not overlapping, sized by the
// format's formulas. Seeds: tests/data/offload_corpus and tests/data/bad_offload.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/quant/offload_model.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe::quant;
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto m = ParseOffloadManifest(text, "fuzz/manifest.json");
  if (!m.ok()) {
    FUZZ_CHECK(absl::StartsWith(m.status().message(), "fuzz/manifest.json"));
    return 0;
  }
  const auto& c = m->config;
  FUZZ_CHECK(int64_t(m->blob_offsets.size()) == c.num_hidden_layers * c.num_local_experts);
  FUZZ_CHECK(m->expert.blob_stride % kBlobAlignment == 0);
  FUZZ_CHECK(m->expert.blob_bytes <= m->expert.blob_stride);
  FUZZ_CHECK(m->expert.w2_offset + m->expert.w2.total_bytes == m->expert.blob_bytes);
  std::vector<int64_t> offsets = m->blob_offsets;
  std::sort(offsets.begin(), offsets.end());
  for (size_t i = 0; i < offsets.size(); ++i) {
    FUZZ_CHECK(offsets[i] >= 0 && offsets[i] % kBlobAlignment == 0);
    FUZZ_CHECK(offsets[i] + m->expert.blob_stride <= m->experts_bytes);
    if (i > 0) FUZZ_CHECK(offsets[i] - offsets[i - 1] >= m->expert.blob_stride);
  }
  for (const DenseTensor& t : m->dense) {
    FUZZ_CHECK(t.offset >= 0 && t.offset % kSectionAlign == 0);
    FUZZ_CHECK(t.offset + t.layout.total_bytes <= m->dense_bytes);
    FUZZ_CHECK(t.layout.rows * t.layout.cols > 0);
    if (t.layout.spec.quantized()) FUZZ_CHECK(t.layout.cols % t.layout.spec.group_size == 0);
  }
  // Serialising and parsing again gives the same layout.
  const auto again = ParseOffloadManifest(SerializeOffloadManifest(*m), "fuzz/again.json");
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->blob_offsets == m->blob_offsets);
  FUZZ_CHECK(again->dense.size() == m->dense.size());
  return 0;
}
