// The activation arena's attach rules on the CPU: a CUDA IPC handle offered to a worker
// that does not compute on a GPU is refused FAILED_PRECONDITION naming why (and the
// attached arena stays), slices outside the arena are refused before any memory is
// touched, and a WorkerClient on a device that cannot export an arena stages its
// activations through shared host memory and gets the in-process backend's results.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/backend/device.h"
#include "common/backend/device_ipc_arena.h"
#include "common/model_dir.h"
#include "common/shared_arena.h"
#include "coordinator/worker_client.h"
#include "expert_worker/expert_runner.h"
#include "expert_worker/expert_store.h"
#include "expert_worker/slot_cache.h"
#include "expert_worker/worker_service.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace moe::expert_worker {
namespace {

class WorkerServiceArenaTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = ModelDir::Open(std::string(MOE_SOURCE_DIR) + "/models/kjv-moe");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = new ModelDir(*std::move(dir));
    auto store = ExpertStore::Load(*dir_->checkpoint, dir_->config);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = store->release();
    auto policy = MakeCachePolicy("lru");
    ASSERT_TRUE(policy.ok());
    auto cache = SlotCache::Create(store_, store_->num_experts(), *std::move(policy));
    ASSERT_TRUE(cache.ok()) << cache.status();
    cache_ = cache->release();
  }
  static void TearDownTestSuite() {
    delete cache_;
    delete store_;
    delete dir_;
  }

  static v1::AttachArenaRequest CudaAttach(uint64_t size) {
    v1::AttachArenaRequest request;
    request.mutable_cuda_ipc()->set_ipc_mem_handle(std::string(64, '\x01'));
    request.mutable_cuda_ipc()->set_pci_bus_id("0000:01:00.0");
    request.mutable_cuda_ipc()->set_exporter_pid(static_cast<uint32_t>(::getpid()));
    request.set_size_bytes(size);
    request.set_arena_id("0123456789abcdef");
    return request;
  }

  static v1::AttachArenaRequest HostAttach(const SharedArena& arena) {
    v1::AttachArenaRequest request;
    request.mutable_shared_memory()->set_pid(static_cast<uint32_t>(::getpid()));
    request.mutable_shared_memory()->set_fd(arena.fd());
    request.set_size_bytes(arena.size());
    request.set_arena_id(arena.id());
    return request;
  }

  // One token through layer 0, its x in the arena at 0 and out right after it.
  static v1::RunExpertsRequest OneToken(const SharedArena& arena, uint64_t in, uint64_t out) {
    const uint64_t bytes = dir_->config.hidden_size * sizeof(float);
    v1::RunExpertsRequest request;
    request.set_layer(0);
    request.set_num_tokens(1);
    request.set_experts_per_token(2);
    request.add_expert_ids(0);
    request.add_expert_ids(1);
    request.add_weights(0.75f);
    request.add_weights(0.25f);
    request.mutable_input_slice()->set_offset(in);
    request.mutable_input_slice()->set_size_bytes(bytes);
    request.mutable_output_slice()->set_offset(out);
    request.mutable_output_slice()->set_size_bytes(bytes);
    request.set_arena_id(arena.id());
    return request;
  }

  static ModelDir* dir_;
  static ExpertStore* store_;
  static SlotCache* cache_;
};

ModelDir* WorkerServiceArenaTest::dir_ = nullptr;
ExpertStore* WorkerServiceArenaTest::store_ = nullptr;
SlotCache* WorkerServiceArenaTest::cache_ = nullptr;

