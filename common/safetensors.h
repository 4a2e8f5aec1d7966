// Reading safetensors checkpoints over mmap: single files and sharded checkpoints
// (model.safetensors.index.json). Every header field is validated before any tensor is
// touched; errors name the file and what is wrong.
#ifndef MOE_COMMON_SAFETENSORS_H_
#define MOE_COMMON_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/dtype.h"
#include "common/mapped_file.h"

namespace moe {

// Largest header accepted (the reference implementation's limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte range within the data section (after the header)
  uint64_t end = 0;

  int64_t NumElements() const;
  uint64_t NumBytes() const { return end - begin; }
  std::string ShapeString() const;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;          // 8 + header length: where the data section starts
  std::vector<TensorInfo> tensors;   // sorted by byte range
  std::map<std::string, std::string> metadata;
};

// Parses and validates the header of a safetensors file whose entire contents are `file`:
// sizes, JSON shape, dtypes, shapes, byte ranges (in range, ordered, not overlapping,
// contiguous, covering the data section exactly). Never reads past `file`.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::Span<const uint8_t> file);

// One mapped .safetensors file. Immutable after Open; safe to share between threads.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* Find(absl::string_view name) const;
  // The tensor's raw bytes (little-endian, `info.dtype`), inside the mapping.
  absl::Span<const uint8_t> Data(const TensorInfo& info) const;

 private:
  SafetensorsFile(MappedFile file, SafetensorsHeader header);

  MappedFile file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors()
};

// A Hugging Face checkpoint directory: `model.safetensors`, or the shards named by
// `model.safetensors.index.json`. Immutable after Open; safe to share between threads.
class Checkpoint {
 public:
  struct TensorRef {
    const TensorInfo* info;
    const SafetensorsFile* file;
  };

  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool Contains(absl::string_view name) const;
  absl::StatusOr<TensorRef> Find(absl::string_view name) const;
  // Checks `name` has exactly `shape` and converts it to fp32 into `dst`, which holds
  // the product of `shape` floats.
  absl::Status ReadF32(absl::string_view name, absl::Span<const int64_t> shape,
                       float* dst) const;
  // Names of all tensors, sorted.
  std::vector<std::string> TensorNames() const;
  uint64_t TotalBytes() const;

 private:
  Checkpoint() = default;

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, TensorRef, std::less<>> tensors_;
};

}  // namespace moe

#endif  // MOE_COMMON_SAFETENSORS_H_
