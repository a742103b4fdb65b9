// CommandTemplate: placeholder expansion for the external-command engine; argv only, never a shell.
#include "orchestrator/batch/command_template.h"

namespace ab {

std::string safe_path_argument(const std::filesystem::path& path) {
  std::string s = path.string();
  if (!s.empty() && s[0] == '-') return "./" + s;
  return s;
}

bool expand_argument(const std::string& arg, const CommandPlaceholders& values, std::string& result,
                     std::string& error) {
  result.clear();
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
        error = "'" + arg + "': '{' without '}'; write {{ for a literal brace";
        return false;
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
        error = "'" + arg + "': unknown placeholder {" + name +
                "}; use {in}, {out}, {stem} or {dir}, and {{ }} for literal braces";
        return false;
      }
      i = close + 1;
    } else if (c == '}') {
      error = "'" + arg + "': '}' without '{'; write }} for a literal brace";
      return false;
    } else {
      result += c;
      ++i;
    }
  }
  return true;
}

std::optional<CommandTemplate> CommandTemplate::parse(const std::vector<std::string>& argv, std::string& error) {
  if (argv.empty() || argv[0].empty()) {
    error = "no command after '--'; write e.g. `align-batch corpus/ -- mytool {in} {out}`";
    return std::nullopt;
  }
  CommandPlaceholders probe{"/in", "/out", "stem", "/dir"};
  bool mentions_in = false;
  std::string expanded;
  for (const auto& arg : argv) {
    if (!expand_argument(arg, probe, expanded, error)) return std::nullopt;
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
  std::string expanded, error;
  for (const auto& arg : argv_) {
    // parse() validated every argument, so expansion cannot fail here.
    expand_argument(arg, values, expanded, error);
    out.push_back(expanded);
  }
  return out;
}

std::string CommandTemplate::text() const {
  std::string s;
  for (const auto& a : argv_) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace ab
