#include "coordinator/worker_client.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/logging.h"
#include "common/status.h"

namespace moe::coordinator {

namespace {

// A worker's figures for one call of one layer, whichever way they came (reply fields
// are the peer's to choose): it acquires each distinct expert once, so hits + misses is
// at most the layer's experts, prefetch hits at most those, and its seconds are real
// durations. Anything else would poison the running totals and the metrics for good.
absl::Status CheckCallFigures(const ExpertCallStats& figures, int64_t num_experts) {
  const uint64_t experts = uint64_t(num_experts);
  const uint64_t hits = figures.hits, misses = figures.misses;
  const uint64_t prefetch_hits = figures.prefetch_hits;
  // In this order: each term is bounded before the sum is formed, so it cannot wrap.
  if (hits > experts || misses > experts || hits + misses > experts ||
      prefetch_hits > hits + misses) {
    return absl::InternalError(absl::StrCat("the expert worker reported ", hits, " hits, ",
                                            misses, " misses and ", prefetch_hits,
                                            " prefetch hits for a call of a layer of ",
                                            num_experts, " experts"));
  }
  for (const double s : {figures.stall_s, figures.compute_s}) {
    if (!std::isfinite(s) || s < 0) {
      return absl::InternalError(
          absl::StrCat("the expert worker reported a call time of ", s, " s"));
    }
  }
  return absl::OkStatus();
}

bool OnCudaDevice(const WorkerClientOptions& options) {
  return options.device != nullptr && options.device->kind() == backend::DeviceKind::kCuda;
}

const char* PathName(ActivationPath path) {
  switch (path) {
    case ActivationPath::kInline: return "inline in the RPCs";
    case ActivationPath::kHostArena: return "through the shared host arena";
    case ActivationPath::kDeviceArena: return "through the device arena (CUDA IPC)";
  }
  return "?";
}

uint64_t RoundUp64(uint64_t v) { return (v + 63) / 64 * 64; }

// How long one sleep of a ring call lasts before it looks at the worker's process and
// the call's deadline again.
constexpr absl::Duration kRingWatchInterval = absl::Milliseconds(20);

}  // namespace

HostArenaLayout HostArenaLayout::For(int slots, int64_t max_tokens, const ModelConfig& config) {
  HostArenaLayout l;
  l.slot_bytes = RoundUp64(2 * uint64_t(max_tokens) * uint64_t(config.hidden_size) * sizeof(float));
  l.routes_offset = l.slot_bytes * uint64_t(slots);
  l.route_bytes = RoundUp64(2 * uint64_t(max_tokens) *
                            uint64_t(std::max<int64_t>(config.num_experts_per_tok, 1)) * 4);
  l.ring_offset = l.routes_offset + l.route_bytes * uint64_t(slots);
  l.total = l.ring_offset + ring::RingBytes(static_cast<uint32_t>(slots));
  return l;
}

absl::StatusOr<std::unique_ptr<WorkerClient>> WorkerClient::Create(
    const WorkerClientOptions& options, const ModelConfig& config) {
  if (options.arena_slots < 1 || options.arena_slots > int(ring::kMaxRingSlots) ||
      options.max_tokens_per_call < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker client: arena_slots must be in [1, ", ring::kMaxRingSlots,
        "] and max_tokens_per_call >= 1"));
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  // A worker that comes back is found within a fraction of a second.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  MOE_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                       MakeChannelCredentials(options.tls));
  auto channel = grpc::CreateCustomChannel(options.address, credentials, args);
  std::unique_ptr<SharedArena> arena;
  std::unique_ptr<backend::DeviceIpcArena> device_arena;
  if (absl::StartsWith(options.address, "unix:") && !options.force_inline) {
    const HostArenaLayout layout =
        HostArenaLayout::For(options.arena_slots, options.max_tokens_per_call, config);
    MOE_ASSIGN_OR_RETURN(arena, SharedArena::Create(layout.total));
    if (OnCudaDevice(options)) {
      // Created once and kept for the client's life: a worker may hold it mapped.
      // Its own id: a call staged for one arena can never be served from the other.
      auto made = backend::DeviceIpcArena::Create(*options.device, arena->size(), NewArenaId());
      if (made.ok()) {
        device_arena = *std::move(made);
      } else {
        MOE_LOG(WARNING) << "no device activation arena on " << options.device->name() << " ("
                         << made.status() << "); staging through shared host memory";
      }
    }
  }
  std::vector<std::unique_ptr<backend::Stream>> streams;
  if (OnCudaDevice(options)) {
    MOE_RETURN_IF_ERROR(options.device->BindThread());
    for (int s = 0; s < options.arena_slots; ++s) {
      MOE_ASSIGN_OR_RETURN(std::unique_ptr<backend::Stream> stream, options.device->CreateStream());
      streams.push_back(std::move(stream));
    }
  }
  return std::unique_ptr<WorkerClient>(new WorkerClient(options, config, std::move(channel),
                                                        std::move(arena), std::move(device_arena),
                                                        std::move(streams)));
}

WorkerClient::WorkerClient(const WorkerClientOptions& options, const ModelConfig& config,
                           std::shared_ptr<grpc::Channel> channel, std::unique_ptr<SharedArena> arena,
                           std::unique_ptr<backend::DeviceIpcArena> device_arena,
                           std::vector<std::unique_ptr<backend::Stream>> streams)
    : options_(options),
      config_(config),
      channel_(std::move(channel)),
      stub_(v1::ExpertWorker::NewStub(channel_)),
      arena_(std::move(arena)),
      device_arena_(std::move(device_arena)),
      streams_(std::move(streams)),
      layout_(HostArenaLayout::For(options.arena_slots, options.max_tokens_per_call, config)),
      slot_bytes_(layout_.slot_bytes),
      call_tokens_(options.max_tokens_per_call) {
  use_device_arena_ = device_arena_ != nullptr;
  staging_.resize(size_t(options.arena_slots));
  for (int s = 0; s < options.arena_slots; ++s) {
    free_slots_.push_back(s);
    ring_waits_.emplace_back(options.ring_wait);
  }
}

ActivationPath WorkerClient::path() const {
  if (arena_ == nullptr) return ActivationPath::kInline;
  return use_device_arena_ ? ActivationPath::kDeviceArena : ActivationPath::kHostArena;
}

absl::StatusOr<v1::AttachArenaResponse> WorkerClient::AttachRpc(
    const v1::AttachArenaRequest& request) {
  v1::AttachArenaResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(CallDeadline()));
  grpc::Status rpc = stub_->AttachArena(&context, request, &response);
  if (rpc.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    rpc = grpc::Status(grpc::StatusCode::UNAVAILABLE, "AttachArena got no answer; the worker is hung");
  }
  MOE_RETURN_IF_ERROR(Annotate(FromGrpcStatus(rpc), absl::StrCat("expert worker at ", options_.address)));
  return response;
}

