// align-batch-worker: loads a model once, then answers one JSON job per stdin line (docs/worker-protocol.md).
//
// Exit status: 0 at EOF on stdin; 2 for a bad command line; 3 when the model (or the status block)
// cannot be set up, after one {"ready": false, "error": ...} line; 4 when the parent is already gone.
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "protocol/wire_path.h"
#include "protocol/model_info.h"
#include "protocol/status_block.h"
#include "worker/torch_emission_model.h"
#include "worker/worker_loop.h"

namespace {

/// Beats the status block every kBeatIntervalMs from its own thread, with malloc's in-use bytes, so
/// the parent sees a live process even during one long model call.
class Heartbeat {
 public:
  explicit Heartbeat(ab::WorkerStatus& status) : status_(status), thread_([this] { loop(); }) {}
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  /// 250 ms: four beats per second is plenty for a parent that samples memory every few hundred ms,
  /// and mallinfo2 (a walk over malloc's bins) costs microseconds at this rate.
  static constexpr int kBeatIntervalMs = 250;
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      status_.heap_bytes.store(ab::malloc_in_use_bytes(), std::memory_order_relaxed);
      status_.beat();
      cv_.wait_for(lock, std::chrono::milliseconds(kBeatIntervalMs), [this] { return stop_; });
    }
  }
  ab::WorkerStatus& status_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

int not_ready(const std::string& raw_error) {
  // A model path, say, may be any bytes: shown as the parent shows paths (\xHH), valid UTF-8.
  const std::string error = ab::display_path(raw_error);
  ab::ReadyLine line;
  line.error = error;
  std::cout << ab::to_json(line).dump() << std::endl;
  spdlog::error("{}", error);
  return 3;
}

}  // namespace

int main(int argc, char** argv) {
  // Never outlive the parent: SIGTERM when it dies, and leave now if it died before prctl.
  const pid_t parent_at_start = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent_at_start) return 4;

  // stdout carries the protocol only (flushed per line); the log goes to stderr.
  std::ios::sync_with_stdio(false);
  spdlog::set_default_logger(spdlog::stderr_logger_mt("worker"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %l [worker " + std::to_string(getpid()) + "] %v");

  CLI::App app{"align-batch-worker: persistent CTC alignment and transcription worker (see docs/worker-protocol.md)"};
  std::string model_path;
  std::string status_shm;
  std::string shared_weights;
  int threads = 1;
  ab::WorkerConfig config;
  std::uint64_t max_trellis_mib = config.max_trellis_bytes >> 20;
  app.add_option("--model", model_path, "TorchScript model file; its sidecar MODEL.json sits beside it")->required();
  app.add_option("--threads", threads, "LibTorch intra-op threads (inter-op threads are 1)")->check(CLI::Range(1, 1024));
  app.add_option("--status-shm", status_shm, "Boost.Interprocess shared-memory object holding this worker's status");
  app.add_option("--shared-weights", shared_weights,
                 "file (under /dev/shm) holding one read-only copy of the model's tensors for every worker of "
                 "the model key: the first worker writes it, the others map it");
  app.add_option("--window-s", config.windows.window_s, "seconds of audio per model window")
      ->check(CLI::Range(0.1, 3600.0));
  app.add_option("--context-s", config.windows.context_s, "seconds of context on each side of a window")
      ->check(CLI::Range(0.0, 600.0));
  app.add_option("--max-trellis-mib", max_trellis_mib, "cap on the aligner's working memory, MiB")
      ->check(CLI::Range(1, 1 << 20));
  std::size_t mmap_threshold_kib = ab::kMallocMmapThresholdKib;
  app.add_option("--malloc-mmap-threshold-kib", mmap_threshold_kib,
                 "glibc mmap threshold, held fixed (0: glibc's own, which rises with freed blocks)")
      ->check(CLI::Range(0, 32 << 10));
  std::string tensor_cache = "on";
  app.add_option("--tensor-cache", tensor_cache,
                 "on: LibTorch's large tensors reuse blocks kept mapped between a file's windows (not a page "
                 "fault per page of every new activation; never more mapped than the file's peak in use), "
                 "off: each is mapped afresh and unmapped when freed")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  app.set_version_flag("--version", std::string("align-batch-worker ") + AB_VERSION);
  CLI11_PARSE(app, argc, argv);
  config.max_trellis_bytes = max_trellis_mib << 20;

  std::unique_ptr<ab::StatusBlock> block;
  try {
    block = status_shm.empty() ? ab::StatusBlock::local() : ab::StatusBlock::open(status_shm);
  } catch (const std::exception& e) {
    return not_ready("--status-shm " + status_shm + ": cannot map the status block (" + e.what() +
                     "); the parent must create it before starting the worker");
  }
  ab::WorkerStatus& status = block->status();
  status.pid.store(static_cast<std::int32_t>(getpid()));
  status.set_phase(ab::WorkerPhase::kLoading);
  status.beat();
  Heartbeat heartbeat(status);

  ab::set_torch_threads(threads);
  if (!ab::pin_malloc_mmap_threshold(mmap_threshold_kib))
    spdlog::warn("mallopt(M_MMAP_THRESHOLD, {} KiB) failed; memory may grow with the file", mmap_threshold_kib);
  ab::ModelInfoParse sidecar = ab::read_model_info(model_path);
  if (!sidecar.info) {
    status.set_phase(ab::WorkerPhase::kExited);
    return not_ready(sidecar.error);
  }
  std::unique_ptr<ab::TorchEmissionModel> model;
  try {
    model = std::make_unique<ab::TorchEmissionModel>(model_path, *sidecar.info, shared_weights, tensor_cache == "on");
  } catch (const std::exception& e) {
    status.set_phase(ab::WorkerPhase::kExited);
    return not_ready(e.what());
  }
  ab::ReadyLine ready = ab::ready_message(model->info());
  ready.threads = ab::torch_threads();
  const ab::WeightSharing& sharing = model->sharing();
  if (sharing.shared) {
    ready.shared_weights_bytes = sharing.bytes;
    spdlog::info("weights {} {} ({} tensors, {:.1f} MiB; private copy freed: {:.1f} MiB of RSS)",
                 sharing.created ? "written to" : "mapped from", shared_weights, sharing.tensors,
                 static_cast<double>(sharing.bytes) / (1 << 20),
                 static_cast<double>(sharing.private_rss_freed_bytes) / (1 << 20));
  } else if (!shared_weights.empty()) {
    ready.shared_weights_error = ab::display_path(sharing.error);
    spdlog::warn("weights not shared, this worker keeps its own copy: {}", sharing.error);
  }
  ready.rss_bytes = ab::current_rss_bytes();
  std::cout << ab::to_json(ready).dump() << std::endl;
  spdlog::info("model {} loaded ({} labels, {} Hz, {} threads, {} s windows + {} s context)", ab::display_path(model_path),
               model->info().labels.size(), model->info().sample_rate_hz, threads, config.windows.window_s,
               config.windows.context_s);

  ab::WorkerLoop loop(*model, config, status);
  const int rc = loop.run(std::cin, std::cout);
  spdlog::info("stdin closed; exiting");
  return rc;
}
