// /proc/meminfo parsing.
#include "memguard/meminfo.h"

#include "memguard/process_memory.h"
#include "memguard/text_fields.h"

namespace ab {

std::optional<Meminfo> parse_meminfo(std::string_view text) {
  Meminfo m;
  for_each_line(text, [&](std::string_view line) {
    auto [key, value] = split_key_value(line);
    std::optional<std::uint64_t>* field = nullptr;
    if (key == "MemTotal") field = &m.mem_total_bytes;
    else if (key == "MemFree") field = &m.mem_free_bytes;
    else if (key == "MemAvailable") field = &m.mem_available_bytes;
    else if (key == "SwapTotal") field = &m.swap_total_bytes;
    else if (key == "SwapFree") field = &m.swap_free_bytes;
    if (field) *field = parse_kib_value(value);
  });
  if (!m.mem_total_bytes || *m.mem_total_bytes == 0) return std::nullopt;
  return m;
}

std::optional<Meminfo> read_meminfo(const std::filesystem::path& proc_root) {
  auto text = read_small_file(proc_root / "meminfo");
  if (!text) return std::nullopt;
  return parse_meminfo(*text);
}

}  // namespace ab
