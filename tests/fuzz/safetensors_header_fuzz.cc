// libFuzzer target: ParseSafetensorsHeader on arbitrary bytes. It must never crash, hang
// or read outside the input (ASan), and a header it accepts must satisfy every invariant
// the readers rely on. Seeds: tests/data/bad_safetensors and tests/data/safetensors_corpus.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // An exact-size heap copy: ASan then flags any read past the end.
  const std::vector<uint8_t> file(data, data + size);
  const auto header = moe::ParseSafetensorsHeader(file);
  if (!header.ok()) {
    // An error is one non-empty, printable line.
    const absl::string_view message = header.status().message();
    FUZZ_CHECK(!message.empty());
    for (char c : message) FUZZ_CHECK(c >= 0x20 && c < 0x7f);
    return 0;
  }

  FUZZ_CHECK(header->data_offset >= 8);
  FUZZ_CHECK(header->data_offset <= size);
  FUZZ_CHECK(header->data_offset - 8 <= moe::kMaxSafetensorsHeaderBytes);
  const uint64_t data_size = size - header->data_offset;
  uint64_t expected_begin = 0;
  uint64_t checksum = 0;
  for (const moe::TensorInfo& t : header->tensors) {
    // Sorted, contiguous, in range.
    FUZZ_CHECK(t.begin == expected_begin);
    FUZZ_CHECK(t.begin <= t.end);
    FUZZ_CHECK(t.end <= data_size);
    expected_begin = t.end;
    // The byte size is exactly what the shape and dtype imply.
    uint64_t elements = 1;
    for (int64_t d : t.shape) {
      FUZZ_CHECK(d >= 0);
      elements *= static_cast<uint64_t>(d);
    }
    FUZZ_CHECK(t.NumBytes() == elements * moe::DTypeSize(t.dtype));
    FUZZ_CHECK(t.NumElements() >= 0);
    FUZZ_CHECK(static_cast<uint64_t>(t.NumElements()) == elements);
    // Touch the tensor's bytes where a reader would find them.
    const uint8_t* bytes = file.data() + header->data_offset + t.begin;
    for (uint64_t i = 0; i < t.NumBytes(); ++i) checksum += bytes[i];
    // Names are unique keys of a JSON object.
    FUZZ_CHECK(t.name != "__metadata__");
  }
  FUZZ_CHECK(expected_begin == data_size);
  // Keep the reads from being optimised away.
  if (checksum == 0xdeadbeefcafef00dULL) std::fprintf(stderr, "!");
  return 0;
}
