// Reading back what code under test wrote to a FILE* (a std::tmpfile() standing in for stdout).
#pragma once
#include <cstdio>
#include <string>

namespace ab::test {

/// Rewinds `f`, returns everything in it and closes it.
inline std::string read_all_and_close(std::FILE* f) {
  std::rewind(f);
  std::string text;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, f)) text.append(buf, n);
  std::fclose(f);
  return text;
}

}  // namespace ab::test
