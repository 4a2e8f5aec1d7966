#include "common/quant/offload_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_util.h"
#include "common/model_tensors.h"
#include "common/status.h"

namespace moe::quant {
namespace {

using json = nlohmann::json;

// Reads fields of one JSON object; every error names the file and the field's path.
class Reader {
 public:
  Reader(const json& j, std::string path, absl::string_view source)
      : j_(j), path_(std::move(path)), source_(source) {}

  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": ", path_.empty() ? "" : absl::StrCat(path_, ": "), message));
  }
  std::string Path(absl::string_view key) const {
    return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", key);
  }
  absl::StatusOr<const json*> Field(const char* key, json::value_t type, const char* type_name) const {
    if (!j_.is_object()) return Error("is not a JSON object");
    const auto it = j_.find(key);
    if (it == j_.end()) return Error(absl::StrCat("missing field \"", key, "\""));
    const bool ok = type == json::value_t::number_integer
                        ? it->is_number_integer()
                        : (type == json::value_t::number_float ? it->is_number() : it->type() == type);
    if (!ok) {
      return Error(absl::StrCat("field \"", key, "\" is not ", type_name, ": ",
                                it->dump().substr(0, 80)));
    }
    return &*it;
  }
  // An integer in [lo, hi].
  absl::StatusOr<int64_t> Int(const char* key, int64_t lo, int64_t hi) const {
    MOE_ASSIGN_OR_RETURN(const json* v, Field(key, json::value_t::number_integer, "an integer"));
    return CheckInt(*v, key, lo, hi);
  }
  absl::StatusOr<int64_t> CheckInt(const json& v, absl::string_view what, int64_t lo,
                                   int64_t hi) const {
    if (!v.is_number_integer()) return Error(absl::StrCat(what, " is not an integer"));
    // JSON non-negative integers parse as unsigned: compare those unsigned (no wrap).
    if (v.is_number_unsigned() ? (v.get<uint64_t>() > uint64_t(hi) ||
                                  (lo > 0 && v.get<uint64_t>() < uint64_t(lo)))
                               : (v.get<int64_t>() < lo || v.get<int64_t>() > hi)) {
      return Error(absl::StrCat(what, " must be in [", lo, ", ", hi, "], got ", v.dump()));
    }
    return v.get<int64_t>();
  }
  absl::StatusOr<std::string> String(const char* key) const {
    MOE_ASSIGN_OR_RETURN(const json* v, Field(key, json::value_t::string, "a string"));
    return v->get<std::string>();
  }
  Reader Child(const json& j, absl::string_view key) const { return Reader(j, Path(key), source_); }

 private:
  const json& j_;
  std::string path_;
  absl::string_view source_;
};

constexpr int64_t kMaxBytes = int64_t{1} << 50;  // 1 PiB: above any model file

absl::StatusOr<MatrixSpec> ReadSpec(const Reader& r, DType dtype16) {
  MatrixSpec spec;
  MOE_ASSIGN_OR_RETURN(int64_t bits, r.Int("bits", 0, 64));
  if (!IsSupportedBits(static_cast<int>(bits))) {
    return r.Error(absl::StrCat("bits ", bits, " is not one of 2, 3, 4, 8, 16"));
  }
  spec.bits = static_cast<int>(bits);
  spec.dtype16 = dtype16;
  if (spec.quantized()) {
    MOE_ASSIGN_OR_RETURN(spec.group_size, r.Int("group_size", 1, kMaxGroupSize));
    if (spec.group_size % kBlock != 0) {
      return r.Error(absl::StrCat("group_size ", spec.group_size, " is not a multiple of ", kBlock));
    }
  }
  return spec;
}

json SpecJson(const MatrixSpec& spec) {
  json j = {{"bits", spec.bits}};
  if (spec.quantized()) j["group_size"] = spec.group_size;
  else j["dtype"] = std::string(DTypeName(spec.dtype16));
  return j;
}

