// The byte layout of one quantized (or 16-bit) weight matrix in the offload format, and
// the formulas every writer, reader and size report uses. docs/quantization.md explains
// the choices.
//
// A matrix W[rows, cols] (torch.nn.Linear layout: cols is the input dimension) with
// `bits` in {2, 3, 4, 8} is stored as four sections, each starting 64-byte aligned from
// the start of the matrix:
//   codes   rows * cols * bits / 8 bytes, row-major, in blocks of 32 consecutive inputs
//           (kBlock); block layout per bit width below
//   scales  one uint8 code per group (G = rows * cols / group_size, row-major)
//   zeros   one uint8 code per group
//   meta    one MetaParams per kMetaGroup consecutive groups: scale = s_min + s_step *
//           code, zero = z_min + z_step * code (the 8-bit "meta" quantization of HQQ)
// W[r, c] ~= scale(g) * (q[r, c] - zero(g)), g = (r * cols + c) / group_size.
//
// bits == 16 stores the matrix as raw BF16 or F16 (codes section only).
//
// Block of 32 values, value i in [0, 32):
//   8-bit: byte i
//   4-bit: 16 bytes; value i in byte i % 16, bits 4 * (i / 16)
//   2-bit: 8 bytes;  value i in byte i % 8,  bits 2 * (i / 8)
//   3-bit: 12 bytes = 96 bits read little-endian as eight 12-bit fields; field j holds
//          values j, j+8, j+16, j+24 at bits 0, 3, 6, 9: value i is at bit
//          12 * (i % 8) + 3 * (i / 8) of the block
// Eight consecutive values therefore come from one 8-byte load, one shift and one mask
// (2/4/8-bit), or, for 3 bits, from one byte shuffle that puts field j in 32-bit lane j
// (once per block) and then one shift and one mask: one AVX2 decode per 8 floats. The
// 3-bit decode loads 16 bytes per 12-byte block; the 4 bytes past the last block are
// inside the matrix (its scales section follows the codes).
#ifndef MOE_COMMON_QUANT_QUANT_FORMAT_H_
#define MOE_COMMON_QUANT_QUANT_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/dtype.h"

namespace moe::quant {

inline constexpr int64_t kBlock = 32;          // values per packing block
inline constexpr int64_t kMetaGroup = 128;     // groups per meta-quantization group
inline constexpr int64_t kSectionAlign = 64;   // section alignment inside a matrix/blob
inline constexpr int64_t kDefaultGroupSize = 64;
inline constexpr int64_t kMaxGroupSize = 4096;

struct MetaParams {
  float s_min, s_step, z_min, z_step;
};

// How one matrix is stored. bits 16: raw `dtype16` (kBF16 or kF16).
struct MatrixSpec {
  int bits = 16;
  int64_t group_size = kDefaultGroupSize;
  DType dtype16 = DType::kBF16;

  bool quantized() const { return bits != 16; }
  std::string ToString() const;  // "hqq-3bit/g64" style, for messages and info
};

// Bits values accepted in files and on the command line.
bool IsSupportedBits(int bits);

inline int64_t AlignUp(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// Byte offsets of the sections of one matrix, relative to its start.
struct MatrixLayout {
  int64_t rows = 0, cols = 0;
  MatrixSpec spec;
  int64_t codes_bytes = 0;
  int64_t groups = 0;  // 0 for 16-bit
  int64_t scales_offset = 0, zeros_offset = 0, meta_offset = 0, meta_count = 0;
  int64_t total_bytes = 0;  // including the sections' alignment padding

  // Checks the spec fits the shape (bits supported, group size a multiple of kBlock
  // that divides cols, sizes not overflowing) and computes the offsets. `what` names
  // the matrix in errors.
  static absl::Status Compute(int64_t rows, int64_t cols, const MatrixSpec& spec,
                              absl::string_view what, MatrixLayout* out);
};

// A matrix inside mapped or owned memory. Non-owning; `data` is at least
// layout.total_bytes long and 64-byte aligned when the kernels' AVX2 path reads it (the
// kernels use unaligned loads, so alignment only matters for speed).
struct MatrixView {
  MatrixLayout layout;
  const uint8_t* data = nullptr;

  const uint8_t* codes() const { return data; }
  const uint8_t* scales() const { return data + layout.scales_offset; }
  const uint8_t* zeros() const { return data + layout.zeros_offset; }
  const MetaParams* meta() const {
    return reinterpret_cast<const MetaParams*>(data + layout.meta_offset);
  }
  float Scale(int64_t group) const {
    const MetaParams& m = meta()[group / kMetaGroup];
    return m.s_min + m.s_step * scales()[group];
  }
  float Zero(int64_t group) const {
    const MetaParams& m = meta()[group / kMetaGroup];
    return m.z_min + m.z_step * zeros()[group];
  }
};

// The code of value `i` (in [0, kBlock)) of a packed block.
inline int UnpackCode(const uint8_t* block, int bits, int64_t i) {
  switch (bits) {
    case 8: return block[i];
    case 4: return (block[i % 16] >> (4 * (i / 16))) & 15;
    case 2: return (block[i % 8] >> (2 * (i / 8))) & 3;
    case 3: {
      const int64_t bit = 12 * (i % 8) + 3 * (i / 8), byte = bit / 8, shift = bit % 8;
      int v = block[byte] >> shift;
      if (shift > 5) v |= block[byte + 1] << (8 - shift);
      return v & 7;
    }
    default: return 0;
  }
}
// Packs kBlock codes (each < 2^bits) into bits * 4 bytes at `block`.
void PackBlock(const uint8_t* codes, int bits, uint8_t* block);

// Dequantises rows [r0, r1) of `m` into dst[(r1 - r0), cols] with plain scalar code: the
// reference every fused kernel is checked against.
void DequantizeRowsReference(const MatrixView& m, int64_t r0, int64_t r1, float* dst);

}  // namespace moe::quant

#endif  // MOE_COMMON_QUANT_QUANT_FORMAT_H_