absl::Status WorkerClient::CheckWorkerModel(const v1::AttachArenaResponse& response) const {
  // The worker holds the sparse layers only (ModelConfig::ExpertLayer).
  if (response.num_layers() != config_.num_expert_layers() ||
      response.num_experts() != config_.num_local_experts ||
      response.hidden_size() != config_.hidden_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        "expert worker at ", options_.address, " serves ", response.num_layers(), " layers x ",
        response.num_experts(), " experts of width ", response.hidden_size(),
        ", not this model's ", config_.num_expert_layers(), " x ", config_.num_local_experts, " x ",
        config_.hidden_size));
  }
  return absl::OkStatus();
}

v1::AttachArenaRequest WorkerClient::HostArenaRequest() const {
  v1::AttachArenaRequest request;
  request.mutable_shared_memory()->set_pid(static_cast<uint32_t>(::getpid()));
  request.mutable_shared_memory()->set_fd(arena_->fd());
  request.set_size_bytes(arena_->size());
  request.set_arena_id(arena_->id());
  request.set_max_tokens_per_call(static_cast<uint32_t>(options_.max_tokens_per_call));
  return request;
}

absl::Status WorkerClient::OfferRing(v1::AttachArenaRequest* request) {
  if (!options_.use_ring) return absl::OkStatus();
  // A fresh epoch: whatever an earlier worker left in the ring is void.
  MOE_ASSIGN_OR_RETURN(const ring::Ring ring, RingView());
  ring.Reset(++ring_epoch_);
  request->mutable_ring()->set_offset(layout_.ring_offset);
  request->mutable_ring()->set_slots(static_cast<uint32_t>(options_.arena_slots));
  request->mutable_ring()->set_epoch(ring_epoch_);
  if (request->has_cuda_ipc()) {
    // The ring's words are host memory: it stays in the host arena, beside the device
    // arena that holds x and out.
    v1::RingHostArena* host = request->mutable_ring_arena();
    host->mutable_shared_memory()->set_pid(static_cast<uint32_t>(::getpid()));
    host->mutable_shared_memory()->set_fd(arena_->fd());
    host->set_size_bytes(arena_->size());
    host->set_arena_id(arena_->id());
  }
  return absl::OkStatus();
}

void WorkerClient::AdoptRing(const v1::AttachArenaResponse& response) {
  if (!options_.use_ring || !response.ring_served()) return;
  // Without a watch on the worker a call in the ring could not tell a dead worker from
  // a slow one before its deadline: then RPCs it is.
  absl::StatusOr<std::unique_ptr<ProcessWatch>> watch = ProcessWatch::Open(response.worker_pid());
  if (watch.ok()) {
    worker_watch_ = *std::move(watch);
    ring_active_ = true;
  } else {
    MOE_LOG(WARNING) << "not using the activation ring: " << watch.status().message();
  }
}