TEST_F(WorkerServiceArenaTest, CpuWorkerRefusesACudaHandleNamingWhyAndKeepsItsArena) {
  auto cpu = backend::OpenDevice("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  for (backend::Device* device : {static_cast<backend::Device*>(nullptr), cpu->get()}) {
    WorkerService service(cache_, device);
    auto arena = SharedArena::Create(1 << 16);
    ASSERT_TRUE(arena.ok()) << arena.status();
    v1::AttachArenaResponse response;
    const v1::AttachArenaRequest host = HostAttach(**arena);
    ASSERT_TRUE(service.AttachArena(nullptr, &host, &response).ok());

    const v1::AttachArenaRequest cuda = CudaAttach(1 << 16);
    const grpc::Status refused = service.AttachArena(nullptr, &cuda, &response);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(refused.error_message().find("computes on cpu"), std::string::npos)
        << refused.error_message();
    EXPECT_NE(refused.error_message().find("cannot map a CUDA IPC arena"), std::string::npos);

    // The host arena is still attached and serves.
    const v1::WorkerStats stats = service.Stats();
    EXPECT_EQ(stats.arena_owner_pid(), uint32_t(::getpid()));
    EXPECT_FALSE(stats.arena_on_device());
    const uint64_t bytes = dir_->config.hidden_size * sizeof(float);
    v1::RunExpertsResponse run;
    const v1::RunExpertsRequest one = OneToken(**arena, 0, bytes);
    const grpc::Status ok = service.RunExperts(nullptr, &one, &run);
    EXPECT_TRUE(ok.ok()) << ok.error_message();
  }
}

