#include "common/bytes.h"

#include <cstdio>
#include <iterator>

namespace ab {

std::string fixed(double value, int decimals) {
  char buf[64];
  const int n = std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  if (n >= 0 && static_cast<std::size_t>(n) < sizeof buf) return std::string(buf, static_cast<std::size_t>(n));
  std::string big(static_cast<std::size_t>(n > 0 ? n : 0) + 1, '\0');
  std::snprintf(big.data(), big.size(), "%.*f", decimals, value);
  big.pop_back();
  return big;
}

std::string format_bytes(std::uint64_t bytes) {
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes) / 1024.0;
  std::size_t u = 0;
  while (v >= 1024.0 && u + 1 < std::size(kUnits)) {
    v /= 1024.0;
    ++u;
  }
  return fixed(v, 1) + " " + kUnits[u];
}

}  // namespace ab