bool SameSpec(const MatrixSpec& a, const MatrixSpec& b) {
  return a.bits == b.bits && (a.quantized() ? a.group_size == b.group_size : a.dtype16 == b.dtype16);
}

}  // namespace

absl::Status ExpertBlobLayout::Compute(const ModelConfig& c, const MatrixSpec& spec,
                                       ExpertBlobLayout* out) {
  ExpertBlobLayout l;
  MOE_RETURN_IF_ERROR(MatrixLayout::Compute(c.intermediate_size, c.hidden_size, spec, "expert w1", &l.w1));
  MOE_RETURN_IF_ERROR(MatrixLayout::Compute(c.intermediate_size, c.hidden_size, spec, "expert w3", &l.w3));
  MOE_RETURN_IF_ERROR(MatrixLayout::Compute(c.hidden_size, c.intermediate_size, spec, "expert w2", &l.w2));
  l.w1_offset = 0;
  l.w3_offset = l.w1.total_bytes;  // total_bytes are multiples of kSectionAlign
  l.w2_offset = l.w3_offset + l.w3.total_bytes;
  l.blob_bytes = l.w2_offset + l.w2.total_bytes;
  l.blob_stride = AlignUp(l.blob_bytes, kBlobAlignment);
  *out = l;
  return absl::OkStatus();
}

void ForEachDenseTensor(
    const ModelConfig& c, const MatrixSpec& attn, DType dtype16,
    const std::function<void(const std::string&, const std::vector<int64_t>&, const MatrixSpec&)>& visit) {
  MatrixSpec plain;
  plain.bits = 16;
  plain.dtype16 = dtype16;
  // The model's tensors but the routed experts (model_tensors.h): attention in its own
  // spec, everything else 16-bit.
  (void)ForEachModelTensor(c, /*experts=*/false, [&](const ModelTensor& t) {
    visit(t.name, t.shape, t.kind == TensorKind::kAttention ? attn : plain);
    return absl::OkStatus();
  });
}

