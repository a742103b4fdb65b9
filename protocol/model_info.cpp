// Sidecar JSON parsing for the worker's model (see model_info.h).
#include "protocol/model_info.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace ab {

int ModelInfo::index_of(std::string_view label) const {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] == label) return static_cast<int>(i);
  }
  return -1;
}

namespace {

ModelInfoParse fail(std::string message) {
  ModelInfoParse r;
  r.error = std::move(message);
  return r;
}

}  // namespace

ModelInfoParse parse_model_info(std::string_view json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return fail("not valid JSON");
  if (!j.is_object()) return fail("expected a JSON object");

  ModelInfo info;
  const auto labels = j.find("labels");
  if (labels == j.end() || !labels->is_array() || labels->empty()) {
    return fail("\"labels\" must be a non-empty array of strings");
  }
  for (const auto& l : *labels) {
    if (!l.is_string()) return fail("\"labels\" must be a non-empty array of strings");
    info.labels.push_back(l.get<std::string>());
  }
  const int n = static_cast<int>(info.labels.size());
  auto index_field = [&](const char* key, bool required, std::optional<int>& out) -> std::string {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
      return required ? std::string("\"") + key + "\" is required" : std::string();
    }
    if (!it->is_number_integer() || it->get<long long>() < 0 || it->get<long long>() >= n) {
      return std::string("\"") + key + "\" must be a label index in [0, " + std::to_string(n) + ")";
    }
    out = it->get<int>();
    return {};
  };
  std::optional<int> blank;
  if (auto e = index_field("blank", true, blank); !e.empty()) return fail(e);
  info.blank = *blank;
  if (auto e = index_field("star", false, info.star); !e.empty()) return fail(e);
  if (info.star && *info.star == info.blank) return fail("\"star\" and \"blank\" must differ");

  if (const auto it = j.find("word_separator"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return fail("\"word_separator\" must be a string or null");
    info.word_separator = it->get<std::string>();
    if (!info.word_separator.empty() && info.index_of(info.word_separator) < 0) {
      return fail("\"word_separator\" \"" + info.word_separator + "\" is not one of the labels");
    }
  }
  auto positive = [&](const char* key, int& out) -> std::string {
    const auto it = j.find(key);
    if (it == j.end()) return std::string("\"") + key + "\" is required";
    if (!it->is_number_integer() || it->get<long long>() <= 0 || it->get<long long>() > 10'000'000) {
      return std::string("\"") + key + "\" must be a positive integer";
    }
    out = it->get<int>();
    return {};
  };
  if (auto e = positive("sample_rate", info.sample_rate_hz); !e.empty()) return fail(e);
  if (auto e = positive("samples_per_frame", info.samples_per_frame); !e.empty()) return fail(e);

  const auto outputs = j.find("outputs");
  if (outputs == j.end() || !outputs->is_string()) {
    return fail("\"outputs\" must be \"logits\" or \"log_probs\"");
  }
  if (*outputs == "logits") {
    info.outputs = ModelInfo::Outputs::kLogits;
  } else if (*outputs == "log_probs") {
    info.outputs = ModelInfo::Outputs::kLogProbs;
  } else {
    return fail("\"outputs\" must be \"logits\" or \"log_probs\", not \"" + outputs->get<std::string>() + "\"");
  }
  ModelInfoParse r;
  r.info = std::move(info);
  return r;
}

ModelInfoParse read_model_info(const std::filesystem::path& model_path) {
  const auto path = sidecar_path(model_path);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return fail(path.string() + ": cannot read the model's sidecar JSON; it must sit beside " +
                model_path.filename().string() + " with the same stem (see docs/worker-protocol.md)");
  }
  std::ostringstream text;
  text << in.rdbuf();
  ModelInfoParse r = parse_model_info(text.str());
  if (!r.info) r.error = path.string() + ": " + r.error + " (see docs/worker-protocol.md)";
  return r;
}

LabelSet label_set_of(const ModelInfo& info) {
  LabelSet l;
  l.labels = info.labels;
  l.blank = info.blank;
  l.star = info.star;
  l.word_separator = info.word_separator;
  return l;
}

}  // namespace ab
