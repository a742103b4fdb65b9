// PSI parsing.
#include "memguard/psi.h"

#include <charconv>
#include <cmath>

#include "memguard/process_memory.h"
#include "memguard/text_fields.h"

namespace ab {
namespace {

bool parse_line(std::string_view rest, double* a10, double* a60, double* a300, std::uint64_t* total) {
  bool seen[4] = {false, false, false, false};
  for (auto tok = take_token(&rest); !tok.empty(); tok = take_token(&rest)) {
    auto eq = tok.find('=');
    if (eq == std::string_view::npos) return false;
    auto key = tok.substr(0, eq), val = tok.substr(eq + 1);
    if (key == "total") {
      auto v = parse_u64(val);
      if (!v) return false;
      *total = *v, seen[3] = true;
      continue;
    }
    double d = 0;
    auto [end, ec] = std::from_chars(val.data(), val.data() + val.size(), d);
    if (ec != std::errc() || end != val.data() + val.size() || !(d >= 0 && d <= 100)) return false;
    if (key == "avg10") *a10 = d, seen[0] = true;
    else if (key == "avg60") *a60 = d, seen[1] = true;
    else if (key == "avg300") *a300 = d, seen[2] = true;
  }
  return seen[0] && seen[1] && seen[2] && seen[3];
}

}  // namespace

std::optional<Psi> parse_psi(std::string_view text) {
  Psi p;
  bool have_some = false, bad = false;
  for_each_line(text, [&](std::string_view line) {
    std::string_view rest = line;
    auto kind = take_token(&rest);
    if (kind == "some") {
      have_some = parse_line(rest, &p.some_avg10, &p.some_avg60, &p.some_avg300, &p.some_total_us);
      bad |= !have_some;
    } else if (kind == "full") {
      p.has_full = parse_line(rest, &p.full_avg10, &p.full_avg60, &p.full_avg300, &p.full_total_us);
      bad |= !p.has_full;
    }
  });
  if (!have_some || bad) return std::nullopt;
  return p;
}

std::optional<Psi> read_psi(const std::filesystem::path& path) {
  auto text = read_small_file(path);
  if (!text) return std::nullopt;
  return parse_psi(*text);
}

}  // namespace ab