absl::Status WorkerClient::Attach() {
  ring_active_ = false;
  worker_watch_.reset();
  if (use_device_arena_) {
    const backend::DeviceIpcHandle& handle = device_arena_->handle();
    v1::AttachArenaRequest request;
    v1::CudaIpcHandle* cuda = request.mutable_cuda_ipc();
    cuda->set_ipc_mem_handle(handle.ipc_mem_handle);
    cuda->set_device(handle.device);
    cuda->set_pci_bus_id(handle.pci_bus_id);
    cuda->set_exporter_pid(handle.exporter_pid);
    request.set_size_bytes(handle.size_bytes);
    request.set_arena_id(device_arena_->id());
    request.set_max_tokens_per_call(static_cast<uint32_t>(options_.max_tokens_per_call));
    MOE_RETURN_IF_ERROR(OfferRing(&request));
    const absl::StatusOr<v1::AttachArenaResponse> attached = AttachRpc(request);
    if (attached.ok()) {
      MOE_RETURN_IF_ERROR(CheckWorkerModel(*attached));
      AdoptCallTokens(*attached);
      AdoptRing(*attached);
      if (!path_logged_.exchange(true)) {
        MOE_LOG(INFO) << "activations cross to the expert worker " << PathName(path())
                      << (ring_active_ ? ", calls through the activation ring" : ", calls by RPC");
      }
      return absl::OkStatus();
    }
    // A worker on another GPU or on the CPU says so; anything else is an error.
    if (!absl::IsFailedPrecondition(attached.status())) return attached.status();
    MOE_LOG(WARNING) << "the expert worker refused the device arena (" << attached.status().message()
                     << "); activations go through shared host memory from now on";
    use_device_arena_ = false;
    path_logged_ = false;
  }
  v1::AttachArenaRequest request = HostArenaRequest();
  MOE_RETURN_IF_ERROR(OfferRing(&request));
  MOE_ASSIGN_OR_RETURN(const v1::AttachArenaResponse response, AttachRpc(request));
  MOE_RETURN_IF_ERROR(CheckWorkerModel(response));
  AdoptCallTokens(response);
  AdoptRing(response);
  if (!path_logged_.exchange(true)) {
    MOE_LOG(INFO) << "activations cross to the expert worker " << PathName(path())
                  << (ring_active_ ? ", calls through the activation ring" : ", calls by RPC");
  }
  return absl::OkStatus();
}

absl::StatusOr<ring::Ring> WorkerClient::RingView() const {
  MOE_ASSIGN_OR_RETURN(void* base,
                       arena_->At(layout_.ring_offset,
                                  ring::RingBytes(static_cast<uint32_t>(options_.arena_slots)),
                                  alignof(ring::RingHeader)));
  return ring::Ring::At(base, static_cast<uint32_t>(options_.arena_slots));
}

void WorkerClient::AdoptCallTokens(const v1::AttachArenaResponse& response) {
  // An older worker answers 0: it takes what we asked for.
  const int64_t accepted = response.max_tokens_per_call() == 0
                               ? options_.max_tokens_per_call
                               : std::min<int64_t>(response.max_tokens_per_call(),
                                                   options_.max_tokens_per_call);
  call_tokens_.store(std::max<int64_t>(accepted, 1));
}

absl::Status WorkerClient::EnsureAttached() {
  if (arena_ == nullptr) return absl::OkStatus();
  std::lock_guard<std::mutex> lock(attach_mu_);
  if (attached_) return absl::OkStatus();
  MOE_RETURN_IF_ERROR(Attach());
  attached_ = true;
  return absl::OkStatus();
}

absl::StatusOr<int> WorkerClient::AcquireSlot() {
  std::unique_lock<std::mutex> lock(slot_mu_);
  slot_free_.wait(lock, [&] {
    return !free_slots_.empty() || (slots_in_use_ == 0 && !retired_slots_.empty());
  });
  if (free_slots_.empty()) {
    // Every slot was retired by a call the worker may still answer into. Nobody holds a
    // slot now, so the arena can be replaced: the hung worker's late writes land in the
    // old pages, which only its mapping keeps alive.
    MOE_RETURN_IF_ERROR(RenewArena());
    free_slots_.swap(retired_slots_);
  }
  const int slot = free_slots_.back();
  free_slots_.pop_back();
  ++slots_in_use_;
  return slot;
}

absl::Status WorkerClient::RenewArena() {
  std::lock_guard<std::mutex> lock(attach_mu_);
  if (use_device_arena_) {
    // A device arena is kept for the client's life (the worker may map it): leave it
    // and stage through a fresh host arena from now on.
    MOE_LOG(WARNING) << "every device arena slot was retired after timed-out calls; "
                        "activations go through shared host memory from now on";
    use_device_arena_ = false;
  }
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<SharedArena> fresh, SharedArena::Create(arena_->size()));
  MOE_LOG(WARNING) << "every activation slot was retired after timed-out RunExperts calls; "
                      "replaced arena " << arena_->id() << " with " << fresh->id();
  arena_ = std::move(fresh);
  attached_ = false;
  ring_active_ = false;
  return absl::OkStatus();
}

