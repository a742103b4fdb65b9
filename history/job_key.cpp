// Job keys from model file hashes (XXH3-128, streamed) and external command templates.
#include "history/job_key.h"

#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fmt/format.h>
#include <memory>

namespace ab {
namespace {

// 1 MiB reads: large enough that hashing runs at disk speed, small enough to not matter in RSS.
constexpr std::size_t kReadChunkBytes = 1 << 20;

struct StateDeleter {
  void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};
struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

// Feeds the file into `state`. Returns an empty string, or a user-facing error.
std::string hash_file(const std::filesystem::path& path, XXH3_state_t* state, bool missing_ok,
                      const char* what = "the model file") {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (!file) {
    if (missing_ok && errno == ENOENT) return {};
    return fmt::format("{}: cannot read {} ({}); check the path and its permissions",
                       path.string(), what, std::strerror(errno));
  }
  std::vector<char> buf(kReadChunkBytes);
  for (;;) {
    const std::size_t got = std::fread(buf.data(), 1, buf.size(), file.get());
    if (got > 0) XXH3_128bits_update(state, buf.data(), got);
    if (got < buf.size()) {
      if (std::ferror(file.get()))
        return fmt::format("{}: read error while hashing {} ({}); check the disk",
                           path.string(), what, std::strerror(errno));
      return {};
    }
  }
}

std::string hex_digest(XXH3_state_t* state) {
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(state));
  std::string hex;
  for (unsigned char byte : canon.digest) hex += fmt::format("{:02x}", byte);
  return hex;
}

}  // namespace

Result<std::string> content_hash(const std::filesystem::path& path) {
  std::unique_ptr<XXH3_state_t, StateDeleter> state(XXH3_createState());
  if (!state || XXH3_128bits_reset(state.get()) != XXH_OK)
    return Result<std::string>::failure("cannot allocate the XXH3 hash state (out of memory?)");
  if (auto err = hash_file(path, state.get(), false, "the file"); !err.empty()) return Result<std::string>::failure(err);
  return hex_digest(state.get());
}

Result<std::string> job_key_for_model(const std::filesystem::path& model_path) {
  std::unique_ptr<XXH3_state_t, StateDeleter> state(XXH3_createState());
  if (!state || XXH3_128bits_reset(state.get()) != XXH_OK)
    return Result<std::string>::failure("cannot allocate the XXH3 hash state (out of memory?)");
  if (auto err = hash_file(model_path, state.get(), false); !err.empty()) return Result<std::string>::failure(err);
  // A separator byte between the two files so that moving bytes from model to sidecar changes
  // the key.
  const char sep = '\0';
  XXH3_128bits_update(state.get(), &sep, 1);
  if (auto err = hash_file(sidecar_path(model_path), state.get(), true); !err.empty())
    return Result<std::string>::failure(err);
  return "ctc:" + hex_digest(state.get());
}

std::string job_key_for_command(const std::vector<std::string>& argv_template) {
  return "cmd:" + fmt::format("{}", fmt::join(argv_template, " "));
}

}  // namespace ab
