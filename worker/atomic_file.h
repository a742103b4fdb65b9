// Atomic file writing: a temporary file in the same directory, fsync, then rename over the target.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace ab {

/// Writes `content` to `path` so that `path` either keeps its old state or holds all of `content`,
/// never a part: writes `.<name, at most 100 bytes>.tmp.<pid>.<n>` in the same directory (so
/// it fits NAME_MAX for any final name), fsyncs it, renames it over
/// `path`, then fsyncs the directory. On any failure the temporary file is removed and the error
/// names `path` and the failing step. Returns `path`.
Result<std::string> write_file_atomically(const std::string& path, std::string_view content);

}  // namespace ab