void WorkerClient::ReleaseSlot(int slot, bool retire) {
  {
    std::lock_guard<std::mutex> lock(slot_mu_);
    --slots_in_use_;
    (retire ? retired_slots_ : free_slots_).push_back(slot);
  }
  slot_free_.notify_all();
}

// A lent batch: an arena slot held from Lend to destruction, and where x and out are.
class WorkerClient::Lease : public ActivationBatch {
 public:
  Lease(WorkerClient* client, int slot, MemoryPlace place, float* x, float* out, int64_t rows,
        int64_t hidden, const ActivationArena* arena, uint64_t x_offset, uint64_t out_offset)
      : ActivationBatch(client, place, x, out, rows, hidden),
        client_(client),
        slot_(slot),
        arena_(arena),
        x_offset_(x_offset),
        out_offset_(out_offset) {}
  ~Lease() override { client_->ReleaseSlot(slot_, retire_); }

  int slot() const { return slot_; }
  // Set when a call timed out: the worker may still write into the slot.
  bool retired() const { return retire_; }
  bool* retire() { return &retire_; }
  // Where rows [start, ..) of x and out are in `arena`: in the lease's own memory when it
  // lies there (nothing to copy), else in the slot's staging rows (*staged = true).
  void PlaceIn(const ActivationArena* arena, int64_t start, uint64_t* x_offset,
               uint64_t* out_offset, bool* staged) const {
    const uint64_t row_bytes = uint64_t(x().size() / size_t(rows())) * sizeof(float);
    *staged = arena == nullptr || arena != arena_;
    if (*staged) {
      *x_offset = uint64_t(slot_) * client_->slot_bytes_;
      *out_offset = *x_offset + client_->slot_bytes_ / 2;
    } else {
      *x_offset = x_offset_ + uint64_t(start) * row_bytes;
      *out_offset = out_offset_ + uint64_t(start) * row_bytes;
    }
  }

 private:
  WorkerClient* client_;
  int slot_;
  bool retire_ = false;
  const ActivationArena* arena_;  // null: x and out are the slot's staging memory
  uint64_t x_offset_, out_offset_;
};

MemoryPlace WorkerClient::CallerPlace() const {
  return OnCudaDevice(options_) ? MemoryPlace::On(*options_.device) : MemoryPlace::Host();
}

absl::StatusOr<std::unique_ptr<ActivationBatch>> WorkerClient::Lend(int64_t rows) {
  const int64_t h = config_.hidden_size;
  MOE_ASSIGN_OR_RETURN(const uint64_t bytes, ActivationBytes(rows, h));
  const MemoryPlace place = CallerPlace();
  if (!place.is_host()) MOE_RETURN_IF_ERROR(options_.device->BindThread());
  MOE_ASSIGN_OR_RETURN(const int slot, AcquireSlot());
  // Until a lease holds the slot, every return gives it back.
  std::unique_ptr<Lease> lease;
  // A batch that fits a slot lives in it when the caller computes on the arena's memory:
  // the host arena for a CPU caller, the device arena for a CUDA caller.
  const ActivationArena* arena = nullptr;
  if (rows <= options_.max_tokens_per_call) {
    if (place.is_host() && arena_ != nullptr) {
      arena = arena_.get();
    } else if (!place.is_host() && use_device_arena_) {
      arena = device_arena_.get();
    }
  }
  const uint64_t x_offset = uint64_t(slot) * slot_bytes_, out_offset = x_offset + slot_bytes_ / 2;
  if (arena != nullptr) {
    absl::StatusOr<void*> x = arena->At(x_offset, bytes);
    absl::StatusOr<void*> out = arena->At(out_offset, bytes);
    if (!x.ok() || !out.ok()) {
      ReleaseSlot(slot, false);
      return x.ok() ? out.status() : x.status();
    }
    lease = std::make_unique<Lease>(this, slot, place, static_cast<float*>(*x),
                                    static_cast<float*>(*out), rows, h, arena, x_offset,
                                    out_offset);
  } else {
    // Inline tensors, a batch larger than a slot, or an arena the caller cannot compute
    // on: the slot's own memory, staged to the worker chunk by chunk.
    Staging& staging = staging_[size_t(slot)];
    if (place.is_host()) {
      if (staging.host.size() < 2 * bytes / sizeof(float)) staging.host.resize(2 * bytes / sizeof(float));
      float* base = staging.host.data();
      lease = std::make_unique<Lease>(this, slot, place, base, base + rows * h, rows, h,
                                      nullptr, 0, 0);
    } else {
      if (staging.device == nullptr || staging.device->size() < 2 * bytes) {
        staging.device.reset();
        absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> made =
            options_.device->Allocate(2 * bytes);
        if (!made.ok()) {
          ReleaseSlot(slot, false);
          return absl::Status(made.status().code(),
                              absl::StrCat("an activation batch of ", rows, " rows on ",
                                           options_.device->name(), ": ", made.status().message()));
        }
        staging.device = *std::move(made);
      }
      float* base = staging.device->as<float>();
      lease = std::make_unique<Lease>(this, slot, place, base, base + rows * h, rows, h,
                                      nullptr, 0, 0);
    }
  }
  return std::unique_ptr<ActivationBatch>(std::move(lease));
}

