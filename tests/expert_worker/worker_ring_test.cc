// The activation ring between a WorkerClient and a WorkerService in one process (the
// worker's ring thread and the client's doorbell are the same code as across processes;
// tests/integration/ring_test.py kills real ones): calls through the ring give the RPC
// path's results, a worker that does not serve the ring is called by RPC, bad ring
// offers are refused at attach, and hostile entries written straight into the ring get
// an error reply while the ring serves on.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "common/activation_ring.h"
#include "common/model_dir.h"
#include "common/shared_arena.h"
#include "coordinator/worker_client.h"
#include "expert_worker/expert_runner.h"
#include "expert_worker/expert_stack.h"
#include "expert_worker/ring_server.h"
#include "expert_worker/slot_cache.h"
#include "expert_worker/worker_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace moe::expert_worker {
namespace {

using ::testing::HasSubstr;

class WorkerRingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = ModelDir::Open(std::string(MOE_SOURCE_DIR) + "/models/kjv-moe");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = new ModelDir(*std::move(dir));
    auto stack = ExpertStack::Load(*dir_, nullptr, {});  // every expert resident
    ASSERT_TRUE(stack.ok()) << stack.status();
    stack_ = stack->release();
    cache_ = &stack_->cache();
  }
  static void TearDownTestSuite() {
    delete stack_;
    delete dir_;
  }

  // A server for `service` (a WorkerService, or a stand-in) on a unix socket in tmp_.
  std::unique_ptr<grpc::Server> Serve(grpc::Service& service) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort(address_, grpc::InsecureServerCredentials());
    builder.RegisterService(&service);
    return builder.BuildAndStart();
  }

  std::unique_ptr<coordinator::WorkerClient> Client(bool use_ring, bool force_inline = false) {
    coordinator::WorkerClientOptions options;
    options.address = address_;
    options.force_inline = force_inline;
    options.arena_slots = 2;
    options.max_tokens_per_call = 3;  // 5 tokens: two chunks
    options.use_ring = use_ring;
    auto client = coordinator::WorkerClient::Create(options, dir_->config);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // Five tokens of layer 0 through `backend`.
  static std::vector<float> FiveTokens(ExpertBackend& backend) {
    const int64_t n = 5, h = dir_->config.hidden_size;
    std::mt19937 rng(11);
    std::normal_distribution<float> normal;
    std::vector<float> x(n * h);
    for (float& v : x) v = normal(rng);
    const std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7, 1, 6};
    const std::vector<float> weights = {0.6f, 0.4f, 0.5f, 0.5f, 0.9f, 0.1f, 0.3f, 0.7f, 0.2f, 0.8f};
    std::vector<float> out(n * h, -1.0f);
    const absl::Status s = RunExpertsFromHost(backend, 0, x, n, ids, weights, absl::MakeSpan(out), nullptr);
    EXPECT_TRUE(s.ok()) << s;
    return out;
  }

  testing_util::ScopedTempDir tmp_{"worker_ring"};
  const std::string address_ = "unix:" + (tmp_.path() / "worker.sock").string();
  static ModelDir* dir_;
  static ExpertStack* stack_;
  static SlotCache* cache_;  // stack_'s
};

ModelDir* WorkerRingTest::dir_ = nullptr;
ExpertStack* WorkerRingTest::stack_ = nullptr;
SlotCache* WorkerRingTest::cache_ = nullptr;

