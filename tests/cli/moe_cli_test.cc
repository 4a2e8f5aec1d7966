// The real `moe` binary on bad and good input: bad input gets a non-zero exit and exactly
// one line on stderr naming the file and the fault; good input matches the PyTorch
// reference. Every child runs under a deadline, so no test can hang.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::StartsWith;

const fs::path kDataDir = fs::path(MOE_SOURCE_DIR) / "tests" / "data";
const fs::path kCheckpoint =
    fs::path(MOE_BINARY_DIR) / "random_checkpoints" / "f32_mha_e2_top1_tied";
constexpr auto kDeadline = std::chrono::seconds(60);

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal or the deadline
  bool timed_out = false;
  std::string out;
  std::string err;
};

// Runs MOE_CLI_PATH with `args`, capturing stdout and stderr; kills it at the deadline.
ProcessResult RunMoe(const std::vector<std::string>& args) {
  ProcessResult result;
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2 failed";
    return result;
  }
  std::vector<std::string> argv_strings = {MOE_CLI_PATH};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  argv_strings.push_back("--threads=1");
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid == 0) {  // child: only async-signal-safe calls until exec
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::dup2(err_pipe[1], STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (pid < 0) {
    ADD_FAILURE() << "fork failed";
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    return result;
  }

  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  while (open_fds > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, n);
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (const pollfd& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

// The one-line error contract: exit 1, stderr is exactly "moe: error: ...\n".
void ExpectOneErrorLine(const ProcessResult& r, const std::string& must_contain) {
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, StartsWith("moe: error: "));
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.back(), '\n') << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr(must_contain));
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A copy of the random checkpoint in a fresh temporary directory, removed at scope exit.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(kCheckpoint / "reference.json"))
        << kCheckpoint << " is missing: run ctest (fixture random_checkpoints)";
    std::string pattern = (fs::path(::testing::TempDir()) / "moe_cli_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    for (const char* name : {"config.json", "model.safetensors"}) {
      fs::copy_file(kCheckpoint / name, dir_ / name);
    }
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  std::string model_flag() const { return "--model=" + dir_.string(); }

  fs::path dir_;
};

