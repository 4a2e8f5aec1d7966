#include "common/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_util.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace moe {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view what) { return absl::InvalidArgumentError(what); }

uint64_t ReadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const json& entry,
                                      uint64_t data_size) {
  const std::string where = absl::StrCat("tensor ", QuoteForMessage(name));
  if (!entry.is_object()) return Invalid(absl::StrCat(where, ": entry is not a JSON object"));
  TensorInfo info;
  info.name = name;

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return Invalid(absl::StrCat(where, ": missing or non-string \"dtype\""));
  }
  auto dtype = ParseDType(dtype_it->get_ref<const std::string&>());
  if (!dtype.ok()) return Annotate(dtype.status(), where);
  info.dtype = *dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return Invalid(absl::StrCat(where, ": missing or non-array \"shape\""));
  }
  uint64_t elements = 1;
  bool overflow = false;
  for (const json& dim : *shape_it) {
    if (dim.is_number_integer() && !dim.is_number_unsigned() && dim.get<int64_t>() < 0) {
      return Invalid(absl::StrCat(where, ": negative dimension ", dim.get<int64_t>()));
    }
    if (!dim.is_number_unsigned()) {
      return Invalid(absl::StrCat(where, ": dimension ", dim.dump(), " is not an integer"));
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid(absl::StrCat(where, ": dimension ", d, " is too large"));
    }
    info.shape.push_back(static_cast<int64_t>(d));
    if (d != 0 && elements > std::numeric_limits<uint64_t>::max() / d) overflow = true;
    elements *= d;
  }
  const uint64_t elem = DTypeSize(info.dtype);
  if (overflow || elements > std::numeric_limits<uint64_t>::max() / elem) {
    return Invalid(absl::StrCat(where, ": byte size of shape ", info.ShapeString(),
                                " overflows 64 bits"));
  }

  const auto off_it = entry.find("data_offsets");
  if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 ||
      !(*off_it)[0].is_number_unsigned() || !(*off_it)[1].is_number_unsigned()) {
    return Invalid(absl::StrCat(
        where, ": \"data_offsets\" must be two non-negative integers [begin, end]"));
  }
  info.begin = (*off_it)[0].get<uint64_t>();
  info.end = (*off_it)[1].get<uint64_t>();
  if (info.begin > info.end) {
    return Invalid(absl::StrCat(where, ": data_offsets reversed [", info.begin, ", ",
                                info.end, "]"));
  }
  if (info.end > data_size) {
    return Invalid(absl::StrCat(where, ": data_offsets [", info.begin, ", ", info.end,
                                ") out of range of the ", data_size, "-byte data section"));
  }
  if (info.end - info.begin != elements * elem) {
    return Invalid(absl::StrCat(where, ": shape ", info.ShapeString(), " of ",
                                DTypeName(info.dtype), " is ", elements * elem,
                                " bytes but data_offsets span ", info.end - info.begin));
  }
  return info;
}

}  // namespace

int64_t TensorInfo::NumElements() const {
  // Unsigned: with a zero dimension the leading ones may multiply past int64 on the way to
  // 0. Otherwise ParseEntry has checked the product fits.
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return static_cast<int64_t>(n);
}

std::string TensorInfo::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::Span<const uint8_t> file) {
  if (file.size() < 8) {
    return Invalid(absl::StrCat("file is ", file.size(),
                                " bytes, shorter than the 8-byte header length"));
  }
  const uint64_t header_len = ReadLe64(file.data());
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return Invalid(absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_len > file.size() - 8) {
    return Invalid(absl::StrCat("header length ", header_len, " runs past the end of the ",
                                file.size(), "-byte file"));
  }
  const absl::string_view text(reinterpret_cast<const char*>(file.data() + 8), header_len);
  MOE_ASSIGN_OR_RETURN(json header, ParseJsonObject(text, "header"));

  SafetensorsHeader out;
  out.data_offset = 8 + header_len;
  const uint64_t data_size = file.size() - out.data_offset;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object()) return Invalid("\"__metadata__\" is not a JSON object");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          return Invalid(absl::StrCat("\"__metadata__\" value for ", QuoteForMessage(mk),
                                      " is not a string"));
        }
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    MOE_ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(key, value, data_size));
    out.tensors.push_back(std::move(info));
  }

  std::sort(out.tensors.begin(), out.tensors.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : out.tensors) {
    if (t.begin < expected) {
      return Invalid(absl::StrCat("tensors ", QuoteForMessage(previous->name), " and ",
                                  QuoteForMessage(t.name), " overlap in the data section"));
    }
    if (t.begin > expected) {
      return Invalid(absl::StrCat("gap of ", t.begin - expected, " bytes before tensor ",
                                  QuoteForMessage(t.name), " in the data section"));
    }
    expected = t.end;
    previous = &t;
  }
  if (expected != data_size) {
    return Invalid(absl::StrCat("data section is ", data_size, " bytes but tensors cover ",
                                expected));
  }
  return out;
}