TEST_F(WorkerRingTest, CallsThroughTheRingGiveTheRpcResults) {
  WorkerService service(cache_);
  auto server = Serve(service);
  ASSERT_NE(server, nullptr);
  auto ring_client = Client(true);
  auto rpc_client = Client(false);
  ASSERT_NE(ring_client, nullptr);
  ASSERT_NE(rpc_client, nullptr);

  const std::vector<float> by_rpc = FiveTokens(*rpc_client);
  EXPECT_FALSE(rpc_client->ring_active());
  EXPECT_EQ(service.Stats().ring_calls(), 0u);
  const std::vector<float> by_ring = FiveTokens(*ring_client);
  EXPECT_TRUE(ring_client->ring_active());
  EXPECT_EQ(by_ring, by_rpc);
  EXPECT_EQ(ring_client->Stats().ring_calls, 2u);  // two chunks
  EXPECT_EQ(ring_client->Stats().calls, 2u);
  // Five rows do not fit a slot of three: each chunk is copied in and its result out.
  const uint64_t batch_bytes = by_ring.size() * sizeof(float);
  EXPECT_EQ(ring_client->staged_bytes(), 2 * batch_bytes);
  EXPECT_EQ(rpc_client->staged_bytes(), 2 * batch_bytes);
  const v1::WorkerStats stats = service.Stats();
  EXPECT_EQ(stats.ring_calls(), 2u);
  EXPECT_EQ(stats.run_experts_calls(), 4u);
  EXPECT_TRUE(stats.ring_served());
  EXPECT_NE(service.RenderMetrics().find("moe_worker_ring_calls_total 2"), std::string::npos);
  ring_client.reset();
  rpc_client.reset();
  server->Shutdown();
}

// Three tokens fit an arena slot: the client lends the slot itself, the worker reads x
// and writes out there (ring or RPC), and the results are the in-process backend's, as
// are those of a batch carried inline.
TEST_F(WorkerRingTest, ABatchLentInItsSlotGivesTheInProcessResults) {
  WorkerService service(cache_);
  auto server = Serve(service);
  ASSERT_NE(server, nullptr);
  const int64_t n = 3, h = dir_->config.hidden_size;
  std::vector<float> x(n * h);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  for (float& v : x) v = normal(rng);
  const std::vector<int32_t> ids = {0, 7, 2, 5, 7, 1};
  const std::vector<float> weights = {0.6f, 0.4f, 0.5f, 0.5f, 0.9f, 0.1f};
  auto run = [&](ExpertBackend& backend) {
    // A first connection can time out on a loaded machine: then, as the contract says,
    // wait for the worker and redo the call in a fresh batch.
    for (int attempt = 0;; ++attempt) {
      auto batch = backend.Lend(n);
      EXPECT_TRUE(batch.ok()) << batch.status();
      if (!batch.ok()) return std::vector<float>();
      EXPECT_TRUE((*batch)->place().is_host());
      EXPECT_EQ((*batch)->rows(), n);
      std::copy(x.begin(), x.end(), (*batch)->x().begin());
      std::fill((*batch)->out().begin(), (*batch)->out().end(), -1.0f);
      const absl::Status s = backend.RunExperts(0, **batch, ids, weights, nullptr);
      if (absl::IsUnavailable(s) && attempt < 3 && backend.AwaitRecovery(nullptr).ok()) continue;
      EXPECT_TRUE(s.ok()) << s;
      return std::vector<float>((*batch)->out().begin(), (*batch)->out().end());
    }
  };
  InProcessBackend local(cache_);
  const std::vector<float> expected = run(local);
  for (const auto& [use_ring, inline_tensors] : {std::pair{true, false}, {false, false}, {false, true}}) {
    auto client = Client(use_ring, inline_tensors);
    ASSERT_NE(client, nullptr);
    EXPECT_EQ(run(*client), expected) << use_ring << inline_tensors;
    EXPECT_EQ(client->ring_active(), use_ring);
    EXPECT_EQ(client->zero_copy(), !inline_tensors);
    // In its slot nothing is copied; inline, x goes into the request and out comes back
    // (x once more for a call redone after a failed connection).
    if (inline_tensors) {
      EXPECT_GE(client->staged_bytes(), 2 * expected.size() * sizeof(float));
    } else {
      EXPECT_EQ(client->staged_bytes(), 0u);
    }
    client.reset();
  }
  EXPECT_EQ(service.Stats().ring_calls(), 1u);
  server->Shutdown();
}

