// Where a model file's sidecar JSON lives; one definition for the job key (history) and the
// sidecar reader (protocol), which both link into align-batch.
#pragma once

#include <filesystem>

namespace ab {

/// The sidecar's path for a model file: same directory and stem, extension ".json".
inline std::filesystem::path sidecar_path(const std::filesystem::path& model_path) {
  std::filesystem::path p = model_path;
  p.replace_extension(".json");
  return p;
}

}  // namespace ab