absl::Status WorkerClient::RunExperts(int layer, ActivationBatch& batch,
                                      absl::Span<const int32_t> ids, absl::Span<const float> weights,
                                      ExpertCallStats* stats) {
  if (batch.lender() != this) {
    return absl::InvalidArgumentError("RunExperts: the activation batch was lent by another backend");
  }
  auto& lease = static_cast<Lease&>(batch);
  if (lease.retired()) {
    return absl::FailedPreconditionError(
        "RunExperts: a lost worker may still write into this activation batch; lend a new one");
  }
  const int64_t n = batch.rows();
  if (ids.empty() || ids.size() % size_t(n) != 0 || weights.size() != ids.size()) {
    return absl::InvalidArgumentError(absl::StrCat("RunExperts: ", ids.size(), " ids and ",
                                                   weights.size(), " weights for ", n, " rows"));
  }
  const int64_t k = static_cast<int64_t>(ids.size()) / n;
  if (!CallerPlace().is_host()) MOE_RETURN_IF_ERROR(options_.device->BindThread());
  const int64_t chunk = call_tokens_.load();
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t m = std::min(chunk, n - start);
    MOE_RETURN_IF_ERROR(RunChunk(lease, layer, start, m, ids.subspan(start * k, m * k),
                                 weights.subspan(start * k, m * k), stats));
  }
  return absl::OkStatus();
}

