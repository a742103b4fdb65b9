// File paths as bytes, carried exactly through JSON (the worker protocol) and shown escaped.
//
// A Linux file name is any bytes but '/' and NUL; JSON strings are UTF-8. A name from an old
// Latin-1 corpus ("caf\xe9.wav") is not UTF-8, so nlohmann's dump() throws on it. Such a path
// travels as {"hex": "2f636166e92e776176"} instead of a string (docs/worker-protocol.md), and is
// shown in logs and JSON events with each invalid byte written \xHH (header only, no LibTorch).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace ab {

/// Length of the valid UTF-8 sequence starting at `s[i]`, 0 if the byte there starts none
/// (overlong forms, surrogates and code points above U+10FFFF are invalid, as in RFC 3629).
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  std::uint32_t cp = 0;
  if ((c & 0xe0) == 0xc0) n = 2, cp = c & 0x1f;
  else if ((c & 0xf0) == 0xe0) n = 3, cp = c & 0x0f;
  else if ((c & 0xf8) == 0xf0) n = 4, cp = c & 0x07;
  else return 0;
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  static constexpr std::uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

inline bool is_valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

/// For logs, messages and JSON events: valid UTF-8 as it is, every other byte as \xHH. Always
/// valid UTF-8, so it can go into any JSON string.
inline std::string display_path(std::string_view s) {
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence_length(s, i);
    if (n == 0) {
      const auto c = static_cast<unsigned char>(s[i]);
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

/// A path for the protocol: a JSON string when it is valid UTF-8, else {"hex": "<its bytes>"}.
inline nlohmann::json path_to_json(std::string_view path) {
  if (is_valid_utf8(path)) return std::string(path);
  static const char* const kHex = "0123456789abcdef";
  std::string hex;
  hex.reserve(path.size() * 2);
  for (unsigned char c : path) {
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
  }
  return nlohmann::json{{"hex", hex}};
}

/// The bytes of a path sent by path_to_json; none if `j` is neither form (or the hex is bad).
inline std::optional<std::string> path_from_json(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (!j.is_object()) return std::nullopt;
  const auto it = j.find("hex");
  if (it == j.end() || !it->is_string()) return std::nullopt;
  const std::string& hex = it->get_ref<const std::string&>();
  if (hex.size() % 2 != 0) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi << 4 | lo);
  }
  return out;
}

}  // namespace ab
