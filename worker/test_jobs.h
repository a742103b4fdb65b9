// Test helpers shared by the worker's loop and process tests: job lines and JSON outputs.
#pragma once

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace ab::test {

/// One job line of the worker protocol (docs/worker-protocol.md).
inline std::string job_line(int id, const std::string& audio, const std::string& out, const std::string& task,
                            const std::string& transcript = "") {
  nlohmann::json j{{"id", id}, {"audio", audio}, {"out", out}, {"task", task}};
  if (!transcript.empty()) j["transcript"] = transcript;
  return j.dump();
}

/// Parses a JSON file the worker wrote.
inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

}  // namespace ab::test
