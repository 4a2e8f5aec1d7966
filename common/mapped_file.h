// A read-only memory mapping of a whole file. Move-only; unmaps on destruction.
#ifndef MOE_COMMON_MAPPED_FILE_H_
#define MOE_COMMON_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace moe {

class MappedFile {
 public:
  // Maps `path` read-only. An empty file maps to an empty span.
  static absl::StatusOr<MappedFile> Open(const std::string& path);

  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  void Reset();

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Drops this process's resident copy of the whole pages inside [p, p + n) of a read-only
// file mapping whose bytes the caller has copied elsewhere: without it the copied file
// pages stay in the resident set beside the copy (RSS twice the weights). Reading them
// again simply faults them back in from the page cache. Best effort.
void ReleaseMappedPages(const void* p, size_t n);

}  // namespace moe

#endif  // MOE_COMMON_MAPPED_FILE_H_