absl::Status WorkerClient::Copy(int slot, void* dst, MemoryPlace dst_place, const void* src,
                                MemoryPlace src_place, size_t bytes) {
  staged_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  if (dst_place.is_host() && src_place.is_host()) {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  // Device memory here is the caller's device's (its own, or the device arena on it).
  if (streams_.empty()) return absl::InternalError("a device copy without a CUDA device");
  backend::Stream& stream = *streams_[size_t(slot)];
  backend::Device& device = *options_.device;
  if (dst_place.is_host()) {
    MOE_RETURN_IF_ERROR(device.CopyToHost(dst, src, bytes, stream));
  } else if (src_place.is_host()) {
    MOE_RETURN_IF_ERROR(device.CopyToDevice(dst, src, bytes, stream));
  } else {
    MOE_RETURN_IF_ERROR(device.CopyOnDevice(dst, src, bytes, stream));
  }
  // The worker reads the input once the request arrives; the caller reads out on return.
  return stream.Synchronize();
}

const ActivationArena* WorkerClient::ArenaOf(ActivationPath path) const {
  switch (path) {
    case ActivationPath::kInline: return nullptr;
    case ActivationPath::kHostArena: return arena_.get();
    case ActivationPath::kDeviceArena: return device_arena_.get();
  }
  return nullptr;
}

MemoryPlace WorkerClient::ArenaPlace(ActivationPath path) const {
  return path == ActivationPath::kDeviceArena ? MemoryPlace::On(*options_.device)
                                              : MemoryPlace::Host();
}

absl::Status WorkerClient::StageInput(Lease& lease, ActivationPath path, int64_t start, int64_t n,
                                      ChunkSlices* slices) {
  const int64_t h = config_.hidden_size;
  const uint64_t bytes = uint64_t(n * h) * sizeof(float);
  const float* x = lease.x().data() + start * h;
  slices->bytes = bytes;
  slices->arena = ArenaOf(path);
  if (slices->arena == nullptr) {  // inline: the request carries the rows
    slices->staged = true;
    return absl::OkStatus();
  }
  lease.PlaceIn(slices->arena, start, &slices->x_offset, &slices->out_offset, &slices->staged);
  if (!slices->staged) return absl::OkStatus();
  MOE_ASSIGN_OR_RETURN(void* arena_x, slices->arena->At(slices->x_offset, bytes));
  return Copy(lease.slot(), arena_x, ArenaPlace(path), x, lease.place(), bytes);
}

absl::Status WorkerClient::ReadOutput(Lease& lease, ActivationPath path, int64_t start,
                                      const ChunkSlices& slices, const std::string* inline_out) {
  float* out = lease.out().data() + start * config_.hidden_size;
  if (slices.arena == nullptr) {
    if (inline_out == nullptr || inline_out->size() != slices.bytes) {
      return absl::InternalError(absl::StrCat("expert worker returned ",
                                              inline_out ? inline_out->size() : 0,
                                              " bytes, expected ", slices.bytes));
    }
    return Copy(lease.slot(), out, lease.place(), inline_out->data(), MemoryPlace::Host(),
                slices.bytes);
  }
  if (!slices.staged) return absl::OkStatus();  // the worker wrote it in place
  MOE_ASSIGN_OR_RETURN(void* arena_out, slices.arena->At(slices.out_offset, slices.bytes));
  return Copy(lease.slot(), out, lease.place(), arena_out, ArenaPlace(path), slices.bytes);
}

absl::Status WorkerClient::RpcCall(Lease& lease, ActivationPath path, int64_t start,
                                   v1::RunExpertsRequest* request, ExpertCallStats* figures) {
  ChunkSlices slices;
  MOE_RETURN_IF_ERROR(StageInput(lease, path, start, request->num_tokens(), &slices));
  if (slices.arena == nullptr) {
    const float* x = lease.x().data() + start * config_.hidden_size;
    if (lease.place().is_host()) {
      request->set_input_inline(x, slices.bytes);
      staged_bytes_.fetch_add(slices.bytes, std::memory_order_relaxed);
    } else {
      std::string* staged = request->mutable_input_inline();
      staged->resize(slices.bytes);
      MOE_RETURN_IF_ERROR(
          Copy(lease.slot(), staged->data(), MemoryPlace::Host(), x, lease.place(), slices.bytes));
    }
  } else {
    request->set_arena_id(slices.arena->id());
    request->mutable_input_slice()->set_offset(slices.x_offset);
    request->mutable_input_slice()->set_size_bytes(slices.bytes);
    request->mutable_output_slice()->set_offset(slices.out_offset);
    request->mutable_output_slice()->set_size_bytes(slices.bytes);
  }
  v1::RunExpertsResponse response;
  grpc::ClientContext context;
  // A worker that stops answering is lost like a dead one, within the grace.
  context.set_deadline(absl::ToChronoTime(CallDeadline()));
  const absl::Time sent = absl::Now();
  const auto t0 = std::chrono::steady_clock::now();
  grpc::Status rpc = stub_->RunExperts(&context, *request, &response);
  figures->rpc_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (rpc.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
      rpc.error_code() == grpc::StatusCode::CANCELLED) {
    // The worker may still write this call's output into the slot: never reuse it.
    *lease.retire() = true;
  }
  if (rpc.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    // Hung, not slow: the grace counts from when the call went out, and the caller
    // sees UNAVAILABLE (DEADLINE_EXCEEDED belongs to its client's own deadline).
    NoteWorkerLostSince(sent);
    rpc = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                       absl::StrCat("RunExperts got no answer within ",
                                    absl::ToDoubleSeconds(CallTimeout()),
                                    " s; the worker is hung (", rpc.error_message(), ")"));
  }
  MOE_RETURN_IF_ERROR(FromGrpcStatus(rpc));
  MOE_RETURN_IF_ERROR(ReadOutput(lease, path, start, slices, &response.output_inline()));
  figures->hits = response.cache_hits();
  figures->misses = response.cache_misses();
  figures->prefetch_hits = response.prefetch_hits();
  figures->stall_s = response.load_wait_s();
  figures->compute_s = response.compute_s();
  figures->calls = 1;
  return absl::OkStatus();
}