TEST_F(CliTest, LogitsOnARandomCheckpointMatchThePyTorchReference) {
  const json ref = json::parse(ReadText(kCheckpoint / "reference.json"));
  const std::vector<int> tokens = ref["cases"][0]["tokens"].get<std::vector<int>>();
  const fs::path out = dir_ / "logits.npy";
  const ProcessResult r = RunMoe({"logits", model_flag(), "--tokens=" + absl::StrJoin(tokens, ","),
                                  "--out=" + out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  auto actual = ReadNpyF32(out.string());
  ASSERT_TRUE(actual.ok()) << actual.status();
  auto expected =
      ReadNpyF32((kCheckpoint / ref["cases"][0]["logits"].get<std::string>()).string());
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(actual->shape, expected->shape);
  ASSERT_EQ(actual->shape, (std::vector<int64_t>{int64_t(tokens.size()), 64}));
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < expected->data.size(); ++i) {
    max_err = std::max(max_err, double(std::fabs(actual->data[i] - expected->data[i])));
    max_ref = std::max(max_ref, double(std::fabs(expected->data[i])));
  }
  EXPECT_LT(max_err / max_ref, 1e-4);
}

TEST_F(CliTest, EveryBadSafetensorsFileGetsOneLineNamingTheFile) {
  // The same crafted files tests/common/safetensors_test.cc checks, through the binary.
  std::istringstream tsv(ReadText(kDataDir / "bad_safetensors" / "expected_errors.tsv"));
  std::string line;
  int count = 0;
  while (std::getline(tsv, line)) {
    const std::vector<std::string> fields = absl::StrSplit(line, absl::MaxSplits('\t', 1));
    if (fields.size() != 2) continue;
    SCOPED_TRACE(fields[0]);
    fs::copy_file(kDataDir / "bad_safetensors" / fields[0], dir_ / "model.safetensors",
                  fs::copy_options::overwrite_existing);
    const ProcessResult r = RunMoe({"info", model_flag()});
    ExpectOneErrorLine(r, absl::StrCat("moe: error: ", (dir_ / "model.safetensors").string(),
                                       ": "));
    EXPECT_THAT(r.err, HasSubstr(fields[1]));
    ++count;
  }
  EXPECT_GE(count, 30);
}

TEST_F(CliTest, BadSafetensorsFailsLogitsToo) {
  fs::copy_file(kDataDir / "bad_safetensors" / "header_length_absurd.safetensors",
                dir_ / "model.safetensors", fs::copy_options::overwrite_existing);
  ExpectOneErrorLine(RunMoe({"logits", model_flag(), "--tokens=1,2", "--out=" +
                                 (dir_ / "x.npy").string()}),
                     (dir_ / "model.safetensors").string() + ": header length");
  EXPECT_FALSE(fs::exists(dir_ / "x.npy"));
}

TEST_F(CliTest, BadConfigGetsOneLineNamingConfigJson) {
  const std::string config = (dir_ / "config.json").string();
  const std::pair<std::string, std::string> cases[] = {
      {"{\"vocab_size\": 64", "config is not valid JSON"},
      {"[]", "config is not a JSON object"},
      {R"({"vocab_size": 64, "hidden_size": 32})", "missing field \"intermediate_size\""},
  };
  for (const auto& [text, expected] : cases) {
    std::ofstream(config, std::ios::trunc) << text;
    ExpectOneErrorLine(RunMoe({"info", model_flag()}), config + ": " + expected);
  }

  json j = json::parse(ReadText(kCheckpoint / "config.json"));
  j["num_experts_per_tok"] = 3;
  std::ofstream(config, std::ios::trunc) << j.dump();
  ExpectOneErrorLine(RunMoe({"info", model_flag()}),
                     config + ": num_experts_per_tok 3 exceeds num_local_experts 2");
  j["num_experts_per_tok"] = 1;
  j["hidden_size"] = -32;
  std::ofstream(config, std::ios::trunc) << j.dump();
  ExpectOneErrorLine(RunMoe({"info", model_flag()}), config + ": field \"hidden_size\"");
}

TEST_F(CliTest, WrongShapeForTheConfigNamesTensorAndShapes) {
  json j = json::parse(ReadText(kCheckpoint / "config.json"));
  j["vocab_size"] = 80;
  std::ofstream(dir_ / "config.json", std::ios::trunc) << j.dump();
  ExpectOneErrorLine(RunMoe({"info", model_flag()}),
                     "\"model.embed_tokens.weight\" has shape [64, 32] but config.json implies "
                     "[80, 32]");
}

TEST_F(CliTest, TokenIdOutOfRangeIsNamed) {
  const std::string out = "--out=" + (dir_ / "x.npy").string();
  ExpectOneErrorLine(RunMoe({"logits", model_flag(), "--tokens=1,64,3", out}),
                     "--tokens: id 64 at index 1 is outside the vocabulary [0, 64)");
  ExpectOneErrorLine(RunMoe({"logits", model_flag(), "--tokens=-1", out}), "id -1");
  ExpectOneErrorLine(RunMoe({"logits", model_flag(), "--tokens=1,x", out}),
                     "\"x\" is not an integer");
  ExpectOneErrorLine(RunMoe({"logits", model_flag(), "--tokens=99999999999", out}),
                     "\"99999999999\" is not an integer");
  EXPECT_FALSE(fs::exists(dir_ / "x.npy"));
}

TEST_F(CliTest, MissingModelFlagIsAClearError) {
  ExpectOneErrorLine(RunMoe({"info"}), "moe: error: --model is required");
  ExpectOneErrorLine(RunMoe({"logits", "--tokens=1", "--out=x.npy"}), "--model is required");
}

TEST_F(CliTest, MissingModelDirectoryIsNamed) {
  const std::string missing = (dir_ / "nope").string();
  ExpectOneErrorLine(RunMoe({"info", "--model=" + missing}), missing + ": not a directory");
}

TEST_F(CliTest, UnknownOrMissingCommandExitsWithUsageCode) {
  ProcessResult r = RunMoe({"frobnicate", model_flag()});
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("frobnicate"));

  r = RunMoe({model_flag()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("expected one command"));
}

TEST_F(CliTest, InfoOnAGoodCheckpointSucceeds) {
  const ProcessResult r = RunMoe({"info", model_flag()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, AllOf(HasSubstr("hidden_size      32"), HasSubstr("experts          2")));
}

}  // namespace
}  // namespace moe
