// CommandTemplate: the external-command engine's argv after `--`, expanded per file with no shell.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "common/result.h"

namespace ab {

/// The values substituted for one file.
struct CommandPlaceholders {
  std::filesystem::path in;   ///< `{in}`: the audio file (absolute)
  std::filesystem::path out;  ///< `{out}`: the output path without extension (absolute)
  std::string stem;           ///< `{stem}`: the audio file's name without extension
  std::filesystem::path dir;  ///< `{dir}`: the directory holding the audio file (absolute)
};

/// A parsed argv template. Placeholders are `{in}`, `{out}`, `{stem}`, `{dir}`; `{{` and `}}` are
/// literal braces. If no argument mentions `{in}`, the input path is appended as the last argument
/// (as GNU parallel and xargs do).
class CommandTemplate {
 public:
  /// Parses `argv`; a bad template is an error naming the argument (for exit status 2).
  static Result<CommandTemplate> parse(const std::vector<std::string>& argv);

  /// The argv for one file. Every element is passed to execvp unchanged: spaces, quotes, `;`,
  /// `$()` and newlines in file names are inert. Path placeholders are absolute, so a file named
  /// `-x` reaches the program as `/abs/dir/-x`, never as an option.
  std::vector<std::string> expand(const CommandPlaceholders& values) const;

  /// The template as the user wrote it, joined by spaces (the history job key's input).
  std::string text() const;
  const std::vector<std::string>& argv() const { return argv_; }

 private:
  std::vector<std::string> argv_;
};

/// Pure: expands one template argument; an error on an unknown placeholder or a lone brace.
Result<std::string> expand_argument(const std::string& arg, const CommandPlaceholders& values);

/// A path as a safe argument: absolute stays; a relative path starting with '-' gets "./".
std::string safe_path_argument(const std::filesystem::path& path);

}  // namespace ab
