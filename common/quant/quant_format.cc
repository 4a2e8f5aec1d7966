#include "common/quant/quant_format.h"

#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace moe::quant {

bool IsSupportedBits(int bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 8 || bits == 16;
}

std::string MatrixSpec::ToString() const {
  if (!quantized()) return std::string(DTypeName(dtype16));
  return absl::StrCat(bits, "-bit/g", group_size);
}

absl::Status MatrixLayout::Compute(int64_t rows, int64_t cols, const MatrixSpec& spec,
                                   absl::string_view what, MatrixLayout* out) {
  if (!IsSupportedBits(spec.bits)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": bits ", spec.bits, " is not one of 2, 3, 4, 8, 16"));
  }
  // 2^40 values is far above any real matrix and keeps every product below in int64.
  constexpr int64_t kMaxValues = int64_t{1} << 40;
  if (rows <= 0 || cols <= 0 || rows > kMaxValues / cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": shape [", rows, ", ", cols, "] is empty or too large"));
  }
  MatrixLayout l;
  l.rows = rows;
  l.cols = cols;
  l.spec = spec;
  const int64_t values = rows * cols;
  if (!spec.quantized()) {
    if (spec.dtype16 != DType::kBF16 && spec.dtype16 != DType::kF16) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": 16-bit storage must be BF16 or F16, not ", DTypeName(spec.dtype16)));
    }
    l.codes_bytes = values * 2;
    l.total_bytes = AlignUp(l.codes_bytes, kSectionAlign);
    *out = l;
    return absl::OkStatus();
  }
  const int64_t g = spec.group_size;
  if (g < kBlock || g > kMaxGroupSize || g % kBlock != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": group size ", g,
                                                   " must be a multiple of ", kBlock, " in [",
                                                   kBlock, ", ", kMaxGroupSize, "]"));
  }
  if (cols % g != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": group size ", g, " does not divide the input dimension ", cols));
  }
  l.codes_bytes = values / 8 * spec.bits;  // cols is a multiple of 32, so exact
  l.groups = values / g;
  l.meta_count = (l.groups + kMetaGroup - 1) / kMetaGroup;
  l.scales_offset = AlignUp(l.codes_bytes, kSectionAlign);
  l.zeros_offset = l.scales_offset + AlignUp(l.groups, kSectionAlign);
  l.meta_offset = l.zeros_offset + AlignUp(l.groups, kSectionAlign);
  l.total_bytes = l.meta_offset +
                  AlignUp(l.meta_count * static_cast<int64_t>(sizeof(MetaParams)), kSectionAlign);
  *out = l;
  return absl::OkStatus();
}

void PackBlock(const uint8_t* codes, int bits, uint8_t* block) {
  std::memset(block, 0, bits * kBlock / 8);
  for (int64_t i = 0; i < kBlock; ++i) {
    const uint8_t q = codes[i];
    switch (bits) {
      case 8: block[i] = q; break;
      case 4: block[i % 16] |= uint8_t(q << (4 * (i / 16))); break;
      case 2: block[i % 8] |= uint8_t(q << (2 * (i / 8))); break;
      case 3: {
        const int64_t bit = 12 * (i % 8) + 3 * (i / 8), byte = bit / 8, shift = bit % 8;
        block[byte] |= uint8_t(q << shift);
        if (shift > 5) block[byte + 1] |= uint8_t(q >> (8 - shift));
        break;
      }
    }
  }
}

void DequantizeRowsReference(const MatrixView& m, int64_t r0, int64_t r1, float* dst) {
  const MatrixLayout& l = m.layout;
  const int64_t cols = l.cols;
  if (!l.spec.quantized()) {
    ConvertToF32(m.codes() + r0 * cols * 2, l.spec.dtype16, (r1 - r0) * cols, dst);
    return;
  }
  const int bits = l.spec.bits;
  const int64_t block_bytes = bits * kBlock / 8;
  for (int64_t r = r0; r < r1; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t index = r * cols + c;
      const uint8_t* block = m.codes() + (index / kBlock) * block_bytes;
      const int q = UnpackCode(block, bits, index % kBlock);
      const int64_t g = index / l.spec.group_size;
      dst[(r - r0) * cols + c] = m.Scale(g) * (float(q) - m.Zero(g));
    }
  }
}

}  // namespace moe::quant