absl::Status WorkerClient::RingCall(Lease& lease, ActivationPath path, int layer, int64_t start,
                                    int64_t n,
                                    absl::Span<const int32_t> ids, absl::Span<const float> weights,
                                    ExpertCallStats* figures) {
  std::shared_ptr<ProcessWatch> watch;
  uint32_t epoch;
  {
    std::lock_guard<std::mutex> lock(attach_mu_);
    watch = worker_watch_;
    epoch = ring_epoch_;
  }
  if (watch == nullptr) return absl::UnavailableError("the expert worker's ring is gone");
  MOE_ASSIGN_OR_RETURN(const ring::Ring ring, RingView());
  const int slot = lease.slot();
  ChunkSlices slices;
  // On the device arena, StageInput's copy (if any) has synchronised the slot's stream and
  // the model synchronised its own before this call: x is written before the doorbell.
  MOE_RETURN_IF_ERROR(StageInput(lease, path, start, n, &slices));
  const uint64_t route_bytes = ids.size() * sizeof(int32_t);
  ring::RingRequest request;
  request.epoch = epoch;
  request.layer = static_cast<uint32_t>(layer);
  request.num_tokens = static_cast<uint32_t>(n);
  request.experts_per_token = static_cast<uint32_t>(ids.size() / n);
  request.on_device = path == ActivationPath::kDeviceArena ? 1 : 0;
  request.x_offset = slices.x_offset;
  request.out_offset = slices.out_offset;
  request.ids_offset = layout_.routes_offset + uint64_t(slot) * layout_.route_bytes;
  request.weights_offset = request.ids_offset + layout_.route_bytes / 2;
  MOE_ASSIGN_OR_RETURN(void* ids_at, arena_->At(request.ids_offset, route_bytes, 4));
  MOE_ASSIGN_OR_RETURN(void* weights_at, arena_->At(request.weights_offset, route_bytes, 4));
  std::memcpy(ids_at, ids.data(), route_bytes);  // int32 ids >= 0 read as uint32
  std::memcpy(weights_at, weights.data(), route_bytes);

  const absl::Time sent = absl::Now();
  const absl::Time deadline = CallDeadline();
  const auto t0 = std::chrono::steady_clock::now();
  ring.Post(static_cast<uint32_t>(slot), request);
  ring::SpinPolicy& wait = ring_waits_[size_t(slot)];
  absl::Duration spin = wait.NextSpin();
  bool caught = false;
  // Checked before each wait too: a ring stopped before our post would never wake us.
  while (!ring.Stopped(epoch) &&
         !ring.AwaitDone(static_cast<uint32_t>(slot), spin,
                         std::min(kRingWatchInterval, deadline - absl::Now()), &caught)) {
    spin = absl::ZeroDuration();
    if (ring.Stopped(epoch)) break;
    if (!watch->Alive()) {
      // Nobody will answer: the next attach resets the ring under a new epoch.
      return absl::UnavailableError(absl::StrCat("expert worker pid ", watch->pid(),
                                                 " exited with a call in the ring"));
    }
    if (absl::Now() >= deadline) {
      *lease.retire() = true;  // it may still answer into this slot
      NoteWorkerLostSince(sent);
      return absl::UnavailableError(absl::StrCat("a ring call got no answer within ",
                                                 absl::ToDoubleSeconds(CallTimeout()),
                                                 " s; the worker is hung"));
    }
  }
  if (ring.entry(static_cast<uint32_t>(slot)).state.load(std::memory_order_acquire) != ring::kDone) {
    // Stopped without taking the call: the worker attached another arena or shuts down.
    return absl::FailedPreconditionError("the expert worker stopped serving this ring");
  }
  const auto waited = std::chrono::steady_clock::now() - t0;
  wait.Record(absl::FromChrono(waited), caught);
  figures->rpc_s = std::chrono::duration<double>(waited).count();
  const ring::RingReply reply = ring.entry(static_cast<uint32_t>(slot)).reply;
  ring.Release(static_cast<uint32_t>(slot));
  MOE_RETURN_IF_ERROR(ring::StatusOf(reply));
  // kDone is stored only after the worker's Run returned with out written on its device.
  MOE_RETURN_IF_ERROR(ReadOutput(lease, path, start, slices, nullptr));
  figures->hits = reply.hits;
  figures->misses = reply.misses;
  figures->prefetch_hits = reply.prefetch_hits;
  figures->stall_s = reply.load_wait_s;
  figures->compute_s = reply.compute_s;
  figures->calls = 1;
  figures->ring_calls = 1;
  return absl::OkStatus();
}

absl::Status WorkerClient::RunChunk(Lease& lease, int layer, int64_t start, int64_t n,
                                    absl::Span<const int32_t> ids, absl::Span<const float> weights,
                                    ExpertCallStats* stats) {
  v1::RunExpertsRequest request;
  request.set_layer(layer);
  request.set_num_tokens(static_cast<uint32_t>(n));
  request.set_experts_per_token(static_cast<uint32_t>(ids.size() / n));
  for (int32_t id : ids) request.add_expert_ids(static_cast<uint32_t>(id));
  for (float w : weights) request.add_weights(w);

  // A restarted worker has lost the arena: attach again and retry, once.
  for (int attempt = 0;; ++attempt) {
    if (absl::Status attached = EnsureAttached(); !attached.ok()) {
      if (absl::IsUnavailable(attached)) NoteWorker(false);
      return attached;
    }
    // Chosen after attaching: a worker may just have refused the device arena or the ring.
    const ActivationPath path = this->path();
    // The ring's route area holds max_tokens_per_call x num_experts_per_tok routes.
    // (The ring lies in the host arena; x and out in the host or the device arena.)
    const bool by_ring = path != ActivationPath::kInline && ring_active_.load() &&
                         2 * ids.size() * sizeof(int32_t) <= layout_.route_bytes;
    ExpertCallStats figures;
    absl::Status status = by_ring ? RingCall(lease, path, layer, start, n, ids, weights, &figures)
                                  : RpcCall(lease, path, start, &request, &figures);
    if (status.ok()) {
      status = CheckCallFigures(figures, config_.num_local_experts);
    }
    if (absl::IsFailedPrecondition(status) && arena_ != nullptr && attempt == 0) {
      std::lock_guard<std::mutex> lock(attach_mu_);
      attached_ = false;
      continue;
    }
    if (absl::IsUnavailable(status)) {
      MOE_LOG(WARNING) << "expert worker at " << options_.address << " lost: " << status.message();
      {
        std::lock_guard<std::mutex> lock(attach_mu_);
        attached_ = false;  // whatever answers next may be a new worker
      }
      NoteWorker(false);
    }
    MOE_RETURN_IF_ERROR(Annotate(status, absl::StrCat("expert worker at ", options_.address)));
    if (stats != nullptr) *stats += figures;
    NoteWorker(true);
    std::lock_guard<std::mutex> lock(stats_mu_);
    stats_ += figures;
    return absl::OkStatus();
  }
}

