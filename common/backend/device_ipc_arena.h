// The coordinator's activation arena in device memory, shared with an expert worker on
// the same GPU by a CUDA IPC handle, so that hidden states never leave the GPU between
// the two processes. Device-neutral: on a CPU device (or in a build without CUDA) it is
// refused with a status that says why, and the caller uses a shared host arena
// (common/shared_arena.h) instead. The CUDA side is the CUDA module's CudaIpcMemory
// (cuda_module.h).
#ifndef MOE_COMMON_BACKEND_DEVICE_IPC_ARENA_H_
#define MOE_COMMON_BACKEND_DEVICE_IPC_ARENA_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/activation_arena.h"
#include "common/backend/cuda_module.h"
#include "common/backend/device.h"

namespace moe::backend {

// What an importer needs to find and check an exported arena (AttachArena's
// CudaIpcHandle and size_bytes).
struct DeviceIpcHandle {
  std::string ipc_mem_handle;  // the 64-byte cudaIpcMemHandle_t
  int device = 0;              // the exporter's ordinal, in its own numbering
  std::string pci_bus_id;      // the GPU, named the same in every process
  uint32_t exporter_pid = 0;
  uint64_t size_bytes = 0;     // usable bytes, after the header
};

// One exported allocation (the exporter's) or one mapping of it (an importer's). The
// first kHeaderBytes hold the arena id, so an importer can check it mapped what it was
// told; offsets count from after them. Exported memory must outlive every importer's
// mapping: the coordinator keeps its arena for its whole life, and a worker drops its
// mapping on re-attach or when the exporter exits (OwnerAlive). Thread-safe to read.
class DeviceIpcArena final : public ActivationArena {
 public:
  static constexpr size_t kHeaderBytes = 64;

  // Allocates kHeaderBytes + `bytes` on `device`, writes `id` (at most kHeaderBytes) into
  // the header and exports it. FAILED_PRECONDITION on a CPU device, UNIMPLEMENTED for a
  // CUDA device in a build without CUDA.
  static absl::StatusOr<std::unique_ptr<DeviceIpcArena>> Create(Device& device, size_t bytes,
                                                                const std::string& id);
  // Maps another process's arena on `device`. FAILED_PRECONDITION naming why when it
  // cannot: `device` is the CPU, another GPU than the exporter's, the handle does not
  // open, or the header does not hold `id`.
  static absl::StatusOr<std::unique_ptr<DeviceIpcArena>> Open(Device& device,
                                                              const DeviceIpcHandle& handle,
                                                              const std::string& id);
  ~DeviceIpcArena() override;
  DeviceIpcArena(const DeviceIpcArena&) = delete;
  DeviceIpcArena& operator=(const DeviceIpcArena&) = delete;

  const DeviceIpcHandle& handle() const { return handle_; }
  const std::string& id() const override { return id_; }
  size_t size() const override { return handle_.size_bytes; }  // usable bytes
  bool on_device() const override { return true; }
  uint32_t owner_pid() const override { return importer_ ? handle_.exporter_pid : 0; }
  // Device address of `bytes` at `offset` of the usable region: OUT_OF_RANGE when the
  // range is not inside it or not 4-byte aligned.
  absl::StatusOr<void*> At(uint64_t offset, uint64_t bytes) const override;
  // For an importer: whether the exporting process still runs (a pidfd taken at open,
  // so a reused pid is not mistaken for it). Always true for the exporter.
  bool OwnerAlive() const override;

 private:
  DeviceIpcArena(std::unique_ptr<CudaIpcMemory> memory, DeviceIpcHandle handle, std::string id);

  std::unique_ptr<CudaIpcMemory> memory_;
  DeviceIpcHandle handle_;
  std::string id_;
  int owner_pidfd_ = -1;  // importer only; -1 where pidfd_open is not available
  bool importer_ = false;
};

}  // namespace moe::backend

#endif  // MOE_COMMON_BACKEND_DEVICE_IPC_ARENA_H_
