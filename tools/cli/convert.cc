#include "tools/cli/convert.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <tuple>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/model_dir.h"
#include "common/status.h"

namespace moe {
namespace {

namespace fs = std::filesystem;
using quant::MatrixSpec;

// A progress bar on stderr: redrawn in place at most 5 times a second when stderr is a
// terminal; otherwise one line per 10% (logs stay short). Always a final line.
class Progress {
 public:
  Progress(uint64_t total, bool enabled)
      : total_(std::max<uint64_t>(total, 1)), enabled_(enabled), tty_(isatty(2) == 1),
        start_(Clock::now()), last_draw_(start_) {}

  void Advance(uint64_t bytes, absl::string_view what) {
    done_ += bytes;
    if (!enabled_) return;
    const auto now = Clock::now();
    const double fraction = std::min(1.0, double(done_) / total_);
    if (tty_) {
      if (now - last_draw_ < std::chrono::milliseconds(200) && done_ < total_) return;
      last_draw_ = now;
      std::fprintf(stderr, "\r%s %-40.40s", Line(fraction, now).c_str(), std::string(what).c_str());
    } else {
      const int decile = static_cast<int>(fraction * 10);
      if (decile <= last_decile_) return;
      last_decile_ = decile;
      std::fprintf(stderr, "%s\n", Line(fraction, now).c_str());
    }
    std::fflush(stderr);
  }

  void Finish(absl::string_view summary) {
    if (!enabled_) return;
    const double s = Seconds(Clock::now());
    std::fprintf(stderr, "%sconverted %s in %.1f s (%.1f MB/s)\n", tty_ ? "\r\033[K" : "",
                 std::string(summary).c_str(), s, done_ / 1e6 / std::max(s, 1e-9));
  }

 private:
  using Clock = std::chrono::steady_clock;
  double Seconds(Clock::time_point now) const {
    return std::chrono::duration<double>(now - start_).count();
  }
  static std::string Clock_(double s) {
    const int64_t t = static_cast<int64_t>(std::llround(std::max(0.0, s)));
    return absl::StrFormat("%02d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
  }
  std::string Line(double fraction, Clock::time_point now) const {
    const int width = 30, filled = static_cast<int>(fraction * width);
    const double elapsed = Seconds(now);
    const double eta = fraction > 0 ? elapsed * (1 - fraction) / fraction : 0;
    return absl::StrFormat("[%s%s] %3d%% %.2f/%.2f GB, elapsed %s, ETA %s",
                           std::string(filled, '#'), std::string(width - filled, ' '),
                           static_cast<int>(fraction * 100), done_ / 1e9, total_ / 1e9,
                           Clock_(elapsed), Clock_(eta));
  }

  uint64_t total_, done_ = 0;
  bool enabled_, tty_;
  Clock::time_point start_, last_draw_;
  int last_decile_ = -1;
};

// An output file written sequentially; Place pads to the alignment and returns the offset.
class Output {
 public:
  static absl::StatusOr<Output> Open(const std::string& path) {
    Output out;
    out.path_ = path;
    out.file_ = std::fopen(path.c_str(), "wb");
    if (out.file_ == nullptr) {
      return absl::PermissionDeniedError(absl::StrCat(path, ": cannot create: ", std::strerror(errno)));
    }
    return out;
  }
  Output() = default;
  Output(Output&& o) noexcept : path_(std::move(o.path_)), file_(o.file_), size_(o.size_) { o.file_ = nullptr; }
  ~Output() {
    if (file_ != nullptr) std::fclose(file_);
  }

  absl::StatusOr<int64_t> Append(const uint8_t* data, int64_t bytes, int64_t align) {
    MOE_RETURN_IF_ERROR(PadTo(quant::AlignUp(size_, align)));
    const int64_t offset = size_;
    if (bytes > 0 && std::fwrite(data, 1, bytes, file_) != size_t(bytes)) return WriteError();
    size_ += bytes;
    return offset;
  }
  absl::Status PadTo(int64_t size) {
    static const uint8_t zeros[4096] = {};
    while (size_ < size) {
      const int64_t n = std::min<int64_t>(size - size_, sizeof(zeros));
      if (std::fwrite(zeros, 1, n, file_) != size_t(n)) return WriteError();
      size_ += n;
    }
    return absl::OkStatus();
  }
  absl::Status Close() {
    const bool ok = std::fclose(file_) == 0;
    file_ = nullptr;
    return ok ? absl::OkStatus() : WriteError();
  }
  int64_t size() const { return size_; }

