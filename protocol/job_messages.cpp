// The job request, ready and result lines: written and read here for both sides of the pipe.
#include "protocol/job_messages.h"

#include <utility>

#include "protocol/wire_path.h"

namespace ab {
namespace {

using nlohmann::json;

/// A line as messages quote it; invalid UTF-8 is replaced, never thrown.
std::string quoted(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

/// A whole number >= 0 (a parsed line holds it as unsigned, one built in memory may hold it signed).
std::optional<std::uint64_t> unsigned_value(const json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(value.get<std::int64_t>());
  return std::nullopt;
}

std::optional<std::uint64_t> unsigned_field(const json& line, const char* name) {
  const auto it = line.find(name);
  return it == line.end() ? std::nullopt : unsigned_value(*it);
}

std::string string_field(const json& line, const char* name) {
  const auto it = line.find(name);
  return it != line.end() && it->is_string() ? it->get<std::string>() : std::string();
}

/// The path in `name`; none when absent, not a path or empty.
std::optional<std::string> path_field(const json& line, const char* name) {
  const auto it = line.find(name);
  if (it == line.end()) return std::nullopt;
  auto path = path_from_json(*it);
  if (!path || path->empty()) return std::nullopt;
  return path;
}

}  // namespace

std::string job_request_line(const JobRequest& r) {
  json line = {{"id", r.id}, {"audio", path_to_json(r.audio)}, {"out", path_to_json(r.out)}, {"task", r.task}};
  line["transcript"] = r.transcript ? path_to_json(*r.transcript) : json(nullptr);
  return line.dump();
}

Result<JobRequest> parse_job_request(const json& job) {
  using R = Result<JobRequest>;
  JobRequest r;
  const auto id = job.find("id");
  if (id == job.end() || !id->is_number_integer()) return R::failure("job without an integer \"id\": " + quoted(job));
  r.id = id->get<std::int64_t>();
  auto audio = path_field(job, "audio");
  if (!audio) return R::failure("job " + quoted(*id) + ": \"audio\" must be the audio file's path");
  r.audio = std::move(*audio);
  const std::string audio_shown = display_path(r.audio);
  if (const auto t = job.find("transcript"); t != job.end() && !t->is_null()) {
    auto bytes = path_from_json(*t);
    if (!bytes) return R::failure(audio_shown + ": job's \"transcript\" must be a path or null");
    if (!bytes->empty()) r.transcript = std::move(*bytes);
  }
  if (const auto t = job.find("task"); t != job.end()) r.task = t->is_string() ? t->get<std::string>() : quoted(*t);
  if (r.task == "auto") r.task = r.transcript ? "align" : "transcribe";
  if (r.task != "align" && r.task != "transcribe")
    return R::failure(audio_shown + ": unknown task \"" + r.task + "\"; use \"align\" or \"transcribe\"");
  if (r.task == "align" && !r.transcript) return R::failure(audio_shown + ": task \"align\" needs a \"transcript\" file");
  auto out = path_field(job, "out");
  if (!out) return R::failure(audio_shown + ": job has no \"out\" path (output path without extension)");
  r.out = std::move(*out);
  return r;
}

json to_json(const JobProgress& p) { return {{"id", p.id}, {"progress", p.fraction}}; }

json to_json(const ReadyLine& r) {
  if (!r.ready) return {{"ready", false}, {"error", r.error}};
  json line = {{"ready", true}, {"pid", r.pid}, {"sample_rate", r.sample_rate_hz}, {"labels", r.labels}};
  if (r.threads > 0) line["threads"] = r.threads;
  if (r.rss_bytes) line["rss_bytes"] = *r.rss_bytes;
  if (r.shared_weights_bytes) line["shared_weights_bytes"] = *r.shared_weights_bytes;
  if (!r.shared_weights_error.empty()) line["shared_weights_error"] = r.shared_weights_error;
  return line;
}

std::optional<ReadyLine> parse_ready_line(const json& line) {
  if (!line.is_object() || !line.contains("ready")) return std::nullopt;
  ReadyLine r;
  const json& ready = line["ready"];
  r.ready = ready.is_boolean() && ready.get<bool>();
  r.error = string_field(line, "error");
  if (const auto pid = line.find("pid"); pid != line.end() && pid->is_number_integer()) r.pid = pid->get<std::int64_t>();
  if (const auto rate = unsigned_field(line, "sample_rate")) r.sample_rate_hz = static_cast<int>(*rate);
  if (const auto labels = unsigned_field(line, "labels")) r.labels = static_cast<std::size_t>(*labels);
  if (const auto threads = unsigned_field(line, "threads")) r.threads = static_cast<int>(*threads);
  r.rss_bytes = unsigned_field(line, "rss_bytes");
  r.shared_weights_bytes = unsigned_field(line, "shared_weights_bytes");
  r.shared_weights_error = string_field(line, "shared_weights_error");
  return r;
}

JobResult job_failure(std::optional<std::int64_t> id, std::string error) {
  JobResult r;
  r.id = id;
  r.error = std::move(error);
  return r;
}

json to_json(const JobResult& r) {
  json line = r.figures.is_object() ? r.figures : json::object();
  line["id"] = r.id ? json(*r.id) : json(nullptr);
  line["ok"] = r.ok;
  if (!r.ok) line["error"] = r.error;
  if (r.ok) {
    json outputs = json::array();
    for (const auto& path : r.outputs) outputs.push_back(path_to_json(path));
    line["outputs"] = std::move(outputs);
  }
  if (!r.task.empty()) line["task"] = r.task;
  if (r.ok && r.task == "align") line["band_limited"] = r.band_limited;
  if (r.peak_rss_bytes) line["peak_rss_bytes"] = *r.peak_rss_bytes;
  if (r.idle_rss_bytes) line["idle_rss_bytes"] = *r.idle_rss_bytes;
  return line;
}

std::optional<JobResult> parse_job_result(const json& line) {
  if (!line.is_object() || !line.contains("ok")) return std::nullopt;
  JobResult r;
  for (const auto& [key, value] : line.items()) {
    if (key == "id") {
      if (value.is_number_integer()) r.id = value.get<std::int64_t>();
    } else if (key == "ok") {
      r.ok = value.is_boolean() && value.get<bool>();
    } else if (key == "error") {
      if (value.is_string()) r.error = value.get<std::string>();
    } else if (key == "outputs") {
      if (value.is_array())
        for (const auto& o : value)
          if (auto path = path_from_json(o)) r.outputs.push_back(std::move(*path));
    } else if (key == "task") {
      if (value.is_string()) r.task = value.get<std::string>();
    } else if (key == "band_limited") {
      r.band_limited = value.is_boolean() && value.get<bool>();
    } else if (key == "peak_rss_bytes" || key == "idle_rss_bytes") {
      (key == "peak_rss_bytes" ? r.peak_rss_bytes : r.idle_rss_bytes) = unsigned_value(value);
    } else {
      r.figures[key] = value;
    }
  }
  return r;
}

}  // namespace ab