const DenseTensor* OffloadManifest::FindDense(absl::string_view name) const {
  for (const DenseTensor& t : dense) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string OffloadManifest::Scheme() const {
  return absl::StrCat("attention ", attn_spec.ToString(), ", experts ", expert_spec.ToString(),
                      ", other ", DTypeName(dtype16), " (", method, ")");
}

absl::StatusOr<OffloadManifest> ParseOffloadManifest(absl::string_view text,
                                                     absl::string_view source) {
  if (text.size() > kMaxManifestBytes) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": manifest of ", text.size(),
                                                   " bytes exceeds the limit of ", kMaxManifestBytes));
  }
  MOE_ASSIGN_OR_RETURN(json j, ParseJsonObject(text, source));
  const Reader root(j, "", source);
  OffloadManifest m;
  MOE_ASSIGN_OR_RETURN(std::string format, root.String("format"));
  if (format != "moe-offload") {
    return root.Error(absl::StrCat("format is \"", format.substr(0, 40), "\", expected \"moe-offload\""));
  }
  MOE_ASSIGN_OR_RETURN(int64_t version, root.Int("version", 0, 1 << 30));
  if (version != kOffloadFormatVersion) {
    return root.Error(absl::StrCat("format version ", version, " is not supported (this build reads ",
                                   kOffloadFormatVersion, ")"));
  }
  MOE_ASSIGN_OR_RETURN(const json* config, root.Field("config", json::value_t::object, "an object"));
  m.config_json = *config;
  MOE_ASSIGN_OR_RETURN(m.config, ModelConfig::FromJson(config->dump(), absl::StrCat(source, ": config")));
  const ModelConfig& c = m.config;
  MOE_ASSIGN_OR_RETURN(m.method, root.String("method"));
  if (m.method != "hqq" && m.method != "rtn" && m.method != "none") {
    return root.Error(absl::StrCat("method \"", m.method.substr(0, 40), "\" is not hqq, rtn or none"));
  }
  MOE_ASSIGN_OR_RETURN(std::string dtype16, root.String("dtype16"));
  if (dtype16 == "BF16") {
    m.dtype16 = DType::kBF16;
  } else if (dtype16 == "F16") {
    m.dtype16 = DType::kF16;
  } else {
    return root.Error(absl::StrCat("dtype16 \"", dtype16.substr(0, 40), "\" is not BF16 or F16"));
  }
  MOE_ASSIGN_OR_RETURN(const json* attn, root.Field("attention", json::value_t::object, "an object"));
  MOE_ASSIGN_OR_RETURN(m.attn_spec, ReadSpec(root.Child(*attn, "attention"), m.dtype16));

  // Experts: the blob layout must be exactly what the config and scheme imply.
  MOE_ASSIGN_OR_RETURN(const json* ex, root.Field("experts", json::value_t::object, "an object"));
  const Reader er = root.Child(*ex, "experts");
  MOE_ASSIGN_OR_RETURN(m.expert_spec, ReadSpec(er, m.dtype16));
  {
    const absl::Status s = ExpertBlobLayout::Compute(c, m.expert_spec, &m.expert);
    if (!s.ok()) return er.Error(s.message());
  }
  MOE_ASSIGN_OR_RETURN(std::string experts_file, er.String("file"));
  if (experts_file != kExpertsFile) {
    return er.Error(absl::StrCat("file \"", experts_file.substr(0, 40), "\" is not \"", kExpertsFile, "\""));
  }
  MOE_ASSIGN_OR_RETURN(m.experts_bytes, er.Int("file_bytes", 0, kMaxBytes));
  MOE_ASSIGN_OR_RETURN(int64_t blob_bytes, er.Int("blob_bytes", 0, kMaxBytes));
  MOE_ASSIGN_OR_RETURN(int64_t blob_stride, er.Int("blob_stride", 0, kMaxBytes));
  if (blob_bytes != m.expert.blob_bytes || blob_stride != m.expert.blob_stride) {
    return er.Error(absl::StrCat("blob_bytes ", blob_bytes, " / blob_stride ", blob_stride,
                                 " do not match the ", m.expert.blob_bytes, " / ",
                                 m.expert.blob_stride, " that the config and ",
                                 m.expert_spec.ToString(), " imply"));
  }
  MOE_ASSIGN_OR_RETURN(const json* mats, er.Field("matrices", json::value_t::object, "an object"));
  const Reader mr = er.Child(*mats, "matrices");
  for (auto [name, offset, layout] :
       {std::tuple<const char*, int64_t, const MatrixLayout*>{"w1", m.expert.w1_offset, &m.expert.w1},
        {"w3", m.expert.w3_offset, &m.expert.w3},
        {"w2", m.expert.w2_offset, &m.expert.w2}}) {
    MOE_ASSIGN_OR_RETURN(const json* w, mr.Field(name, json::value_t::object, "an object"));
    const Reader wr = mr.Child(*w, name);
    MOE_ASSIGN_OR_RETURN(int64_t off, wr.Int("offset", 0, kMaxBytes));
    MOE_ASSIGN_OR_RETURN(int64_t bytes, wr.Int("bytes", 0, kMaxBytes));
    if (off != offset || bytes != layout->total_bytes) {
      return wr.Error(absl::StrCat("offset ", off, ", bytes ", bytes, " do not match the expected ",
                                   offset, ", ", layout->total_bytes));
    }
  }
  MOE_ASSIGN_OR_RETURN(const json* blobs, er.Field("blobs", json::value_t::array, "an array"));
  // Layers are numbered among the sparse ones (ModelConfig::ExpertLayer).
  const int64_t expert_layers = c.num_expert_layers();
  const int64_t num_blobs = expert_layers * c.num_local_experts;
  if (int64_t(blobs->size()) != num_blobs) {
    return er.Error(absl::StrCat("blobs lists ", blobs->size(), " experts but the config has ",
                                 expert_layers, " expert layers x ", c.num_local_experts,
                                 " experts"));
  }
  m.blob_offsets.assign(num_blobs, -1);
  for (size_t i = 0; i < blobs->size(); ++i) {
    const json& b = (*blobs)[i];
    const std::string what = absl::StrCat("blobs[", i, "]");
    if (!b.is_array() || b.size() != 3) return er.Error(absl::StrCat(what, " is not [layer, expert, offset]"));
    MOE_ASSIGN_OR_RETURN(int64_t layer, er.CheckInt(b[0], what + " layer", 0, expert_layers - 1));
    MOE_ASSIGN_OR_RETURN(int64_t expert, er.CheckInt(b[1], what + " expert", 0, c.num_local_experts - 1));
    MOE_ASSIGN_OR_RETURN(int64_t offset, er.CheckInt(b[2], what + " offset", 0, kMaxBytes));
    if (offset % kBlobAlignment != 0) {
      return er.Error(absl::StrCat(what, ": offset ", offset, " is not a multiple of ", kBlobAlignment));
    }
    if (offset + m.expert.blob_stride > m.experts_bytes) {
      return er.Error(absl::StrCat(what, ": blob [", offset, ", ", offset + m.expert.blob_stride,
                                   ") runs past the end of ", kExpertsFile, " (", m.experts_bytes,
                                   " bytes)"));
    }
    int64_t& slot = m.blob_offsets[layer * c.num_local_experts + expert];
    if (slot >= 0) {
      return er.Error(absl::StrCat(what, ": expert (", layer, ", ", expert, ") is listed twice"));
    }
    slot = offset;
  }
  std::vector<int64_t> sorted = m.blob_offsets;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i] - sorted[i - 1] < m.expert.blob_stride) {
      return er.Error(absl::StrCat("blobs at offsets ", sorted[i - 1], " and ", sorted[i], " overlap"));
    }
  }

  // Dense tensors: exactly the set the config implies, each in its expected spec.
  MOE_ASSIGN_OR_RETURN(const json* dense, root.Field("dense", json::value_t::object, "an object"));
  const Reader dr = root.Child(*dense, "dense");
  MOE_ASSIGN_OR_RETURN(std::string dense_file, dr.String("file"));
  if (dense_file != kDenseFile) {
    return dr.Error(absl::StrCat("file \"", dense_file.substr(0, 40), "\" is not \"", kDenseFile, "\""));
  }
  MOE_ASSIGN_OR_RETURN(m.dense_bytes, dr.Int("file_bytes", 0, kMaxBytes));
  MOE_ASSIGN_OR_RETURN(const json* tensors, dr.Field("tensors", json::value_t::array, "an array"));
  std::map<std::string, std::pair<std::vector<int64_t>, MatrixSpec>, std::less<>> expected;
  // Counted to a bound past the list's length: a hostile config may imply billions.
  const int64_t count_bound = int64_t(tensors->size()) + 1024;
  int64_t expected_count = 0;
  const absl::Status counted = ForEachModelTensor(c, /*experts=*/false, [&](const ModelTensor&) {
    return ++expected_count > count_bound ? absl::OutOfRangeError("more") : absl::OkStatus();
  });
  if (!counted.ok() || expected_count != int64_t(tensors->size())) {
    return dr.Error(absl::StrCat("tensors lists ", tensors->size(), " tensors but the config implies ",
                                 counted.ok() ? "" : "more than ", expected_count - !counted.ok()));
  }
  ForEachDenseTensor(c, m.attn_spec, m.dtype16,
                     [&](const std::string& name, const std::vector<int64_t>& shape,
                         const MatrixSpec& spec) { expected[name] = {shape, spec}; });
  for (size_t i = 0; i < tensors->size(); ++i) {
    const Reader tr = dr.Child((*tensors)[i], absl::StrCat("tensors[", i, "]"));
    MOE_ASSIGN_OR_RETURN(std::string name, tr.String("name"));
    const auto it = expected.find(name);
    if (it == expected.end()) {
      return tr.Error(absl::StrCat("\"", name.substr(0, 80), "\" is not a dense tensor of this config, or is listed twice"));
    }
    DenseTensor t;
    t.name = name;
    MOE_ASSIGN_OR_RETURN(const json* shape, tr.Field("shape", json::value_t::array, "an array"));
    if (shape->size() > 2) return tr.Error("shape has more than 2 dimensions");
    for (const json& d : *shape) {
      MOE_ASSIGN_OR_RETURN(int64_t dim, tr.CheckInt(d, "a dimension", 1, int64_t{1} << 24));
      t.shape.push_back(dim);
    }
    if (t.shape != it->second.first) {
      return tr.Error(absl::StrCat("\"", name, "\" has shape [", absl::StrJoin(t.shape, ", "),
                                   "] but the config implies [", absl::StrJoin(it->second.first, ", "), "]"));
    }
    MOE_ASSIGN_OR_RETURN(MatrixSpec spec, ReadSpec(tr, m.dtype16));
    if (!spec.quantized()) {
      MOE_ASSIGN_OR_RETURN(std::string dtype, tr.String("dtype"));
      if (dtype != DTypeName(m.dtype16)) {
        return tr.Error(absl::StrCat("dtype \"", dtype.substr(0, 40), "\" is not the manifest's dtype16 ",
                                     DTypeName(m.dtype16)));
      }
    }
    if (!SameSpec(spec, it->second.second)) {
      return tr.Error(absl::StrCat("\"", name, "\" is stored as ", spec.ToString(), " but the scheme says ",
                                   it->second.second.ToString()));
    }
    const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
    const int64_t cols = t.shape.back();
    {
      const absl::Status s = MatrixLayout::Compute(rows, cols, spec, name, &t.layout);
      if (!s.ok()) return tr.Error(s.message());
    }
    MOE_ASSIGN_OR_RETURN(t.offset, tr.Int("offset", 0, kMaxBytes));
    MOE_ASSIGN_OR_RETURN(int64_t bytes, tr.Int("bytes", 0, kMaxBytes));
    if (bytes != t.layout.total_bytes) {
      return tr.Error(absl::StrCat("\"", name, "\" has ", bytes, " bytes but its shape and ",
                                   spec.ToString(), " imply ", t.layout.total_bytes));
    }
    if (t.offset % kSectionAlign != 0) {
      return tr.Error(absl::StrCat("offset ", t.offset, " is not a multiple of ", kSectionAlign));
    }
    if (t.offset + bytes > m.dense_bytes) {
      return tr.Error(absl::StrCat("\"", name, "\" [", t.offset, ", ", t.offset + bytes,
                                   ") runs past the end of ", kDenseFile, " (", m.dense_bytes, " bytes)"));
    }
    expected.erase(it);
    m.dense.push_back(std::move(t));
  }
  std::vector<const DenseTensor*> by_offset;
  for (const DenseTensor& t : m.dense) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const DenseTensor* a, const DenseTensor* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i - 1]->offset + by_offset[i - 1]->layout.total_bytes > by_offset[i]->offset) {
      return dr.Error(absl::StrCat("tensors \"", by_offset[i - 1]->name, "\" and \"",
                                   by_offset[i]->name, "\" overlap"));
    }
  }
  if (const auto it = j.find("stats"); it != j.end() && it->is_object()) {
    for (auto [key, dst] : {std::pair<const char*, double*>{"attn_rel_error", &m.attn_rel_error},
                            {"expert_rel_error", &m.expert_rel_error}}) {
      const auto v = it->find(key);
      if (v != it->end() && v->is_number() && std::isfinite(v->get<double>())) *dst = v->get<double>();
    }
  }
  return m;
}