TEST_F(WorkerServiceArenaTest, ADeviceArenaCannotBeMadeOrOpenedOnTheCpu) {
  auto cpu = backend::OpenDevice("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  auto made = backend::DeviceIpcArena::Create(**cpu, 1 << 16, "id");
  EXPECT_EQ(made.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(made.status().message().find("needs a CUDA device"), std::string::npos)
      << made.status();
  backend::DeviceIpcHandle handle;
  handle.ipc_mem_handle = std::string(64, '\0');
  handle.size_bytes = 1 << 16;
  auto opened = backend::DeviceIpcArena::Open(**cpu, handle, "id");
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(opened.status().message().find("cannot map a CUDA IPC arena"), std::string::npos)
      << opened.status();
}

TEST_F(WorkerServiceArenaTest, SlicesOutsideTheArenaAreRefusedBeforeAnyMemoryIsTouched) {
  WorkerService service(cache_);
  const uint64_t bytes = dir_->config.hidden_size * sizeof(float);
  auto arena = SharedArena::Create(4 * bytes);
  ASSERT_TRUE(arena.ok()) << arena.status();
  v1::AttachArenaResponse attached;
  const v1::AttachArenaRequest host = HostAttach(**arena);
  ASSERT_TRUE(service.AttachArena(nullptr, &host, &attached).ok());
  struct Case {
    const char* name;
    uint64_t in, out;
    grpc::StatusCode code;
  };
  for (const Case& c : {Case{"input past the end", 4 * bytes, 0, grpc::StatusCode::OUT_OF_RANGE},
                        Case{"output straddles the end", 0, 3 * bytes + 4, grpc::StatusCode::OUT_OF_RANGE},
                        Case{"offset wraps", ~uint64_t{0} - 3, 0, grpc::StatusCode::OUT_OF_RANGE},
                        Case{"unaligned input", 2, 2 * bytes, grpc::StatusCode::INVALID_ARGUMENT}}) {
    SCOPED_TRACE(c.name);
    v1::RunExpertsResponse response;
    const v1::RunExpertsRequest one = OneToken(**arena, c.in, c.out);
    const grpc::Status status = service.RunExperts(nullptr, &one, &response);
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_NE(status.error_message().find("slice"), std::string::npos) << status.error_message();
  }
  EXPECT_EQ(service.Stats().run_experts_calls(), 0u);
}

// A Device that calls itself CUDA but cannot export memory (ordinal -1: no such GPU, in
// any build): what a WorkerClient meets when cudaIpcGetMemHandle is not possible. Its
// memory is host memory, so the test can read it.
class UnexportableDevice : public backend::Device {
 public:
  explicit UnexportableDevice(std::unique_ptr<backend::Device> cpu) : cpu_(std::move(cpu)) {}
  backend::DeviceKind kind() const override { return backend::DeviceKind::kCuda; }
  std::string name() const override { return "unexportable"; }
  int ordinal() const override { return -1; }
  absl::Status BindThread() const override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> Allocate(size_t bytes) override {
    return cpu_->Allocate(bytes);
  }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> AllocatePinnedHost(size_t bytes) override {
    return cpu_->AllocatePinnedHost(bytes);
  }
  absl::StatusOr<std::unique_ptr<backend::DeviceBuffer>> RegisterHost(void* data, size_t bytes,
                                                                       bool read_only) override {
    return cpu_->RegisterHost(data, bytes, read_only);
  }
  absl::StatusOr<std::unique_ptr<backend::Stream>> CreateStream() override {
    ++streams;
    return cpu_->CreateStream();
  }
  absl::StatusOr<std::unique_ptr<backend::Event>> CreateEvent(bool interprocess) override {
    return cpu_->CreateEvent(interprocess);
  }
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes, backend::Stream& s) override {
    ++to_device;
    return cpu_->CopyToDevice(dst, src, bytes, s);
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes, backend::Stream& s) override {
    ++to_host;
    return cpu_->CopyToHost(dst, src, bytes, s);
  }
  absl::Status CopyOnDevice(void* dst, const void* src, size_t bytes, backend::Stream& s) override {
    return cpu_->CopyOnDevice(dst, src, bytes, s);
  }
  absl::Status Memset(void* dst, int value, size_t bytes, backend::Stream& s) override {
    return cpu_->Memset(dst, value, bytes, s);
  }
  absl::StatusOr<backend::MemoryInfo> Memory() const override { return cpu_->Memory(); }

  int streams = 0, to_device = 0, to_host = 0;

 private:
  std::unique_ptr<backend::Device> cpu_;
};

TEST_F(WorkerServiceArenaTest, ClientWithoutADeviceArenaStagesThroughHostMemory) {
  testing_util::ScopedTempDir tmp("worker_service_arena");
  const std::string address = "unix:" + (tmp.path() / "worker.sock").string();
  WorkerService service(cache_);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  auto cpu = backend::OpenDevice("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  UnexportableDevice device(*std::move(cpu));
  coordinator::WorkerClientOptions options;
  options.address = address;
  options.arena_slots = 2;
  options.max_tokens_per_call = 3;  // 5 tokens: two chunks
  options.device = &device;
  auto client = coordinator::WorkerClient::Create(options, dir_->config);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->path(), coordinator::ActivationPath::kHostArena);
  EXPECT_EQ(device.streams, 2);

  const int64_t n = 5, h = dir_->config.hidden_size;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> x(n * h);
  for (float& v : x) v = normal(rng);
  const std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7, 1, 6};
  const std::vector<float> weights = {0.6f, 0.4f, 0.5f, 0.5f, 0.9f, 0.1f, 0.3f, 0.7f, 0.2f, 0.8f};
  std::vector<float> out(n * h, -1.0f), expected(n * h);
  ASSERT_TRUE((*client)->RunExperts(0, x, n, ids, weights, absl::MakeSpan(out), nullptr).ok());
  // The same chunks in process (a batch's shape can change BLAS's rounding).
  InProcessBackend local(cache_);
  const absl::Span<const float> xs(x);
  const absl::Span<const int32_t> is(ids);
  const absl::Span<const float> ws(weights);
  ASSERT_TRUE(local.RunExperts(0, xs.subspan(0, 3 * h), 3, is.subspan(0, 6), ws.subspan(0, 6),
                               absl::MakeSpan(expected).subspan(0, 3 * h), nullptr).ok());
  ASSERT_TRUE(local.RunExperts(0, xs.subspan(3 * h), 2, is.subspan(6), ws.subspan(6),
                               absl::MakeSpan(expected).subspan(3 * h), nullptr).ok());
  EXPECT_EQ(out, expected);
  // Each chunk went device -> host arena -> device through the device's copies.
  EXPECT_EQ(device.to_host, 2);
  EXPECT_EQ(device.to_device, 2);
  EXPECT_FALSE(service.Stats().arena_on_device());
  client->reset();
  server->Shutdown();
}

}  // namespace
}  // namespace moe::expert_worker
