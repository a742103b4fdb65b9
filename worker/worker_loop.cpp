// The worker's protocol loop (see worker_loop.h and docs/worker-protocol.md).
#include "worker/worker_loop.h"

#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <istream>
#include <new>
#include <optional>
#include <ostream>
#include <utility>

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include "protocol/wire_path.h"
#include "worker/alignment_writer.h"
#include "worker/audio_source.h"
#include "worker/ctc_aligner.h"
#include "worker/ctc_decoder.h"

namespace ab {

namespace {

using nlohmann::json;

/// Serialises one protocol line; invalid UTF-8 in a message (a file name, say) is replaced, not thrown.
std::string dump_line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void write_line(std::ostream& out, const json& j) { out << dump_line(j) << '\n' << std::flush; }

/// A failed job's result. Messages embed paths (the audio, the transcript, an output, libsndfile's
/// own text), which may be any bytes: shown as the parent shows them, each byte that is not UTF-8
/// as \xHH (protocol/wire_path.h), never replaced by U+FFFD.
JobResult error_result(std::optional<std::int64_t> id, const std::string& message) {
  return job_failure(id, display_path(message));
}

/// Fractions of a job's progress given to each phase (emissions dominate the time).
constexpr double kEmissionsShare = 0.9;
constexpr double kAlignedAt = 0.95;

}  // namespace

std::uint64_t current_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long long size_pages = 0, resident_pages = 0;
  const int n = std::fscanf(f, "%llu %llu", &size_pages, &resident_pages);
  std::fclose(f);
  if (n != 2) return 0;
  return resident_pages * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

bool reset_peak_rss() {
  std::FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  const bool ok = std::fputs("5", f) >= 0;  // 5: VmHWM := the current RSS (proc(5), Linux 4.0+)
  return std::fclose(f) == 0 && ok;
}

std::uint64_t peak_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kib = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %llu kB", &kib) == 1) break;
  std::fclose(f);
  return kib * 1024;
}

std::uint64_t malloc_in_use_bytes() {
  const struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd;
}

bool pin_malloc_mmap_threshold(std::size_t kib) {
  // glibc starts at 128 KiB but raises the threshold to the size of every mmapped block freed, up
  // to 32 MiB. After a model's first window, then, activations of up to 32 MiB come from the heap,
  // where freed blocks stay resident and windows of varying sizes (the first has no left context,
  // the last is short) leave holes the next ones cannot fill. wav2vec2-base, 30 s windows, peak
  // RSS (bench/worker_memory.sh MODEL=wav2vec2-base): sliding 1774 MiB for 1 minute and 1822 MiB
  // for 3, pinned 1083 and 1101 MiB. Pinned, each large tensor is mapped afresh and unmapped when
  // freed; what the extra page faults cost is bench/model_speed.sh's last line.
  if (kib == 0) return true;
  return mallopt(M_MMAP_THRESHOLD, static_cast<int>(kib << 10)) == 1;
}

ReadyLine ready_message(const ModelInfo& info) {
  ReadyLine r;
  r.ready = true;
  r.pid = static_cast<std::int64_t>(getpid());
  r.sample_rate_hz = info.sample_rate_hz;
  r.labels = info.labels.size();
  r.rss_bytes = current_rss_bytes();
  return r;
}

WorkerLoop::WorkerLoop(EmissionModel& model, WorkerConfig config, WorkerStatus& status)
    : model_(model), config_(config), status_(status), labels_(label_set_of(model.info())) {}

int WorkerLoop::run(std::istream& in, std::ostream& out) {
  status_.set_phase(WorkerPhase::kIdle);
  status_.beat();
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    write_line(out, to_json(handle_line(line, out)));
  }
  status_.set_phase(WorkerPhase::kExited);
  status_.beat();
  return 0;
}

