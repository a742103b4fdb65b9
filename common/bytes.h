// Numbers as the program prints them, with the standard library alone (the pure core uses them).
#pragma once

#include <cstdint>
#include <string>

namespace ab {

/// "100 B", "1.5 KiB", "800.0 MiB", "3.0 GiB", "1.5 TiB": one decimal above bytes.
std::string format_bytes(std::uint64_t bytes);

/// `value` with `decimals` digits after the point ("%.*f"): fixed(12.345, 1) is "12.3".
std::string fixed(double value, int decimals);

}  // namespace ab