 private:
  absl::Status WriteError() const {
    return absl::DataLossError(absl::StrCat(path_, ": write failed: ", std::strerror(errno)));
  }
  std::string path_;
  FILE* file_ = nullptr;
  int64_t size_ = 0;
};

struct ErrorSum {
  double error = 0, norm = 0;
  void Add(const quant::QuantizedMatrix& q) {
    error += q.squared_error;
    norm += q.squared_norm;
  }
  double Relative() const { return norm > 0 ? std::sqrt(error / norm) : 0; }
};

absl::Status CheckBits(int bits, std::initializer_list<int> allowed, const char* flag) {
  for (int b : allowed) {
    if (b == bits) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", bits, " is not one of ",
                                                 absl::StrJoin(allowed, ", ")));
}

MatrixSpec Spec(int bits, int64_t group, DType dtype16) {
  MatrixSpec s;
  s.bits = bits;
  s.group_size = group;
  s.dtype16 = dtype16;
  return s;
}

// The manifest's layout fields for `config` and the scheme, without weights: the place of
// every dense tensor and expert blob, as the writer lays them out.
absl::Status PlanLayout(quant::OffloadManifest* m) {
  MOE_RETURN_IF_ERROR(quant::ExpertBlobLayout::Compute(m->config, m->expert_spec, &m->expert));
  absl::Status status;
  int64_t offset = 0;
  quant::ForEachDenseTensor(
      m->config, m->attn_spec, m->dtype16,
      [&](const std::string& name, const std::vector<int64_t>& shape, const MatrixSpec& spec) {
        if (!status.ok()) return;
        quant::DenseTensor t;
        t.name = name;
        t.shape = shape;
        status = quant::MatrixLayout::Compute(shape.size() == 2 ? shape[0] : 1, shape.back(),
                                              spec, name, &t.layout);
        t.offset = quant::AlignUp(offset, quant::kSectionAlign);
        offset = t.offset + t.layout.total_bytes;
        m->dense.push_back(std::move(t));
      });
  MOE_RETURN_IF_ERROR(status);
  m->dense_bytes = offset;
  const int64_t blobs = m->config.num_expert_layers() * m->config.num_local_experts;
  m->blob_offsets.resize(blobs);
  for (int64_t b = 0; b < blobs; ++b) m->blob_offsets[b] = b * m->expert.blob_stride;
  m->experts_bytes = blobs * m->expert.blob_stride;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SchemeSizes> ComputeSchemeSizes(const ModelConfig& config, int attn_bits,
                                               int expert_bits, int64_t group_size,
                                               DType dtype16) {
  quant::OffloadManifest m;
  m.config = config;
  m.dtype16 = dtype16;
  m.attn_spec = Spec(attn_bits, group_size, dtype16);
  m.expert_spec = Spec(expert_bits, group_size, dtype16);
  MOE_RETURN_IF_ERROR(PlanLayout(&m));
  return SchemeSizes{m.dense_bytes, m.expert.blob_bytes, m.experts_bytes};
}

absl::StatusOr<quant::OffloadManifest> Convert(const ConvertOptions& options) {
  MOE_RETURN_IF_ERROR(CheckBits(options.attn_bits, {4, 8, 16}, "attn-bits"));
  MOE_RETURN_IF_ERROR(CheckBits(options.expert_bits, {2, 3, 4, 8, 16}, "expert-bits"));
  if (options.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  MOE_ASSIGN_OR_RETURN(ModelDir source, ModelDir::Open(options.in_dir));
  if (source.checkpoint == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.in_dir, ": already converted (has ", quant::kManifestFile,
                     "); convert from the Hugging Face directory"));
  }
  const Checkpoint& ckpt = *source.checkpoint;
  // Embeddings, norms and routers stay in 16 bits: F16 when the source is F16, else BF16.
  MOE_ASSIGN_OR_RETURN(auto embedding, ckpt.Find(tensor_names::Embedding()));
  const DType dtype16 = embedding.info->dtype == DType::kF16 ? DType::kF16 : DType::kBF16;

  quant::OffloadManifest m;
  const std::string config_path = (fs::path(options.in_dir) / "config.json").string();
  {
    std::ifstream in(config_path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    m.config_json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!m.config_json.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": not a JSON object"));
    }
  }
  m.config = source.config;
  m.method = std::string(quant::MethodName(options.method));
  m.dtype16 = dtype16;
  m.attn_spec = Spec(options.attn_bits, options.group_size, dtype16);
  m.expert_spec = Spec(options.expert_bits, options.group_size, dtype16);
  MOE_RETURN_IF_ERROR(PlanLayout(&m));

  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(options.out_dir, ": ", ec.message()));
  // An old manifest goes first: a directory whose conversion fails part-way is not
  // mistaken for a converted model.
  fs::remove(fs::path(options.out_dir) / quant::kManifestFile, ec);

  Progress progress(ckpt.TotalBytes(), options.progress);
  std::vector<float> w;
  auto read = [&](const std::string& name, const std::vector<int64_t>& shape) -> absl::Status {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    w.resize(count);
    return ckpt.ReadF32(name, shape, w.data());
  };
  auto source_bytes = [&](const std::string& name) -> uint64_t {
    auto ref = ckpt.Find(name);
    return ref.ok() ? ref->info->NumBytes() : 0;
  };
  quant::QuantizeOptions qopt;
  qopt.method = options.method;

  // Dense tensors, in manifest order.
  ErrorSum attn_error, expert_error;
  {
    MOE_ASSIGN_OR_RETURN(Output dense, Output::Open((fs::path(options.out_dir) / quant::kDenseFile).string()));
    for (const quant::DenseTensor& t : m.dense) {
      MOE_RETURN_IF_ERROR(read(t.name, t.shape));
      qopt.spec = t.layout.spec;
      MOE_ASSIGN_OR_RETURN(quant::QuantizedMatrix q,
                           quant::QuantizeMatrix(w.data(), t.layout.rows, t.layout.cols, qopt));
      if (absl::StrContains(t.name, ".self_attn.") && absl::EndsWith(t.name, "_proj.weight")) attn_error.Add(q);
      MOE_RETURN_IF_ERROR(dense.PadTo(t.offset));
      MOE_RETURN_IF_ERROR(dense.Append(q.bytes.data(), q.layout.total_bytes, 1).status());
      progress.Advance(source_bytes(t.name), t.name);
    }
    MOE_RETURN_IF_ERROR(dense.PadTo(m.dense_bytes));
    MOE_RETURN_IF_ERROR(dense.Close());
  }
  // Experts: one blob each, w1 | w3 | w2.
  {
    MOE_ASSIGN_OR_RETURN(Output experts, Output::Open((fs::path(options.out_dir) / quant::kExpertsFile).string()));
    const ModelConfig& c = m.config;
    qopt.spec = m.expert_spec;
    std::vector<uint8_t> blob(m.expert.blob_stride);
    // Blobs by expert layer (ModelConfig::ExpertLayer): dense layers have none.
    for (int l = 0; l < c.num_expert_layers(); ++l) {
      for (int e = 0; e < c.num_local_experts; ++e) {
        std::fill(blob.begin(), blob.end(), 0);
        for (auto [name, rows, cols, offset] :
             {std::tuple<const char*, int64_t, int64_t, int64_t>{"w1", c.intermediate_size, c.hidden_size, m.expert.w1_offset},
              {"w3", c.intermediate_size, c.hidden_size, m.expert.w3_offset},
              {"w2", c.hidden_size, c.intermediate_size, m.expert.w2_offset}}) {
          const std::string tensor = tensor_names::Expert(c, c.DecoderLayer(l), e, name);
          MOE_RETURN_IF_ERROR(read(tensor, {rows, cols}));
          MOE_ASSIGN_OR_RETURN(quant::QuantizedMatrix q, quant::QuantizeMatrix(w.data(), rows, cols, qopt));
          expert_error.Add(q);
          std::copy(q.bytes.begin(), q.bytes.end(), blob.begin() + offset);
          progress.Advance(source_bytes(tensor), tensor);
        }
        MOE_RETURN_IF_ERROR(experts.PadTo(m.blob_offset(l, e)));
        MOE_RETURN_IF_ERROR(experts.Append(blob.data(), m.expert.blob_stride, 1).status());
      }
    }
    MOE_RETURN_IF_ERROR(experts.Close());
  }
  m.attn_rel_error = attn_error.Relative();
  m.expert_rel_error = expert_error.Relative();
  // The tokenizer under its own name (tokenizer.model or tokenizer.json) and the chat
  // template's tokenizer_config.json, so the converted model chats as the source does.
  std::vector<fs::path> tokenizer_files;
  if (!source.tokenizer_path.empty()) tokenizer_files.emplace_back(source.tokenizer_path);
  if (const fs::path tc = fs::path(source.path) / "tokenizer_config.json"; fs::exists(tc, ec)) {
    tokenizer_files.push_back(tc);
  }
  for (const fs::path& file : tokenizer_files) {
    const fs::path to = fs::path(options.out_dir) / file.filename();
    fs::copy_file(file, to, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat(to.string(), ": ", ec.message()));
  }
  // The manifest last, through a rename: it appears only for a complete conversion.
  const fs::path manifest = fs::path(options.out_dir) / quant::kManifestFile;
  const fs::path tmp = fs::path(options.out_dir) / (std::string(quant::kManifestFile) + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << quant::SerializeOffloadManifest(m) << "\n";
    if (!out.good()) return absl::DataLossError(absl::StrCat(tmp.string(), ": write failed"));
  }
  fs::rename(tmp, manifest, ec);
  if (ec) return absl::DataLossError(absl::StrCat(manifest.string(), ": ", ec.message()));
  progress.Finish(absl::StrFormat("%s -> %s: %s; dense %.2f MB, experts %.2f MB (%.3f MB each)",
                                  options.in_dir, options.out_dir, m.Scheme(), m.dense_bytes / 1e6,
                                  m.experts_bytes / 1e6, m.expert.blob_bytes / 1e6));
  return m;
}

}  // namespace moe
