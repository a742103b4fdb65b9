// The worker's status block in shared memory (Boost.Interprocess): heartbeat, phase, job, progress.
//
// Header-only and torch-free: the parent includes it to create and read blocks, the worker to write.
// The block is one WorkerStatus made only of lock-free atomics, so reading it needs no lock and no
// round trip to the worker; the file name is guarded by a sequence counter (seqlock).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

namespace ab {

/// What the worker is doing. Stored as uint32 in the block.
enum class WorkerPhase : std::uint32_t {
  kStarting = 0,  ///< process started, block not yet written by the worker
  kLoading,       ///< loading the model
  kIdle,          ///< waiting for a job on stdin
  kDecoding,      ///< opening the audio and transcript
  kEmissions,     ///< running the model window by window
  kAligning,      ///< CTC alignment or decoding
  kWriting,       ///< writing outputs
  kExited,        ///< the worker left its loop (EOF or fatal error)
};

/// Lower-case name of a phase ("idle", "emissions", ...).
inline const char* phase_name(WorkerPhase p) {
  switch (p) {
    case WorkerPhase::kStarting: return "starting";
    case WorkerPhase::kLoading: return "loading";
    case WorkerPhase::kIdle: return "idle";
    case WorkerPhase::kDecoding: return "decoding";
    case WorkerPhase::kEmissions: return "emissions";
    case WorkerPhase::kAligning: return "aligning";
    case WorkerPhase::kWriting: return "writing";
    case WorkerPhase::kExited: return "exited";
  }
  return "unknown";
}

/// A consistent copy of a WorkerStatus, in plain values.
struct StatusSnapshot {
  std::int32_t pid = 0;
  WorkerPhase phase = WorkerPhase::kStarting;
  std::uint64_t heartbeat = 0;          ///< increments with every beat
  std::int64_t heartbeat_unix_ms = 0;   ///< wall clock of the last beat
  std::optional<std::int64_t> job_id;   ///< none while idle
  std::string file;                     ///< current job's audio file; empty while idle
  double fraction_done = 0.0;           ///< 0..1 within the current job
  std::uint64_t heap_bytes = 0;         ///< malloc's in-use bytes (mallinfo2), 0 if unknown
  std::uint64_t jobs_done = 0;
};

/// The shared block itself: plain atomics only, so it is valid in memory shared across processes.
struct WorkerStatus {
  static constexpr std::uint32_t kMagic = 0x53574241;  // "ABWS"
  static constexpr std::uint32_t kVersion = 1;
  static constexpr std::size_t kFileBytes = 1024;      ///< longer paths keep their last 1023 bytes
  static constexpr int kMaxReadAttempts = 100000;      ///< a write takes well under a microsecond

  std::atomic<std::uint32_t> magic{kMagic};
  std::atomic<std::uint32_t> version{kVersion};
  std::atomic<std::int32_t> pid{0};
  std::atomic<std::uint32_t> phase{0};
  std::atomic<std::uint64_t> heartbeat{0};
  std::atomic<std::int64_t> heartbeat_unix_ms{0};
  std::atomic<std::int64_t> job_id{-1};         ///< -1: no job
  std::atomic<std::uint32_t> fraction_ppm{0};   ///< fraction done, parts per million
  std::atomic<std::uint64_t> heap_bytes{0};
  std::atomic<std::uint64_t> jobs_done{0};
  std::atomic<std::uint64_t> file_seq{0};       ///< odd while the file name is being written
  std::atomic<std::uint32_t> file_size{0};
  std::atomic<char> file[kFileBytes] = {};

  static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "status block needs lock-free 64-bit atomics");
  static_assert(std::atomic<char>::is_always_lock_free, "status block needs lock-free char atomics");

  /// Records one beat now (wall clock).
  void beat() {
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    heartbeat_unix_ms.store(std::chrono::duration_cast<std::chrono::milliseconds>(now).count(),
                            std::memory_order_relaxed);
    heartbeat.fetch_add(1, std::memory_order_release);
  }
  void set_phase(WorkerPhase p) { phase.store(static_cast<std::uint32_t>(p), std::memory_order_release); }
  void set_fraction(double f) {
    f = f < 0 ? 0 : (f > 1 ? 1 : f);
    fraction_ppm.store(static_cast<std::uint32_t>(f * 1e6), std::memory_order_relaxed);
  }
  /// Starts job `id` on `audio_file`; fraction back to 0.
  void set_job(std::int64_t id, std::string_view audio_file) {
    if (audio_file.size() >= kFileBytes) audio_file.remove_prefix(audio_file.size() - (kFileBytes - 1));
    file_seq.fetch_add(1, std::memory_order_acq_rel);  // odd: writing
    for (std::size_t i = 0; i < audio_file.size(); ++i) file[i].store(audio_file[i], std::memory_order_relaxed);
    file_size.store(static_cast<std::uint32_t>(audio_file.size()), std::memory_order_relaxed);
    file_seq.fetch_add(1, std::memory_order_release);  // even: done
    fraction_ppm.store(0, std::memory_order_relaxed);
    job_id.store(id, std::memory_order_release);
  }
  /// Back to no job; counts it as done.
  void clear_job() {
    job_id.store(-1, std::memory_order_release);
    file_seq.fetch_add(1, std::memory_order_acq_rel);
    file_size.store(0, std::memory_order_relaxed);
    file_seq.fetch_add(1, std::memory_order_release);
    fraction_ppm.store(0, std::memory_order_relaxed);
    jobs_done.fetch_add(1, std::memory_order_relaxed);
  }