JobResult WorkerLoop::handle_line(const std::string& line, std::ostream& out) {
  JobResult result;
  // The job's own peak: VmHWM from here to its end. Samples can miss a job shorter than the
  // parent's sampling interval; this cannot. Without clear_refs it is the worker's lifetime peak.
  const bool peak_is_the_jobs = reset_peak_rss();
  {
    json job = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (job.is_discarded() || !job.is_object()) {
      result = error_result(std::nullopt, "stdin: not a JSON job object: " + line.substr(0, 200) +
                                         " (the parent must send one JSON object per line, see docs/worker-protocol.md)");
    } else {
      result = run_job(job, out);
    }
  }
  if (peak_is_the_jobs) result.peak_rss_bytes = peak_rss_bytes();
  // Every buffer of the job is gone by now; hand the freed heap back to the system, then measure.
  model_.release_scratch();
  malloc_trim(0);
  result.idle_rss_bytes = current_rss_bytes();
  status_.heap_bytes.store(malloc_in_use_bytes(), std::memory_order_relaxed);
  status_.clear_job();
  status_.set_phase(WorkerPhase::kIdle);
  status_.beat();
  return result;
}

JobResult WorkerLoop::run_job(const json& line, std::ostream& out) {
  const auto id_field = line.find("id");
  const std::optional<std::int64_t> line_id =
      id_field != line.end() && id_field->is_number_integer() ? std::optional(id_field->get<std::int64_t>()) : std::nullopt;
  Result<JobRequest> parsed = parse_job_request(line);
  if (!parsed) return error_result(line_id, parsed.error());
  const JobRequest& job = parsed.value();
  const std::int64_t id = job.id;
  const std::string& audio_path = job.audio;
  status_.set_job(id, audio_path);
  status_.set_phase(WorkerPhase::kDecoding);
  status_.beat();

  WindowConfig windows = config_.windows;
  // Out of memory in the engine (its own report, or std::bad_alloc): once more with half-size
  // windows, then a result saying so. nullopt: retry.
  auto out_of_memory = [&](int attempt, const char* where, const char* what) -> std::optional<JobResult> {
    if (attempt == 1)
      return error_result(id, display_path(audio_path) + ": out of memory" + where + " even with " + fmt::format("{:g}", windows.window_s) +
                                  " s windows (" + what + "); lower --window-s, run fewer workers or give them more memory");
    spdlog::warn("job {}: {}: {}out of memory ({}); retrying with {} s windows", id, display_path(audio_path),
                 *where ? "engine " : "", what, windows.window_s / 2);
    return std::nullopt;
  };
  for (int attempt = 0;; ++attempt) {
    try {
      return run_job_once(job, windows, out);
    } catch (const EngineOutOfMemory& e) {
      if (auto r = out_of_memory(attempt, " in the engine", e.what())) return *r;
    } catch (const std::bad_alloc& e) {
      if (auto r = out_of_memory(attempt, "", e.what())) return *r;
    } catch (const std::exception& e) {
      // LibTorch (c10::Error), Boost and anything else thrown inside the engine end here, as a result.
      return error_result(id, display_path(audio_path) + ": the engine failed: " + e.what());
    } catch (...) {
      return error_result(id, display_path(audio_path) + ": the engine failed with an unknown exception");
    }
    model_.release_scratch();
    windows.window_s /= 2;
  }
}

