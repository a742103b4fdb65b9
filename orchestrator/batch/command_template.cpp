// CommandTemplate: placeholder expansion for the external-command engine; argv only, never a shell.
#include "orchestrator/batch/command_template.h"

#include <cassert>
#include <utility>

namespace ab {

std::string safe_path_argument(const std::filesystem::path& path) {
  std::string s = path.string();
  if (!s.empty() && s[0] == '-') return "./" + s;
  return s;
}

Result<std::string> expand_argument(const std::string& arg, const CommandPlaceholders& values) {
  using R = Result<std::string>;
  std::string result;
  for (std::size_t i = 0; i < arg.size();) {
    char c = arg[i];
    if (c == '{' && i + 1 < arg.size() && arg[i + 1] == '{') {
      result += '{';
      i += 2;
    } else if (c == '}' && i + 1 < arg.size() && arg[i + 1] == '}') {
      result += '}';
      i += 2;
    } else if (c == '{') {
      std::size_t close = arg.find('}', i);
      if (close == std::string::npos) {
        return R::failure("'" + arg + "': '{' without '}'; write {{ for a literal brace");
      }
      std::string name = arg.substr(i + 1, close - i - 1);
      if (name == "in") {
        result += safe_path_argument(values.in);
      } else if (name == "out") {
        result += safe_path_argument(values.out);
      } else if (name == "stem") {
        result += values.stem;
      } else if (name == "dir") {
        result += safe_path_argument(values.dir);
      } else {
        return R::failure("'" + arg + "': unknown placeholder {" + name +
                          "}; use {in}, {out}, {stem} or {dir}, and {{ }} for literal braces");
      }
      i = close + 1;
    } else if (c == '}') {
      return R::failure("'" + arg + "': '}' without '{'; write }} for a literal brace");
    } else {
      result += c;
      ++i;
    }
  }
  return result;
}

Result<CommandTemplate> CommandTemplate::parse(const std::vector<std::string>& argv) {
  if (argv.empty() || argv[0].empty())
    return Result<CommandTemplate>::failure("no command after '--'; write e.g. `align-batch corpus/ -- mytool {in} {out}`");
  CommandPlaceholders probe{"/in", "/out", "stem", "/dir"};
  bool mentions_in = false;
  for (const auto& arg : argv) {
    if (auto expanded = expand_argument(arg, probe); !expanded) return Result<CommandTemplate>::failure(expanded.error());
    if (arg.find("{in}") != std::string::npos) mentions_in = true;
  }
  CommandTemplate t;
  t.argv_ = argv;
  if (!mentions_in) t.argv_.push_back("{in}");
  return t;
}

std::vector<std::string> CommandTemplate::expand(const CommandPlaceholders& values) const {
  std::vector<std::string> out;
  out.reserve(argv_.size());
  for (const auto& arg : argv_) {
    // parse() validated every argument, so expansion cannot fail here.
    Result<std::string> expanded = expand_argument(arg, values);
    assert(expanded.ok());
    out.push_back(std::move(expanded.value()));
  }
  return out;
}

std::string CommandTemplate::text() const {
  std::string s;
  for (const auto& a : argv_) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace ab
