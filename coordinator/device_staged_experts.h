// An ExpertBackend that computes on the host, made usable from a model on a device:
// x is copied to the host, the wrapped backend runs, out is copied back. A stopgap for
// backends that do not yet read device memory (the in-process worker before it takes a
// device); it costs two copies of [n, H] per layer and call.
#ifndef MOE_COORDINATOR_DEVICE_STAGED_EXPERTS_H_
#define MOE_COORDINATOR_DEVICE_STAGED_EXPERTS_H_

#include "common/backend/device.h"
#include "common/expert_backend.h"

namespace moe::coordinator {

// Thread-safe when the wrapped backend is (each call stages through memory of its own).
class HostStagedExperts : public ExpertBackend {
 public:
  // `host_backend` reads x and writes out in host memory; both it and `device` must
  // outlive this object.
  HostStagedExperts(ExpertBackend* host_backend, backend::Device& device)
      : host_backend_(host_backend), device_(device) {}

  // x/out: memory of the device; ids/weights: host memory (expert_backend.h).
  absl::Status RunExperts(int layer, absl::Span<const float> x, int64_t n,
                          absl::Span<const int32_t> ids, absl::Span<const float> weights,
                          absl::Span<float> out, ExpertCallStats* stats) override;
  void Prefetch(int layer, absl::Span<const int32_t> experts) override {
    host_backend_->Prefetch(layer, experts);
  }
  absl::Status AwaitRecovery(const std::function<bool()>& cancelled) override {
    return host_backend_->AwaitRecovery(cancelled);
  }

 private:
  ExpertBackend* host_backend_;
  backend::Device& device_;
};

}  // namespace moe::coordinator

#endif  // MOE_COORDINATOR_DEVICE_STAGED_EXPERTS_H_