JobResult WorkerLoop::run_job_once(const JobRequest& job, const WindowConfig& windows, std::ostream& out) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::int64_t id = job.id;
  const std::string& audio_path = job.audio;
  const std::string audio_shown = display_path(audio_path);
  const ModelInfo& info = model_.info();
  const std::string& task = job.task;
  const std::string& out_base = job.out;

  // Transcript first: it is cheap, and a bad one should not cost a pass of the model.
  std::optional<Transcript> transcript;
  if (task == "align") {
    Result<Transcript> t = read_transcript(*job.transcript, labels_);
    if (!t) return error_result(id, t.error());
    transcript = std::move(t).value();
  }
  Result<AudioSource> opened = AudioSource::open(audio_path, info.sample_rate_hz);
  if (!opened) return error_result(id, opened.error());
  AudioSource source = std::move(opened).value();
  const std::int64_t expected = std::max<std::int64_t>(1, source.expected_output_samples());
  if (transcript) {
    // The alignment's size is known now, from the header and the transcript: a file the cap
    // cannot hold is refused before the model's pass over it (71 s of decoding, once). Two
    // frames short of the header's count, for the resampler's rounding: never refuses a file
    // align_ctc() would take.
    const std::int64_t frames = alignment_frames_at_least(expected, info.samples_per_frame);
    const std::uint64_t need = alignment_floor_bytes(frames, transcript->tokens.size());
    if (need > config_.max_trellis_bytes)
      return error_result(id, alignment_too_big_message(audio_path, frames, transcript->tokens.size(), need,
                                                        config_.max_trellis_bytes) +
                                  " (refused before decoding)");
  }

  status_.set_phase(WorkerPhase::kEmissions);
  status_.beat();
  WindowStats stats;
  Emissions em = compute_windowed_emissions(
      model_, [&](float* buf, std::size_t max) { return source.read(buf, max); }, windows, expected,
      [&](std::int64_t samples_done) {
        const double f = kEmissionsShare * std::min(1.0, double(samples_done) / double(expected));
        status_.set_fraction(f);
        status_.heap_bytes.store(malloc_in_use_bytes(), std::memory_order_relaxed);
        status_.beat();
        write_line(out, to_json(JobProgress{id, std::round(f * 1000) / 1000}));
      },
      &stats);
  // The model's blocks kept between windows are not needed by the aligner.
  const std::optional<ScratchStats> scratch = model_.release_scratch();
  if (!source.error().empty()) return error_result(id, source.error());
  const double audio_s = double(stats.samples) / info.sample_rate_hz;
  if (em.frames == 0) {
    return error_result(id, audio_shown + ": the audio is " + std::to_string(std::lround(audio_s * 1000)) +
                                " ms long, shorter than one model frame (" +
                                std::to_string(std::lround(info.frame_s() * 1000)) + " ms); nothing to " + task);
  }

  status_.set_phase(WorkerPhase::kAligning);
  status_.beat();
  const FrameClock clock{info.samples_per_frame, info.sample_rate_hz};
  const std::string utterance = std::filesystem::path(audio_path).stem().string();
  TimedAlignment timed;
  JobResult r;
  r.id = id;
  r.ok = true;
  r.task = task;
  json& figures = r.figures;
  if (task == "align") {
    AlignerConfig ac;
    ac.blank = info.blank;
    ac.max_trellis_bytes = config_.max_trellis_bytes;
    ac.source_name = audio_path;
    Result<Alignment> a = align_ctc(em.view(), transcript->tokens, ac);
    if (!a) return error_result(id, a.error());
    timed = timed_from_alignment(a.value(), *transcript, labels_, clock, audio_s, utterance);
    r.band_limited = a->band_limited;
    figures.update({{"log_prob", a->log_prob}, {"exact", a->exact}, {"aligner_bytes", a->work_bytes}});
    if (a->band_limited)
      spdlog::warn("job {}: {}: the alignment's search band reached --max-trellis-mib ({:g} MiB) and the path ran "
                   "near its edge; the timings may be slightly off: raise --max-trellis-mib to search wider",
                   id, audio_shown, double(config_.max_trellis_bytes) / (1 << 20));
  } else {
    Decoding d = decode_greedy(em.view(), labels_);
    timed = timed_from_decoding(d, labels_, clock, audio_s, utterance);
    figures["text"] = d.text();
  }
  status_.set_fraction(kAlignedAt);
  status_.set_phase(WorkerPhase::kWriting);
  status_.beat();
  Result<std::vector<std::string>> written = write_alignment_outputs(timed, out_base);
  if (!written) return error_result(id, written.error());
  status_.set_fraction(1.0);

  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.outputs = std::move(written.value());
  figures.update({{"audio_s", audio_s},
                  {"wall_s", wall_s},
                  {"frames", em.frames},
                  {"windows", stats.windows},
                  {"emissions_bytes", em.bytes()},
                  {"peak_window_samples", stats.peak_window_samples},
                  {"window_s", windows.window_s}});
  if (scratch)
    figures["tensor_cache"] = {{"peak_bytes", scratch->peak_bytes}, {"reused", scratch->reused}, {"mapped", scratch->mapped}};
  spdlog::info("job {}: {} {} ({:.1f} s audio, {} frames, {} windows) in {:.2f} s", id, task, audio_shown,
               audio_s, em.frames, stats.windows, wall_s);
  return r;
}

}  // namespace ab
