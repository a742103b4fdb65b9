// Parsing and printing memory sizes; pure functions.
#include "memguard/size.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace ab {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// A plain decimal number: digits with at most one '.', at least one digit. No sign, no exponent,
// so "-1", "1e9", "nan" and "inf" never get this far.
bool split_number(std::string_view s, std::string_view* number, std::string_view* rest) {
  std::size_t i = 0, digits = 0;
  bool dot = false;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      ++digits;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
  }
  if (digits == 0) return false;
  *number = s.substr(0, i);
  *rest = s.substr(i);
  return true;
}

std::optional<std::uint64_t> unit_multiplier(std::string_view unit) {
  unit = trim(unit);
  if (unit.empty() || unit == "B" || unit == "b") return 1;
  std::uint64_t m = 0;
  switch (std::toupper(static_cast<unsigned char>(unit.front()))) {
    case 'K': m = 1ull << 10; break;
    case 'M': m = 1ull << 20; break;
    case 'G': m = 1ull << 30; break;
    case 'T': m = 1ull << 40; break;
    default: return std::nullopt;
  }
  unit.remove_prefix(1);
  if (unit.empty() || unit == "B" || unit == "iB" || unit == "ib") return m;
  return std::nullopt;
}

}  // namespace

std::optional<std::uint64_t> parse_size_bytes(std::string_view text) {
  std::string_view s = trim(text), number, rest;
  if (!split_number(s, &number, &rest)) return std::nullopt;
  auto multiplier = unit_multiplier(rest);
  if (!multiplier) return std::nullopt;

  if (number.find('.') == std::string_view::npos) {
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), n);
    if (ec != std::errc() || end != number.data() + number.size()) return std::nullopt;  // overflow
    if (n == 0 || n > std::numeric_limits<std::uint64_t>::max() / *multiplier) return std::nullopt;
    return n * *multiplier;
  }
  double d = 0;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), d);
  if (ec != std::errc() || end != number.data() + number.size() || !std::isfinite(d)) return std::nullopt;
  double bytes = std::floor(d * static_cast<double>(*multiplier));
  // 2^64 is exactly representable; anything at or above it does not fit.
  if (!(bytes >= 1) || bytes >= 18446744073709551616.0) return std::nullopt;
  return static_cast<std::uint64_t>(bytes);
}

Result<BudgetSpec> parse_budget_spec(std::string_view text, std::string_view flag) {
  std::string_view s = trim(text);
  auto fail = [&](std::string_view why) {
    return Result<BudgetSpec>::failure(fmt::format("{} '{}': {}; use e.g. 12G, 800M, 1.5T or 75%", flag, text, why));
  };
  if (!s.empty() && s.back() == '%') {
    std::string_view number, rest;
    if (!split_number(trim(s.substr(0, s.size() - 1)), &number, &rest) || !rest.empty())
      return fail("not a percentage");
    double p = 0;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), p);
    if (ec != std::errc() || end != number.data() + number.size()) return fail("not a percentage");
    if (!(p > 0) || p > 100) return fail("a percentage must be above 0 and at most 100");
    return BudgetSpec{0, p, true};
  }
  if (auto bytes = parse_size_bytes(s)) return BudgetSpec{*bytes, 0, false};
  std::string_view number, rest;
  if (split_number(s, &number, &rest) && unit_multiplier(rest)) return fail("must be above zero and below 16 EiB");
  return fail("not a size");
}

std::uint64_t resolve_budget_spec(const BudgetSpec& spec, std::uint64_t limit_bytes) {
  if (!spec.is_percent) return spec.bytes;
  return static_cast<std::uint64_t>(static_cast<long double>(limit_bytes) * spec.percent / 100.0L);
}

}  // namespace ab
