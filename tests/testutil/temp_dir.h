// A temporary directory for one test, removed with everything in it when the test ends.
#pragma once
#include <filesystem>
#include <string>

namespace ab::test {

/// Creates a fresh directory under $TMPDIR (or /tmp); removes it recursively on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "ab-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  /// Writes `content` to `relative` (creating parent directories) and returns the full path.
  std::filesystem::path write(const std::string& relative, const std::string& content) const;

 private:
  std::filesystem::path path_;
};

}  // namespace ab::test