std::string SerializeOffloadManifest(const OffloadManifest& m) {
  json j;
  j["format"] = "moe-offload";
  j["version"] = m.version;
  j["config"] = m.config_json;
  j["method"] = m.method;
  j["dtype16"] = std::string(DTypeName(m.dtype16));
  j["attention"] = SpecJson(m.attn_spec);
  json ex = SpecJson(m.expert_spec);
  ex["file"] = kExpertsFile;
  ex["file_bytes"] = m.experts_bytes;
  ex["blob_bytes"] = m.expert.blob_bytes;
  ex["blob_stride"] = m.expert.blob_stride;
  ex["matrices"] = {
      {"w1", {{"offset", m.expert.w1_offset}, {"bytes", m.expert.w1.total_bytes}}},
      {"w3", {{"offset", m.expert.w3_offset}, {"bytes", m.expert.w3.total_bytes}}},
      {"w2", {{"offset", m.expert.w2_offset}, {"bytes", m.expert.w2.total_bytes}}}};
  json blobs = json::array();
  for (int64_t l = 0; l < m.config.num_expert_layers(); ++l) {
    for (int64_t e = 0; e < m.config.num_local_experts; ++e) {
      blobs.push_back({l, e, m.blob_offset(int(l), int(e))});
    }
  }
  ex["blobs"] = std::move(blobs);
  j["experts"] = std::move(ex);
  json tensors = json::array();
  for (const DenseTensor& t : m.dense) {
    json tj = SpecJson(t.layout.spec);
    tj["name"] = t.name;
    tj["shape"] = t.shape;
    tj["offset"] = t.offset;
    tj["bytes"] = t.layout.total_bytes;
    tensors.push_back(std::move(tj));
  }
  j["dense"] = {{"file", kDenseFile}, {"file_bytes", m.dense_bytes}, {"tensors", std::move(tensors)}};
  j["stats"] = {{"attn_rel_error", m.attn_rel_error}, {"expert_rel_error", m.expert_rel_error}};
  return j.dump(1);
}