// Lend is bounded before anything is allocated, and a backend runs only what it lent.
TEST_F(WorkerRingTest, LentBatchesAreBoundedAndRunOnlyByTheirLender) {
  WorkerService service(cache_);
  auto server = Serve(service);
  ASSERT_NE(server, nullptr);
  auto client = Client(true);
  ASSERT_NE(client, nullptr);
  InProcessBackend local(cache_);
  for (ExpertBackend* backend : {static_cast<ExpertBackend*>(client.get()),
                                 static_cast<ExpertBackend*>(&local)}) {
    EXPECT_EQ(backend->Lend(0).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(backend->Lend(-1).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(backend->Lend(kMaxActivationRows + 1).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  auto mine = client->Lend(1);
  auto theirs = local.Lend(1);
  ASSERT_TRUE(mine.ok() && theirs.ok());
  const std::vector<int32_t> ids = {0, 1};
  const std::vector<float> weights = {0.5f, 0.5f};
  EXPECT_EQ(client->RunExperts(0, **theirs, ids, weights, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(local.RunExperts(0, **mine, ids, weights, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  // Ids and weights of different lengths.
  EXPECT_EQ(client->RunExperts(0, **mine, {0, 1, 2, 3}, {0.5f, 0.5f}, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  mine->reset();
  client.reset();
  server->Shutdown();
}

TEST_F(WorkerRingTest, AWorkerThatDoesNotServeTheRingIsCalledByRpc) {
  WorkerService service(cache_, {.serve_ring = false});
  auto server = Serve(service);
  ASSERT_NE(server, nullptr);
  auto client = Client(true);
  ASSERT_NE(client, nullptr);
  FiveTokens(*client);
  EXPECT_FALSE(client->ring_active());
  EXPECT_EQ(client->Stats().ring_calls, 0u);
  EXPECT_EQ(service.Stats().run_experts_calls(), 2u);
  EXPECT_FALSE(service.Stats().ring_served());
  client.reset();
  server->Shutdown();
}

// Two coordinators taking turns on one worker: each attach stops the other's ring. A call
// posted to a stopped ring is answered at once (FAILED_PRECONDITION inside the client,
// which attaches again and redoes it), never left waiting for its deadline.
TEST_F(WorkerRingTest, ACallOnARingTheWorkerStoppedServingAttachesAgainAtOnce) {
  WorkerService service(cache_);
  auto server = Serve(service);
  ASSERT_NE(server, nullptr);
  auto first = Client(true);
  auto second = Client(true);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<float> expected = FiveTokens(*first);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(FiveTokens(*second), expected);
    EXPECT_EQ(FiveTokens(*first), expected);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 5.0) << "a call waited on a ring nobody served";
  EXPECT_EQ(first->Stats().ring_calls, 8u);
  EXPECT_EQ(second->Stats().ring_calls, 6u);
  EXPECT_EQ(first->recoveries() + second->recoveries(), 0u);
  first.reset();
  second.reset();
  server->Shutdown();
}

// A worker that serves the ring with the reply `reply_` whatever it is asked: the
// coordinator must judge what it reads back as it judges an RPC's response.
// A worker that answers RunExperts of layer 1 only after `delay` (hung there).
class SlowWorker : public v1::ExpertWorker::Service {
 public:
  SlowWorker(SlotCache* cache, absl::Duration delay)
      : inner_(cache, {.serve_ring = false}), delay_(delay) {}
  grpc::Status AttachArena(grpc::ServerContext* context, const v1::AttachArenaRequest* request,
                           v1::AttachArenaResponse* response) override {
    return inner_.AttachArena(context, request, response);
  }
  grpc::Status RunExperts(grpc::ServerContext* context, const v1::RunExpertsRequest* request,
                          v1::RunExpertsResponse* response) override {
    if (request->layer() == 1) absl::SleepFor(delay_);
    return inner_.RunExperts(context, request, response);
  }
  grpc::Status GetStats(grpc::ServerContext* context, const v1::GetStatsRequest* request,
                        v1::WorkerStats* response) override {
    return inner_.GetStats(context, request, response);
  }

 private:
  WorkerService inner_;
  const absl::Duration delay_;
};

// A call that timed out may still be answered into its batch's slot: the batch cannot be
// run again, and once given back its slot is not lent again (the arena is replaced).
TEST_F(WorkerRingTest, ABatchWhoseCallTimedOutIsNotRunAgain) {
  SlowWorker worker(cache_, absl::Milliseconds(400));
  auto server = Serve(worker);
  ASSERT_NE(server, nullptr);
  coordinator::WorkerClientOptions options;
  options.address = address_;
  options.arena_slots = 1;
  options.use_ring = false;
  options.rpc_timeout = absl::Milliseconds(100);
  auto client = coordinator::WorkerClient::Create(options, dir_->config);
  ASSERT_TRUE(client.ok()) << client.status();
  // Connected first: on a loaded machine the first connection may take longer than 100 ms.
  ASSERT_TRUE((*client)->WorkerServing(absl::Seconds(10)));
  const std::vector<int32_t> ids = {0, 1};
  const std::vector<float> weights = {0.5f, 0.5f};
  // Attached by a call of layer 0 (retried: on a loaded machine 100 ms can pass).
  absl::Status attached;
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto batch = (*client)->Lend(1);
    ASSERT_TRUE(batch.ok()) << batch.status();
    std::fill((*batch)->x().begin(), (*batch)->x().end(), 0.5f);
    attached = (*client)->RunExperts(0, **batch, ids, weights, nullptr);
    if (attached.ok()) break;
  }
  ASSERT_TRUE(attached.ok()) << attached;
  {
    auto batch = (*client)->Lend(1);
    ASSERT_TRUE(batch.ok()) << batch.status();
    std::fill((*batch)->x().begin(), (*batch)->x().end(), 0.5f);
    const absl::Status hung = (*client)->RunExperts(1, **batch, ids, weights, nullptr);
    EXPECT_EQ(hung.code(), absl::StatusCode::kUnavailable) << hung;
    EXPECT_THAT(hung.message(), HasSubstr("no answer within"));
    EXPECT_EQ((*client)->RunExperts(1, **batch, ids, weights, nullptr).code(),
              absl::StatusCode::kFailedPrecondition);
  }
  // The only slot was retired: the next batch is lent from a fresh arena.
  auto batch = (*client)->Lend(1);
  ASSERT_TRUE(batch.ok()) << batch.status();
  batch->reset();
  client->reset();
  server->Shutdown();
}

class HostileReplyWorker : public v1::ExpertWorker::Service {
 public:
  HostileReplyWorker(SlotCache* cache, ring::RingReply reply)
      : inner_(cache, {.serve_ring = false}), reply_(reply) {}

  grpc::Status AttachArena(grpc::ServerContext* context, const v1::AttachArenaRequest* request,
                           v1::AttachArenaResponse* response) override {
    grpc::Status s = inner_.AttachArena(context, request, response);
    if (!s.ok() || !request->has_ring()) return s;
    const auto& shm = request->shared_memory();
    auto arena = SharedArena::Attach(shm.pid(), shm.fd(), request->size_bytes(), request->arena_id());
    if (!arena.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, std::string(arena.status().message()));
    ring_.reset();
    auto server = RingServer::Start(std::shared_ptr<ActivationArena>(*std::move(arena)),
                                    request->ring().offset(), request->ring().slots(),
                                    request->ring().epoch(), ring::WaitOptions{},
                                    [this](const ring::RingRequest&) { return reply_; });
    if (!server.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, std::string(server.status().message()));
    ring_ = *std::move(server);
    response->set_ring_served(true);
    return s;
  }

 private:
  WorkerService inner_;
  const ring::RingReply reply_;
  std::unique_ptr<RingServer> ring_;
};

TEST_F(WorkerRingTest, ReplyFiguresAWorkerCannotHaveAreRefused) {
  std::vector<std::pair<std::string, ring::RingReply>> replies;
  ring::RingReply r;
  r.hits = 1000000;  // far more than the layer's experts
  replies.emplace_back("hits", r);
  r = {};
  r.hits = 1;
  r.prefetch_hits = 2;  // more prefetch hits than uses
  replies.emplace_back("prefetch hits", r);
  r = {};
  r.load_wait_s = std::nan("");
  replies.emplace_back("nan", r);
  r = {};
  r.compute_s = -1;
  replies.emplace_back("-1 s", r);
  for (const auto& [what, reply] : replies) {
    HostileReplyWorker worker(cache_, reply);
    auto server = Serve(worker);
    ASSERT_NE(server, nullptr);
    auto client = Client(true);
    ASSERT_NE(client, nullptr);
    std::vector<float> x(dir_->config.hidden_size, 0.5f), out(x.size());
    const absl::Status s = RunExpertsFromHost(*client, 0, x, 1, std::vector<int32_t>{0, 1},
                                              std::vector<float>{0.5f, 0.5f},
                                              absl::MakeSpan(out), nullptr);
    EXPECT_TRUE(client->ring_active()) << what;
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << what << ": " << s;
    EXPECT_THAT(s.message(), HasSubstr(what));
    EXPECT_EQ(client->Stats().hits, 0u) << what;
    client.reset();
    server->Shutdown();
  }
}

class HostileRingTest : public WorkerRingTest {
 protected:
  static constexpr uint32_t kSlots = 2;
  static constexpr uint64_t kRingOffset = 8192;

  void SetUp() override {
    auto arena = SharedArena::Create(kRingOffset + ring::RingBytes(kSlots));
    ASSERT_TRUE(arena.ok()) << arena.status();
    arena_ = *std::move(arena);
    auto base = arena_->At(kRingOffset, ring::RingBytes(kSlots), 64);
    ASSERT_TRUE(base.ok());
    auto ring = ring::Ring::At(*base, kSlots);
    ASSERT_TRUE(ring.ok());
    ring_ = std::make_unique<ring::Ring>(*ring);
    ring_->Reset(9);
  }

  v1::AttachArenaRequest Attach(uint64_t offset, uint32_t slots) const {
    v1::AttachArenaRequest request;
    request.mutable_shared_memory()->set_pid(static_cast<uint32_t>(::getpid()));
    request.mutable_shared_memory()->set_fd(arena_->fd());
    request.set_size_bytes(arena_->size());
    request.set_arena_id(arena_->id());
    request.mutable_ring()->set_offset(offset);
    request.mutable_ring()->set_slots(slots);
    request.mutable_ring()->set_epoch(9);
    return request;
  }

  // One token of layer 0 (x at 0, out at 4096, routes at 6144) with `ids` written there.
  ring::RingRequest OneToken(std::vector<uint32_t> ids, std::vector<float> weights) {
    const uint64_t h = dir_->config.hidden_size;
    auto x = arena_->Floats(0, h);
    for (float& v : *x) v = 0.5f;
    std::memcpy(*arena_->At(6144, 8, 4), ids.data(), 8);
    std::memcpy(*arena_->At(6152, 8, 4), weights.data(), 8);
    ring::RingRequest r;
    r.epoch = 9;
    r.num_tokens = 1;
    r.experts_per_token = 2;
    r.x_offset = 0;
    r.out_offset = 4096;
    r.ids_offset = 6144;
    r.weights_offset = 6152;
    return r;
  }

  absl::Status Call(uint32_t slot, const ring::RingRequest& request) {
    ring_->Post(slot, request);
    for (int i = 0; i < 100; ++i) {
      if (ring_->AwaitDone(slot, absl::ZeroDuration(), absl::Milliseconds(50))) {
        const ring::RingReply reply = ring_->entry(slot).reply;
        ring_->Release(slot);
        return ring::StatusOf(reply);
      }
    }
    return absl::DeadlineExceededError("the ring did not answer within 5 s");
  }

  std::unique_ptr<SharedArena> arena_;
  std::unique_ptr<ring::Ring> ring_;
};

TEST_F(HostileRingTest, BadRingOffersAreRefusedAtAttach) {
  WorkerService service(cache_);
  v1::AttachArenaResponse response;
  for (const auto& [offset, slots] : std::vector<std::pair<uint64_t, uint32_t>>{
           {kRingOffset + 4, kSlots},           // misaligned
           {kRingOffset + 64, kSlots},          // runs past the arena
           {~uint64_t{0} - 63, kSlots},         // wraps
           {0, 0},
           {0, ring::kMaxRingSlots + 1}}) {
    const v1::AttachArenaRequest request = Attach(offset, slots);
    const grpc::Status s = service.AttachArena(nullptr, &request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << offset << " " << slots << ": " << s.error_message();
  }
  EXPECT_FALSE(service.Stats().ring_served());
}

TEST_F(HostileRingTest, HostileEntriesGetErrorsAndTheRingServesOn) {
  WorkerService service(cache_);
  v1::AttachArenaResponse response;
  const v1::AttachArenaRequest attach = Attach(kRingOffset, kSlots);
  ASSERT_TRUE(service.AttachArena(nullptr, &attach, &response).ok());
  EXPECT_TRUE(response.ring_served());
  EXPECT_EQ(response.worker_pid(), uint32_t(::getpid()));

  EXPECT_THAT(Call(0, OneToken({0, 8}, {0.5f, 0.5f})).message(), HasSubstr("expert id 8"));
  EXPECT_THAT(Call(1, OneToken({0, 1}, {0.5f, std::nanf("")})).message(), HasSubstr("not finite"));
  ring::RingRequest stale = OneToken({0, 1}, {0.5f, 0.5f});
  stale.epoch = 8;
  EXPECT_EQ(Call(0, stale).code(), absl::StatusCode::kFailedPrecondition);
  ring::RingRequest outside = OneToken({0, 1}, {0.5f, 0.5f});
  outside.out_offset = ~uint64_t{0} - 3;
  EXPECT_EQ(Call(1, outside).code(), absl::StatusCode::kOutOfRange);
  ring::RingRequest over_ring = OneToken({0, 1}, {0.5f, 0.5f});
  over_ring.out_offset = kRingOffset - 512;  // its last half on the ring
  EXPECT_THAT(Call(0, over_ring).message(), HasSubstr("over the ring"));
  ring::RingRequest too_many = OneToken({0, 1}, {0.5f, 0.5f});
  too_many.num_tokens = 5000;  // above the worker's --max-call-tokens
  EXPECT_EQ(Call(1, too_many).code(), absl::StatusCode::kInvalidArgument);

  // The ring still serves a good call, and its result is the runner's.
  ASSERT_TRUE(Call(0, OneToken({0, 1}, {0.75f, 0.25f})).ok());
  const int64_t h = dir_->config.hidden_size;
  std::vector<float> x(h, 0.5f), expected(h);
  InProcessBackend local(cache_);
  ASSERT_TRUE(RunExpertsFromHost(local, 0, x, 1, std::vector<int32_t>{0, 1},
                                 std::vector<float>{0.75f, 0.25f}, absl::MakeSpan(expected),
                                 nullptr).ok());
  auto out = arena_->Floats(4096, h);
  EXPECT_EQ(std::vector<float>(out->begin(), out->end()), expected);
  EXPECT_EQ(service.Stats().ring_calls(), 1u);
}

TEST_F(HostileRingTest, APeerThatKeepsRepostingCannotKeepTheServerFromStopping) {
  // The peer marks every entry posted again while each call is served: the claim loop
  // always finds work, and a server that only looked at its stop flag between scans
  // would keep serving (and its owner keep joining) for as long as the peer liked.
  std::shared_ptr<ActivationArena> arena = std::move(arena_);
  std::atomic<int> served{0};
  const auto repost_until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  ring::Ring* ring = ring_.get();
  auto server = RingServer::Start(
      arena, kRingOffset, kSlots, 9, ring::WaitOptions{},
      [&](const ring::RingRequest&) {
        ++served;
        if (std::chrono::steady_clock::now() < repost_until) {
          for (uint32_t s = 0; s < kSlots; ++s) ring->entry(s).state.store(ring::kPosted);
        }
        return ring::ReplyFor(absl::OkStatus());
      });
  ASSERT_TRUE(server.ok()) << server.status();
  ring_->Post(0, ring::RingRequest{});
  while (served.load() < 10) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto t0 = std::chrono::steady_clock::now();
  server->reset();
  const double stop_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(stop_s, 1.0) << "the server served the peer's reposts instead of stopping";
  EXPECT_TRUE(ring_->Stopped(9));
}

}  // namespace
}  // namespace moe::expert_worker