  /// Reads every field; retries the file name while a write is in progress.
  StatusSnapshot snapshot() const {
    StatusSnapshot s;
    s.pid = pid.load(std::memory_order_relaxed);
    s.phase = static_cast<WorkerPhase>(phase.load(std::memory_order_acquire));
    s.heartbeat = heartbeat.load(std::memory_order_acquire);
    s.heartbeat_unix_ms = heartbeat_unix_ms.load(std::memory_order_relaxed);
    const auto id = job_id.load(std::memory_order_acquire);
    if (id >= 0) s.job_id = id;
    s.fraction_done = fraction_ppm.load(std::memory_order_relaxed) / 1e6;
    s.heap_bytes = heap_bytes.load(std::memory_order_relaxed);
    s.jobs_done = jobs_done.load(std::memory_order_relaxed);
    // Bounded, so a worker killed halfway through a write cannot hang the reader: then file is "".
    for (int attempt = 0; attempt < kMaxReadAttempts; ++attempt) {
      if (attempt >= 100) std::this_thread::yield();
      const auto before = file_seq.load(std::memory_order_acquire);
      if (before & 1u) continue;
      const auto n = std::min<std::size_t>(file_size.load(std::memory_order_relaxed), kFileBytes - 1);
      s.file.resize(n);
      for (std::size_t i = 0; i < n; ++i) s.file[i] = file[i].load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (file_seq.load(std::memory_order_relaxed) == before) return s;
    }
    s.file.clear();
    return s;
  }
};

/// A WorkerStatus mapped from a named Boost.Interprocess shared-memory object, or held locally
/// (local(): a worker started without --status-shm writes to a private block).
class StatusBlock {
 public:
  /// Parent side: creates the object `name` exclusively, mode 0600, and zero-initialises it; the object is
  /// removed again when this StatusBlock is destroyed. An existing object of that name is never
  /// touched (it may be another user's: removing or reusing it would let them feed the parent a
  /// forged status): this throws boost::interprocess's interprocess_exception, with
  /// get_error_code() == already_exists_error, and the caller tries another name.
  static std::unique_ptr<StatusBlock> create(const std::string& name) {
    namespace bip = boost::interprocess;
    auto b = std::unique_ptr<StatusBlock>(new StatusBlock());
    b->name_ = name;
    // 0600: the block names the file a worker is on; other users may neither read nor forge it.
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write, bip::permissions(0600));
    b->owner_ = true;  // only now is the object ours to remove
    shm.truncate(sizeof(WorkerStatus));
    b->region_ = bip::mapped_region(shm, bip::read_write);
    b->status_ = new (b->region_.get_address()) WorkerStatus();
    return b;
  }
  /// Worker or reader side: maps the existing object `name` (it is not removed on destruction).
  /// Throws interprocess_exception if it does not exist, std::runtime_error if it is not a block.
  static std::unique_ptr<StatusBlock> open(const std::string& name) {
    namespace bip = boost::interprocess;
    auto b = std::unique_ptr<StatusBlock>(new StatusBlock());
    b->name_ = name;
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
    b->region_ = bip::mapped_region(shm, bip::read_write);
    if (b->region_.get_size() < sizeof(WorkerStatus)) {
      throw std::runtime_error("shared memory object " + name + " is too small to be a worker status block");
    }
    b->status_ = static_cast<WorkerStatus*>(b->region_.get_address());
    if (b->status_->magic.load() != WorkerStatus::kMagic || b->status_->version.load() != WorkerStatus::kVersion) {
      throw std::runtime_error("shared memory object " + name + " is not a version-" +
                               std::to_string(WorkerStatus::kVersion) + " worker status block");
    }
    return b;
  }
  /// A private block in this process's heap (no shared memory).
  static std::unique_ptr<StatusBlock> local() {
    auto b = std::unique_ptr<StatusBlock>(new StatusBlock());
    b->local_ = std::make_unique<WorkerStatus>();
    b->status_ = b->local_.get();
    return b;
  }

  ~StatusBlock() {
    if (owner_) boost::interprocess::shared_memory_object::remove(name_.c_str());
  }
  StatusBlock(const StatusBlock&) = delete;
  StatusBlock& operator=(const StatusBlock&) = delete;

  WorkerStatus& status() { return *status_; }
  const WorkerStatus& status() const { return *status_; }
  /// Same as status().snapshot().
  StatusSnapshot read() const { return status_->snapshot(); }
  const std::string& name() const { return name_; }

 private:
  StatusBlock() = default;
  std::string name_;
  bool owner_ = false;
  boost::interprocess::mapped_region region_;
  std::unique_ptr<WorkerStatus> local_;
  WorkerStatus* status_ = nullptr;
};

}  // namespace ab
