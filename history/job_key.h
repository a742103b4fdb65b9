// Job keys: which jobs are comparable in history (same engine and model, or same external command).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/sidecar_path.h"

namespace ab {

/// "ctc:" + XXH3-128 hex of the model file's bytes followed by its sidecar's (MODEL.json beside
/// MODEL.pt, see docs/worker-protocol.md; absent sidecar hashes as empty). Streams the files, so a
/// multi-GiB model costs a read, not its size in memory. A changed model or sidecar is a new key.
/// Fails (naming the file, saying what to do) when the model or an existing sidecar cannot be read.
Result<std::string> job_key_for_model(const std::filesystem::path& model_path);

/// "cmd:" + the argument template joined with single spaces, placeholders ({in}, {out}) left
/// unexpanded, e.g. "cmd:mytool --fast {in} {out}".
std::string job_key_for_command(const std::vector<std::string>& argv_template);

/// XXH3-128 hex of a file's bytes (streamed): resume compares a transcript's content by it.
/// Fails (naming the file) when it cannot be read.
Result<std::string> content_hash(const std::filesystem::path& path);


}  // namespace ab