void WorkerClient::Prefetch(int layer, absl::Span<const int32_t> experts) {
  struct Call {
    grpc::ClientContext context;
    v1::PrefetchRequest request;
    v1::PrefetchResponse response;
  };
  {
    std::lock_guard<std::mutex> lock(prefetch_mu_);
    ++prefetches_in_flight_;
  }
  auto* call = new Call;
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  call->request.set_layer(static_cast<uint32_t>(layer));
  for (int32_t e : experts) call->request.add_expert_ids(static_cast<uint32_t>(e));
  stub_->async()->Prefetch(&call->context, &call->request, &call->response,
                           [this, call](grpc::Status) {
                             delete call;
                             std::lock_guard<std::mutex> lock(prefetch_mu_);
                             if (--prefetches_in_flight_ == 0) prefetch_done_.notify_all();
                           });
}

WorkerClient::~WorkerClient() {
  {
    std::unique_lock<std::mutex> lock(prefetch_mu_);
    prefetch_done_.wait(lock, [this] { return prefetches_in_flight_ == 0; });
  }
  uint64_t waits = 0, spins = 0, caught = 0;
  for (const ring::SpinPolicy& wait : ring_waits_) {
    waits += wait.waits();
    spins += wait.spins();
    caught += wait.caught();
  }
  if (waits > 0) {
    MOE_LOG(INFO) << "ring calls waited for their reply " << waits << " times, spun " << spins
                  << " (caught " << caught << ")";
  }
  // Freeing exported memory that another process still maps is undefined in CUDA: point
  // the worker at the host arena first (it closes its mapping of ours on re-attach). A
  // worker that cannot be told keeps the allocation alive until this process exits.
  if (use_device_arena_ && attached_ && !AttachRpc(HostArenaRequest()).ok()) {
    MOE_LOG(WARNING) << "the expert worker did not release the device arena; keeping it";
    (void)device_arena_.release();
  }
}

bool WorkerClient::WorkerServing(absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout));
  v1::GetStatsRequest request;
  v1::WorkerStats response;
  const bool answered = stub_->GetStats(&context, request, &response).ok();
  NoteWorker(answered);
  return answered;
}

absl::Duration WorkerClient::CallTimeout() const {
  return std::max(absl::Milliseconds(100), std::min(options_.rpc_timeout, options_.worker_grace));
}

absl::Time WorkerClient::CallDeadline() {
  const absl::Time now = absl::Now();
  absl::Time deadline = now + CallTimeout();
  std::lock_guard<std::mutex> lock(lost_mu_);
  // While the worker is away, no call outlives the grace that is already running.
  if (lost_since_) deadline = std::min(deadline, std::max(*lost_since_ + options_.worker_grace,
                                                          now + absl::Milliseconds(50)));
  return deadline;
}

void WorkerClient::NoteWorkerLostSince(absl::Time when) {
  std::lock_guard<std::mutex> lock(lost_mu_);
  if (!lost_since_ || *lost_since_ > when) lost_since_ = when;
}

void WorkerClient::NoteWorker(bool answered) {
  std::lock_guard<std::mutex> lock(lost_mu_);
  if (answered) {
    lost_since_.reset();
  } else if (!lost_since_) {
    lost_since_ = absl::Now();
  }
}

absl::Status WorkerClient::AwaitRecovery(const std::function<bool()>& cancelled) {
  absl::Time deadline;
  {
    std::lock_guard<std::mutex> lock(lost_mu_);
    if (!lost_since_) lost_since_ = absl::Now();
    deadline = *lost_since_ + options_.worker_grace;
  }
  const absl::Time start = absl::Now();
  while (true) {
    if (cancelled && cancelled()) {
      return absl::CancelledError("generation cancelled while waiting for the expert worker");
    }
    const absl::Duration left = deadline - absl::Now();
    if (WorkerServing(std::clamp(left, absl::Milliseconds(20), absl::Milliseconds(200)))) {
      MOE_LOG(INFO) << "expert worker at " << options_.address << " answers again after "
                    << absl::ToDoubleSeconds(absl::Now() - start) << " s; redoing the layer step";
      std::lock_guard<std::mutex> lock(stats_mu_);
      ++recoveries_;
      return absl::OkStatus();
    }
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(absl::StrCat(
          "no expert worker answered at ", options_.address, " within the grace of ",
          absl::ToDoubleSeconds(options_.worker_grace), " s (--worker-grace-s)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

ExpertCallStats WorkerClient::Stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

uint64_t WorkerClient::recoveries() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return recoveries_;
}

}  // namespace moe::coordinator