SafetensorsFile::SafetensorsFile(MappedFile file, SafetensorsHeader header)
    : file_(std::move(file)), header_(std::move(header)) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].name] = i;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  MOE_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  auto header = ParseSafetensorsHeader(file.bytes());
  if (!header.ok()) return Annotate(header.status(), path);
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(std::move(file), *std::move(header)));
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::Span<const uint8_t> SafetensorsFile::Data(const TensorInfo& info) const {
  return file_.bytes().subspan(header_.data_offset + info.begin, info.NumBytes());
}

namespace {

// A shard named by an index must be a plain file name inside the checkpoint directory.
absl::Status CheckShardName(const std::string& index_path, const std::string& shard) {
  if (shard.empty() || shard.find('/') != std::string::npos || shard == "." ||
      shard == ".." || shard.find('\0') != std::string::npos) {
    return Invalid(absl::StrCat(index_path, ": shard ", QuoteForMessage(shard),
                                " is not a file name inside the checkpoint directory"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  namespace fs = std::filesystem;
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = dir;
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single_path = (fs::path(dir) / "model.safetensors").string();
  std::error_code ec;

  if (fs::exists(index_path, ec)) {
    MOE_ASSIGN_OR_RETURN(MappedFile index_file, MappedFile::Open(index_path));
    const auto bytes = index_file.bytes();
    auto index = ParseJsonObject(
        absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
        "index");
    if (!index.ok()) return Annotate(index.status(), index_path);
    const auto map_it = index->find("weight_map");
    if (map_it == index->end() || !map_it->is_object()) {
      return Invalid(absl::StrCat(index_path, ": missing \"weight_map\" object"));
    }
    std::map<std::string, const SafetensorsFile*> shards;
    for (const auto& [name, shard_value] : map_it->items()) {
      if (!shard_value.is_string()) {
        return Invalid(absl::StrCat(index_path, ": weight_map entry for ",
                                    QuoteForMessage(name), " is not a string"));
      }
      const std::string shard = shard_value.get<std::string>();
      MOE_RETURN_IF_ERROR(CheckShardName(index_path, shard));
      auto it = shards.find(shard);
      if (it == shards.end()) {
        MOE_ASSIGN_OR_RETURN(auto file,
                             SafetensorsFile::Open((fs::path(dir) / shard).string()));
        it = shards.emplace(shard, file.get()).first;
        ckpt->files_.push_back(std::move(file));
      }
      const TensorInfo* info = it->second->Find(name);
      if (info == nullptr) {
        return absl::NotFoundError(absl::StrCat(index_path, ": tensor ", QuoteForMessage(name),
                                                " is mapped to ", QuoteForMessage(shard),
                                                " but that shard does not contain it"));
      }
      ckpt->tensors_[name] = TensorRef{info, it->second};
    }
    return ckpt;
  }

  if (!fs::exists(single_path, ec)) {
    return absl::NotFoundError(absl::StrCat(
        dir, ": no model.safetensors or model.safetensors.index.json in the directory"));
  }
  MOE_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single_path));
  for (const TensorInfo& info : file->tensors()) {
    ckpt->tensors_[info.name] = TensorRef{&info, file.get()};
  }
  ckpt->files_.push_back(std::move(file));
  return ckpt;
}

bool Checkpoint::Contains(absl::string_view name) const {
  return tensors_.find(name) != tensors_.end();
}

absl::StatusOr<Checkpoint::TensorRef> Checkpoint::Find(absl::string_view name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(
        absl::StrCat(dir_, ": missing tensor \"", name, "\" in the checkpoint"));
  }
  return it->second;
}

absl::Status Checkpoint::ReadF32(absl::string_view name, absl::Span<const int64_t> shape,
                                 float* dst) const {
  MOE_ASSIGN_OR_RETURN(TensorRef ref, Find(name));
  if (!std::equal(shape.begin(), shape.end(), ref.info->shape.begin(),
                  ref.info->shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(
        ref.file->path(), ": tensor \"", name, "\" has shape ", ref.info->ShapeString(),
        " but the config requires [", absl::StrJoin(shape, ", "), "]"));
  }
  ConvertToF32(ref.file->Data(*ref.info).data(), ref.info->dtype,
               static_cast<size_t>(ref.info->NumElements()), dst);
  return absl::OkStatus();
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, ref] : tensors_) names.push_back(name);
  return names;
}

uint64_t Checkpoint::TotalBytes() const {
  uint64_t total = 0;
  for (const auto& [name, ref] : tensors_) total += ref.info->NumBytes();
  return total;
}

}  // namespace moe
