// Small tokenising helpers shared by memguard's pure parsers of /proc and cgroup text.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

namespace ab {

/// Above this a memory figure is corrupt, not real: 2^60 bytes (1 EiB) exceeds any x86-64 or
/// arm64 address space (at most 2^57 with 5-level paging). Also keeps kiB→bytes from overflowing.
inline constexpr std::uint64_t kMaxSaneBytes = 1ull << 60;

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/// Removes and returns the next whitespace-separated token ("" at the end).
inline std::string_view take_token(std::string_view* s) {
  std::size_t i = 0;
  while (i < s->size() && is_space((*s)[i])) ++i;
  std::size_t j = i;
  while (j < s->size() && !is_space((*s)[j])) ++j;
  auto token = s->substr(i, j - i);
  s->remove_prefix(j);
  return token;
}

/// The whole string as an unsigned decimal, or nullopt (signs, junk, overflow).
inline std::optional<std::uint64_t> parse_u64(std::string_view s) {
  std::uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

/// The next token as an unsigned decimal.
inline std::optional<std::uint64_t> take_u64(std::string_view* s) { return parse_u64(take_token(s)); }

template <typename F>
void for_each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    auto nl = text.find('\n');
    f(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

/// "Key:   value" → {"Key", "   value"}; no colon → {"", line}.
inline std::pair<std::string_view, std::string_view> split_key_value(std::string_view line) {
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return {{}, line};
  return {line.substr(0, colon), line.substr(colon + 1)};
}

/// "   1700 kB" → 1700 * 1024 bytes. The unit must be kB; absurd values are rejected.
inline std::optional<std::uint64_t> parse_kib_value(std::string_view value) {
  auto n = take_u64(&value);
  if (!n || take_token(&value) != "kB" || !take_token(&value).empty()) return std::nullopt;
  if (*n > kMaxSaneBytes / 1024) return std::nullopt;
  return *n * 1024;
}

}  // namespace ab