bool OffloadModel::IsOffloadDir(const std::string& dir) {
  std::error_code ec;
  return std::filesystem::exists(std::filesystem::path(dir) / kManifestFile, ec);
}

absl::StatusOr<std::unique_ptr<OffloadModel>> OffloadModel::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  std::unique_ptr<OffloadModel> model(new OffloadModel());
  model->dir_ = dir;
  const std::string manifest_path = (fs::path(dir) / kManifestFile).string();
  MOE_ASSIGN_OR_RETURN(MappedFile manifest_file, MappedFile::Open(manifest_path));
  const auto bytes = manifest_file.bytes();
  MOE_ASSIGN_OR_RETURN(model->manifest_,
                       ParseOffloadManifest(absl::string_view(reinterpret_cast<const char*>(bytes.data()),
                                                              bytes.size()),
                                            manifest_path));
  const OffloadManifest& m = model->manifest_;
  for (auto [name, expected, slot] :
       {std::tuple<const char*, int64_t, std::unique_ptr<MappedFile>*>{kDenseFile, m.dense_bytes, &model->dense_},
        {kExpertsFile, m.experts_bytes, &model->experts_}}) {
    const std::string path = (fs::path(dir) / name).string();
    MOE_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
    if (int64_t(file.bytes().size()) != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": file has ", file.bytes().size(), " bytes but ", manifest_path, " says ", expected,
          int64_t(file.bytes().size()) < expected ? " (truncated?)" : ""));
    }
    *slot = std::make_unique<MappedFile>(std::move(file));
  }
  return model;
}

absl::StatusOr<MatrixView> OffloadModel::Dense(absl::string_view name) const {
  const DenseTensor* t = manifest_.FindDense(name);
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat(dir_, "/", kManifestFile, ": no dense tensor \"", name, "\""));
  }
  return MatrixView{t->layout, dense_->bytes().data() + t->offset};
}

absl::Status OffloadModel::ReadDenseF32(absl::string_view name, float* dst) const {
  MOE_ASSIGN_OR_RETURN(MatrixView view, Dense(name));
  DequantizeRowsReference(view, 0, view.layout.rows, dst);
  return absl::OkStatus();
}

const uint8_t* OffloadModel::ExpertBlob(int layer, int expert) const {
  return experts_->bytes().data() + manifest_.blob_offset(layer, expert);
}

}  // namespace moe::quant
