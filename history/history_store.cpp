// HistoryStore on the SQLite C API: schema, migrations, and parameterised statements.
#include "history/history_store.h"

#include <sqlite3.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <thread>

namespace ab {
namespace {

// Each entry moves the schema from version i to i + 1. Never edit a released entry; append one.
const char* const kMigrations[] = {
    // 0 -> 1: the first schema.
    R"sql(
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  started_at_ms INTEGER NOT NULL,
  ended_at_ms INTEGER,
  exit_code INTEGER,
  host TEXT NOT NULL,
  cores INTEGER NOT NULL,
  mem_total_bytes INTEGER NOT NULL,
  budget_bytes INTEGER NOT NULL,
  version TEXT NOT NULL,
  flags_json TEXT NOT NULL
);
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY,
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  input_path TEXT NOT NULL,
  input_size_bytes INTEGER NOT NULL,
  input_mtime_ns INTEGER NOT NULL,
  audio_duration_s REAL,
  job_key TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'killed', 'died')),
  attempts INTEGER NOT NULL,
  peak_rss_bytes INTEGER NOT NULL,
  peak_pss_bytes INTEGER NOT NULL,
  peak_uss_bytes INTEGER NOT NULL,
  peak_vram_bytes INTEGER NOT NULL,
  wall_s REAL NOT NULL,
  cpu_s REAL NOT NULL,
  exit_status INTEGER,
  term_signal INTEGER,
  error TEXT NOT NULL,
  finished_at_ms INTEGER NOT NULL
);
CREATE INDEX jobs_by_key ON jobs(job_key, finished_at_ms);
CREATE INDEX jobs_by_input ON jobs(input_path, job_key);
CREATE INDEX jobs_by_run ON jobs(run_id);
CREATE TABLE job_timelines (
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  t_ms INTEGER NOT NULL,
  rss_bytes INTEGER NOT NULL,
  pss_bytes INTEGER NOT NULL,
  vram_bytes INTEGER NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE tuned_settings (
  job_key TEXT PRIMARY KEY,
  settings_json TEXT NOT NULL,
  updated_at_ms INTEGER NOT NULL
);
)sql",
    // 1 -> 2: what resume compares besides the input. A job is done only while its transcript's
    // content, its task and every output it wrote are unchanged (docs/orchestrator.md).
    R"sql(
ALTER TABLE jobs ADD COLUMN task TEXT;
ALTER TABLE jobs ADD COLUMN transcript_hash TEXT;
CREATE TABLE job_outputs (
  job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  path TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  mtime_ns INTEGER NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
)sql",
    // 2 -> 3: what a report of any past run needs to draw each job (issue 15): when it started,
    // the peak history predicted for it then, and whether the kernel's OOM killer is suspected
    // of its death. Older rows keep NULL / 0: their start is then finished_at_ms - wall_s.
    R"sql(
ALTER TABLE jobs ADD COLUMN started_at_ms INTEGER;
ALTER TABLE jobs ADD COLUMN predicted_peak_bytes INTEGER;
ALTER TABLE jobs ADD COLUMN oom_suspected INTEGER NOT NULL DEFAULT 0;
)sql",
    // 3 -> 4: sacct's figures for each Slurm array task of a run (issue 16), beside the jobs its
    // align-batch recorded for itself; not jobs: a task is many files, and `history` lists keys.
    R"sql(
CREATE TABLE slurm_tasks (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  task_id TEXT NOT NULL,
  job_key TEXT NOT NULL,
  state TEXT NOT NULL,
  exit_code INTEGER NOT NULL,
  exit_signal INTEGER NOT NULL,
  req_mem_bytes INTEGER NOT NULL,
  max_rss_bytes INTEGER,
  elapsed_s REAL NOT NULL,
  files INTEGER NOT NULL,
  recorded_at_ms INTEGER NOT NULL,
  PRIMARY KEY (run_id, task_id)
);
)sql",
    // 4 -> 5: the machine around each run's jobs, once a second: what its workers held, what was
    // left available and the pressure, so replay sees the same neighbours and pressure.
    R"sql(
CREATE TABLE run_samples (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  t_ms INTEGER NOT NULL,
  ours_bytes INTEGER NOT NULL,
  shared_bytes INTEGER NOT NULL,
  mem_available_bytes INTEGER,
  psi_full_avg10 REAL,
  PRIMARY KEY (run_id, t_ms)
) WITHOUT ROWID;
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kHistorySchemaVersion,
              "one migration per schema version");

// Between attempts to switch to WAL while another process holds the lock: short next to the
// ~1 ms the other side needs to create the schema.
constexpr std::chrono::milliseconds kWalRetry{5};

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// What to tell the user for an SQLite failure, by primary result code.
std::string advice(int rc, const std::filesystem::path& path, std::chrono::milliseconds busy) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return fmt::format(
          "another process held the database lock for more than {} ms; retry when it is done, or "
          "pass --history with a different file",
          busy.count());
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      return "the file is not a readable align-batch history; it was left untouched: move it "
             "aside (or delete it to start a fresh history), or pass --history with another path";
    case SQLITE_FULL:
      return "the disk is full; free space or pass --history on another disk";
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return fmt::format(
          "check that {} and its directory are writable by this user, or pass --history with a "
          "writable path",
          path.string());
    default:
      return "pass --history with another path if this persists";
  }
}

// Owns one prepared statement; binds by 1-based index.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool prepared() const { return rc_ == SQLITE_OK; }
  int rc() const { return rc_; }
  Stmt& bind(int i, std::int64_t v) { return check(sqlite3_bind_int64(stmt_, i, v)); }
  Stmt& bind(int i, std::uint64_t v) { return bind(i, static_cast<std::int64_t>(v)); }
  Stmt& bind(int i, std::uint32_t v) { return bind(i, static_cast<std::int64_t>(v)); }
  Stmt& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
  Stmt& bind(int i, double v) { return check(sqlite3_bind_double(stmt_, i, v)); }
  Stmt& bind(int i, const std::string& v) {
    return check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()),
                                   SQLITE_TRANSIENT));
  }
  template <class T>
  Stmt& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : check(sqlite3_bind_null(stmt_, i));
  }
  /// Makes the statement ready to bind and run again (after a completed step).
  void reset() {
    if (rc_ == SQLITE_ROW || rc_ == SQLITE_DONE) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
      rc_ = SQLITE_OK;
    }
  }
  /// SQLITE_ROW, SQLITE_DONE, or an error code (also kept in rc()).
  int step() {
    if (rc_ != SQLITE_OK && rc_ != SQLITE_ROW && rc_ != SQLITE_DONE) return rc_;
    rc_ = sqlite3_step(stmt_);
    return rc_;
  }
  std::int64_t i64(int c) const { return sqlite3_column_int64(stmt_, c); }
  double f64(int c) const { return sqlite3_column_double(stmt_, c); }
  bool null(int c) const { return sqlite3_column_type(stmt_, c) == SQLITE_NULL; }
  std::string text(int c) const {
    const auto* p = sqlite3_column_text(stmt_, c);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<std::size_t>(sqlite3_column_bytes(stmt_, c)))
             : std::string();
  }
  std::optional<std::int64_t> opt_i64(int c) const {
    return null(c) ? std::nullopt : std::optional<std::int64_t>(i64(c));
  }

 private:
  Stmt& check(int rc) {
    if (rc != SQLITE_OK && rc_ == SQLITE_OK) rc_ = rc;
    return *this;
  }
  sqlite3_stmt* stmt_ = nullptr;
  int rc_ = SQLITE_OK;
};

// An IMMEDIATE transaction: takes the write lock up front, so the busy timeout applies (a
// deferred transaction that upgrades from read to write can get SQLITE_BUSY at once under WAL).
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) {
    rc_ = sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
  }
  ~Transaction() {
    if (rc_ == SQLITE_OK && !done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  int begin_rc() const { return rc_; }
  int commit() {
    const int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) done_ = true;
    return rc;
  }

 private:
  sqlite3* db_;
  int rc_;
  bool done_ = false;
};

const char* const kJobColumns =
    "id, run_id, input_path, input_size_bytes, input_mtime_ns, audio_duration_s, job_key, status, "
    "attempts, peak_rss_bytes, peak_pss_bytes, peak_uss_bytes, peak_vram_bytes, wall_s, cpu_s, "
    "exit_status, term_signal, error, finished_at_ms, task, transcript_hash, started_at_ms, "
    "predicted_peak_bytes, oom_suspected";

JobRow read_job(const Stmt& s) {
  JobRow j;
  j.id = s.i64(0);
  j.run_id = s.i64(1);
  j.input_path = s.text(2);
  j.input_size_bytes = static_cast<std::uint64_t>(s.i64(3));
  j.input_mtime_ns = s.i64(4);
  if (!s.null(5)) j.audio_duration_s = s.f64(5);
  j.job_key = s.text(6);
  j.status = parse_job_status(s.text(7)).value_or(JobStatus::kFailed);
  j.attempts = static_cast<std::uint32_t>(s.i64(8));
  j.peak_rss_bytes = static_cast<std::uint64_t>(s.i64(9));
  j.peak_pss_bytes = static_cast<std::uint64_t>(s.i64(10));
  j.peak_uss_bytes = static_cast<std::uint64_t>(s.i64(11));
  j.peak_vram_bytes = static_cast<std::uint64_t>(s.i64(12));
  j.wall_s = s.f64(13);
  j.cpu_s = s.f64(14);
  if (auto v = s.opt_i64(15)) j.exit_status = static_cast<int>(*v);
  if (auto v = s.opt_i64(16)) j.term_signal = static_cast<int>(*v);
  j.error = s.text(17);
  j.finished_at_ms = s.i64(18);
  j.task = s.text(19);
  if (!s.null(20)) j.transcript_hash = s.text(20);
  j.started_at_ms = s.opt_i64(21);
  if (auto v = s.opt_i64(22)) j.predicted_peak_bytes = static_cast<std::uint64_t>(*v);
  j.oom_suspected = s.i64(23) != 0;
  return j;
}

const char* const kRunSelect =
    "SELECT r.id, r.started_at_ms, r.ended_at_ms, r.exit_code, r.host, r.cores, "
    "r.mem_total_bytes, r.budget_bytes, r.version, r.flags_json, "
    "(SELECT COUNT(*) FROM jobs j WHERE j.run_id = r.id), "
    "(SELECT COUNT(*) FROM jobs j WHERE j.run_id = r.id AND j.status = 'ok') FROM runs r ";

RunRow read_run(const Stmt& s) {
  RunRow r;
  r.id = s.i64(0);
  r.info.started_at_ms = s.i64(1);
  r.ended_at_ms = s.opt_i64(2);
  if (auto v = s.opt_i64(3)) r.exit_code = static_cast<int>(*v);
  r.info.host = s.text(4);
  r.info.cores = static_cast<std::uint32_t>(s.i64(5));
  r.info.mem_total_bytes = static_cast<std::uint64_t>(s.i64(6));
  r.info.budget_bytes = static_cast<std::uint64_t>(s.i64(7));
  r.info.version = s.text(8);
  r.info.settings = run_settings_from_json(nlohmann::json::parse(s.text(9), nullptr, /*allow_exceptions=*/false),
                                           r.info.cores);
  r.job_count = static_cast<std::uint32_t>(s.i64(10));
  r.ok_count = static_cast<std::uint32_t>(s.i64(11));
  return r;
}

// Reads one integer pragma; returns the SQLite code.
int read_pragma(sqlite3* db, const char* sql, std::int64_t& out) {
  Stmt s(db, sql);
  const int rc = s.step();
  if (rc == SQLITE_ROW) {
    out = s.i64(0);
    return SQLITE_OK;
  }
  return rc;
}

}  // namespace

const char* to_string(JobStatus status) {
  switch (status) {
    case JobStatus::kOk: return "ok";
    case JobStatus::kFailed: return "failed";
    case JobStatus::kKilled: return "killed";
    case JobStatus::kDied: return "died";
  }
  return "failed";
}

std::optional<JobStatus> parse_job_status(const std::string& text) {
  if (text == "ok") return JobStatus::kOk;
  if (text == "failed") return JobStatus::kFailed;
  if (text == "killed") return JobStatus::kKilled;
  if (text == "died") return JobStatus::kDied;
  return std::nullopt;
}

std::filesystem::path default_history_path(const std::filesystem::path& out_dir) {
  return out_dir / ".align-batch" / "history.sqlite";
}

HistoryStore::HistoryStore(std::filesystem::path path, sqlite3* db,
                           std::chrono::milliseconds busy_timeout)
    : path_(std::move(path)), db_(db), busy_timeout_(busy_timeout) {}

HistoryStore::~HistoryStore() {
  for (sqlite3_stmt* s : {find_done_stmt_, last_ok_stmt_, outputs_stmt_, other_key_stmt_}) sqlite3_finalize(s);
  sqlite3_close_v2(db_);
}

std::string HistoryStore::failure(const std::string& what) const {
  const int rc = sqlite3_extended_errcode(db_);
  return fmt::format("{}: {} failed (SQLite: {}); {}", path_.string(), what, sqlite3_errmsg(db_),
                     advice(rc, path_, busy_timeout_));
}

StoreResult<std::unique_ptr<HistoryStore>> HistoryStore::open(const std::filesystem::path& path,
                                                             Create create,
                                                             std::chrono::milliseconds busy) {
  using R = StoreResult<std::unique_ptr<HistoryStore>>;
  const std::string name = path.string();
  std::error_code ec;
  const bool exists = std::filesystem::exists(path, ec);
  if (!exists && create == Create::kNever)
    return R::failure(fmt::format(
        "{}: no history database there; a run writes one (by default in <out>/.align-batch/), or "
        "pass --history with the path of an existing one",
        name));
  if (!exists && path.has_parent_path()) {
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec)
      return R::failure(fmt::format(
          "{}: cannot create the history's directory {} ({}); pass --history with a writable path",
          name, path.parent_path().string(), ec.message()));
  }

  sqlite3* raw = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | (create == Create::kIfMissing ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2(name.c_str(), &raw, flags, nullptr);
  // The store owns the handle from here on, even on failure, so every path closes it.
  std::unique_ptr<HistoryStore> store(new HistoryStore(path, raw, busy));
  auto fail = [&](const std::string& what, int code) {
    return R::failure(fmt::format("{}: {} failed (SQLite: {}); {}", name, what,
                                  raw ? sqlite3_errmsg(raw) : sqlite3_errstr(code),
                                  advice(code, path, busy)));
  };
  if (rc != SQLITE_OK) return fail("opening the history database", rc);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, static_cast<int>(busy.count()));

  // The first read: a file that is not SQLite fails here with SQLITE_NOTADB, before any write.
  // One read transaction, so the three figures are one snapshot: read one by one, a second run
  // creating the schema at the same moment could commit between them, and this file would look
  // like "8 tables but not an align-batch history" (history_safety_test caught it under load).
  std::int64_t app_id = 0, version = 0, tables = 0;
  if ((rc = sqlite3_exec(raw, "BEGIN", nullptr, nullptr, nullptr)) != SQLITE_OK)
    return fail("opening the history database", rc);
  if ((rc = read_pragma(raw, "PRAGMA application_id", app_id)) != SQLITE_OK ||
      (rc = read_pragma(raw, "PRAGMA user_version", version)) != SQLITE_OK ||
      (rc = read_pragma(raw, "SELECT COUNT(*) FROM sqlite_master", tables)) != SQLITE_OK)
    return fail("opening the history database", rc);
  if ((rc = sqlite3_exec(raw, "COMMIT", nullptr, nullptr, nullptr)) != SQLITE_OK)
    return fail("opening the history database", rc);
  if (app_id != 0 && app_id != kHistoryApplicationId)
    return R::failure(fmt::format(
        "{}: this SQLite file belongs to another program (application_id {:#x}); it was left "
        "untouched; pass --history with another path",
        name, static_cast<std::uint32_t>(app_id)));
  if (app_id == 0) {
    if (tables > 0)
      return R::failure(fmt::format(
          "{}: this SQLite file has {} tables but is not an align-batch history; it was left "
          "untouched; pass --history with another path",
          name, tables));
  }
  if (version > kHistorySchemaVersion)
    return R::failure(fmt::format(
        "{}: written by a newer align-batch (history schema {}, this build knows up to {}); it "
        "was left untouched; upgrade align-batch, or pass --history with another path",
        name, version, kHistorySchemaVersion));
  if (sqlite3_db_readonly(raw, "main") == 1)
    return R::failure(fmt::format("{}: the history database is read-only for this user; {}", name,
                                  advice(SQLITE_READONLY, path, busy)));

  {
    // Switching to WAL needs an exclusive lock, and SQLite reports a conflict at once instead of
    // calling the busy handler (two runs creating one history at the same moment hit this, see
    // history_safety_test), so retry here until the busy timeout.
    std::string mode;
    const auto deadline = std::chrono::steady_clock::now() + busy;
    for (;;) {
      Stmt wal(raw, "PRAGMA journal_mode=WAL");
      rc = wal.step();
      if (rc == SQLITE_ROW) {
        mode = wal.text(0);
        break;
      }
      if ((rc & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= deadline)
        return fail("switching the history to WAL mode", rc);
      std::this_thread::sleep_for(kWalRetry);
    }
    if (mode != "wal")
      return R::failure(fmt::format(
          "{}: SQLite could not use WAL mode (got journal mode '{}'), which concurrent runs "
          "need; WAL does not work on network file systems: pass --history on a local disk",
          name, mode));
  }
  // NORMAL in WAL mode survives any process crash (SIGKILL included); only a power loss can
  // roll back the last commits, which resume then simply redoes. FULL would fsync every job.
  if ((rc = sqlite3_exec(raw, "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL", nullptr,
                         nullptr, nullptr)) != SQLITE_OK)
    return fail("configuring the history database", rc);

  if (version < kHistorySchemaVersion) {
    Transaction tx(raw);
    if (tx.begin_rc() != SQLITE_OK) return fail("locking the history to set up its schema", tx.begin_rc());
    // Another process may have migrated while we waited for the lock: read again inside it.
    if ((rc = read_pragma(raw, "PRAGMA user_version", version)) != SQLITE_OK)
      return fail("opening the history database", rc);
    if (version > kHistorySchemaVersion)
      return R::failure(fmt::format(
          "{}: written by a newer align-batch (history schema {}, this build knows up to {}); "
          "upgrade align-batch, or pass --history with another path",
          name, version, kHistorySchemaVersion));
    for (auto v = version; v < kHistorySchemaVersion; ++v) {
      if ((rc = sqlite3_exec(raw, kMigrations[v], nullptr, nullptr, nullptr)) != SQLITE_OK)
        return fail(fmt::format("migrating the history schema from version {} to {}", v, v + 1),
                    rc);
    }
    // PRAGMAs cannot take bound parameters; both values are compile-time integers.
    const std::string set = fmt::format("PRAGMA application_id={}; PRAGMA user_version={}",
                                        kHistoryApplicationId, kHistorySchemaVersion);
    if ((rc = sqlite3_exec(raw, set.c_str(), nullptr, nullptr, nullptr)) != SQLITE_OK)
      return fail("stamping the history schema version", rc);
    if ((rc = tx.commit()) != SQLITE_OK) return fail("committing the history schema", rc);
  }
  return R(std::move(store));
}

StoreResult<std::int64_t> HistoryStore::begin_run(const RunInfo& run) {
  using R = StoreResult<std::int64_t>;
  Stmt s(db_,
         "INSERT INTO runs (started_at_ms, host, cores, mem_total_bytes, budget_bytes, version, "
         "flags_json) VALUES (?, ?, ?, ?, ?, ?, ?)");
  s.bind(1, run.started_at_ms ? run.started_at_ms : now_ms())
      .bind(2, run.host)
      .bind(3, run.cores)
      .bind(4, run.mem_total_bytes)
      .bind(5, run.budget_bytes)
      .bind(6, run.version)
      .bind(7, to_json(run.settings).dump());
  if (s.step() != SQLITE_DONE) return R::failure(failure("recording the run's start"));
  return R(sqlite3_last_insert_rowid(db_));
}

StoreResult<Done> HistoryStore::end_run(std::int64_t run_id, int exit_code,
                                        std::int64_t ended_at_ms) {
  using R = StoreResult<Done>;
  Stmt s(db_, "UPDATE runs SET ended_at_ms = ?, exit_code = ? WHERE id = ?");
  s.bind(1, ended_at_ms ? ended_at_ms : now_ms()).bind(2, exit_code).bind(3, run_id);
  if (s.step() != SQLITE_DONE) return R::failure(failure("recording the run's end"));
  if (sqlite3_changes(db_) != 1)
    return R::failure(fmt::format("{}: no run {} to end (was the history replaced mid-run?)",
                                  path_.string(), run_id));
  return R(Done{});
}

StoreResult<std::int64_t> HistoryStore::record_job(const JobRecord& job,
                                                   const std::vector<TimelinePoint>& timeline,
                                                   std::size_t max_points) {
  using R = StoreResult<std::int64_t>;
  std::vector<JobWrite> one{{job, timeline}};
  auto r = record_jobs(one, max_points);
  if (!r) return R::failure(r.error());
  return R(r.value().front());
}

StoreResult<std::vector<std::int64_t>> HistoryStore::record_jobs(const std::vector<JobWrite>& jobs,
                                                                 std::size_t max_points) {
  using R = StoreResult<std::vector<std::int64_t>>;
  std::vector<std::int64_t> ids;
  if (jobs.empty()) return R(std::move(ids));
  ids.reserve(jobs.size());
  const std::string first = fmt::format("recording job {}", jobs.front().job.input_path);
  Transaction tx(db_);
  if (tx.begin_rc() != SQLITE_OK)
    return R::failure(failure(jobs.size() == 1 ? first : fmt::format("recording {} jobs", jobs.size())));
  // Prepared once for the whole batch.
  Stmt s(db_,
         "INSERT INTO jobs (run_id, input_path, input_size_bytes, input_mtime_ns, "
         "audio_duration_s, job_key, status, attempts, peak_rss_bytes, peak_pss_bytes, "
         "peak_uss_bytes, peak_vram_bytes, wall_s, cpu_s, exit_status, term_signal, error, "
         "finished_at_ms, task, transcript_hash, started_at_ms, predicted_peak_bytes, oom_suspected) "
         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  Stmt o(db_, "INSERT INTO job_outputs (job_id, seq, path, size_bytes, mtime_ns) VALUES (?, ?, ?, ?, ?)");
  Stmt p(db_,
         "INSERT INTO job_timelines (job_id, seq, t_ms, rss_bytes, pss_bytes, vram_bytes) "
         "VALUES (?, ?, ?, ?, ?, ?)");
  for (const JobWrite& w : jobs) {
    const JobRecord& job = w.job;
    const std::string what = fmt::format("recording job {}", job.input_path);
    s.reset();
    s.bind(1, job.run_id)
        .bind(2, job.input_path)
        .bind(3, job.input_size_bytes)
        .bind(4, job.input_mtime_ns)
        .bind(5, job.audio_duration_s)
        .bind(6, job.job_key)
        .bind(7, std::string(to_string(job.status)))
        .bind(8, job.attempts)
        .bind(9, job.peak_rss_bytes)
        .bind(10, job.peak_pss_bytes)
        .bind(11, job.peak_uss_bytes)
        .bind(12, job.peak_vram_bytes)
        .bind(13, job.wall_s)
        .bind(14, job.cpu_s)
        .bind(15, job.exit_status)
        .bind(16, job.term_signal)
        .bind(17, job.error)
        .bind(18, job.finished_at_ms ? job.finished_at_ms : now_ms())
        .bind(19, job.task.empty() ? std::optional<std::string>() : std::optional<std::string>(job.task))
        .bind(20, job.transcript_hash)
        .bind(21, job.started_at_ms)
        .bind(22, job.predicted_peak_bytes)
        .bind(23, job.oom_suspected ? 1 : 0);
    if (s.step() != SQLITE_DONE) return R::failure(failure(what));
    const std::int64_t id = sqlite3_last_insert_rowid(db_);
    ids.push_back(id);
    for (std::size_t i = 0; i < job.outputs.size(); ++i) {
      o.reset();
      o.bind(1, id)
          .bind(2, static_cast<std::int64_t>(i))
          .bind(3, job.outputs[i].path)
          .bind(4, job.outputs[i].size_bytes)
          .bind(5, job.outputs[i].mtime_ns);
      if (o.step() != SQLITE_DONE) return R::failure(failure(what + "'s outputs"));
    }
    const auto kept = downsample_timeline(w.timeline, max_points);
    for (std::size_t i = 0; i < kept.size(); ++i) {
      p.reset();
      p.bind(1, id)
          .bind(2, static_cast<std::int64_t>(i))
          .bind(3, kept[i].t_ms)
          .bind(4, kept[i].rss_bytes)
          .bind(5, kept[i].pss_bytes)
          .bind(6, kept[i].vram_bytes);
      if (p.step() != SQLITE_DONE) return R::failure(failure(what + "'s timeline"));
    }
  }
  if (tx.commit() != SQLITE_OK)
    return R::failure(failure(jobs.size() == 1 ? first : fmt::format("recording {} jobs", jobs.size())));
  return R(std::move(ids));
}

StoreResult<bool> HistoryStore::find_done(const std::string& input_path, std::uint64_t size_bytes,
                                          std::int64_t mtime_ns, const std::string& job_key) {
  using R = StoreResult<bool>;
  const std::string what = "looking up " + input_path;
  if (!find_done_stmt_ &&
      sqlite3_prepare_v3(db_,
                         "SELECT 1 FROM jobs WHERE input_path = ? AND job_key = ? AND "
                         "input_size_bytes = ? AND input_mtime_ns = ? AND status = 'ok' LIMIT 1",
                         -1, SQLITE_PREPARE_PERSISTENT, &find_done_stmt_, nullptr) != SQLITE_OK)
    return R::failure(failure(what));
  sqlite3_stmt* s = find_done_stmt_;
  sqlite3_reset(s);
  sqlite3_bind_text(s, 1, input_path.data(), static_cast<int>(input_path.size()), SQLITE_TRANSIENT);
  sqlite3_bind_text(s, 2, job_key.data(), static_cast<int>(job_key.size()), SQLITE_TRANSIENT);
  sqlite3_bind_int64(s, 3, static_cast<std::int64_t>(size_bytes));
  sqlite3_bind_int64(s, 4, mtime_ns);
  const int rc = sqlite3_step(s);
  sqlite3_reset(s);  // ends the read, so this connection does not pin an old WAL snapshot
  if (rc == SQLITE_ROW) return R(true);
  if (rc == SQLITE_DONE) return R(false);
  return R::failure(failure(what));
}

namespace {

// Prepares `sql` into `stmt` once (persistent), resets it otherwise; false if it cannot be prepared.
bool prepare_once(sqlite3* db, sqlite3_stmt*& stmt, const std::string& sql) {
  if (stmt) {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return true;
  }
  return sqlite3_prepare_v3(db, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) == SQLITE_OK;
}

void bind_text(sqlite3_stmt* s, int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

std::string column_text(sqlite3_stmt* s, int c) {
  const auto* p = sqlite3_column_text(s, c);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(s, c)))
           : std::string();
}

}  // namespace

StoreResult<std::optional<JobRow>> HistoryStore::last_ok_job(const std::string& input_path,
                                                             const std::string& job_key) {
  using R = StoreResult<std::optional<JobRow>>;
  const std::string what = "looking up " + input_path;
  if (!prepare_once(db_, last_ok_stmt_,
                    fmt::format("SELECT {} FROM jobs WHERE input_path = ? AND job_key = ? AND status = 'ok' "
                                "ORDER BY finished_at_ms DESC, id DESC LIMIT 1",
                                kJobColumns)))
    return R::failure(failure(what));
  sqlite3_stmt* s = last_ok_stmt_;
  bind_text(s, 1, input_path);
  bind_text(s, 2, job_key);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(s);
    return R(std::optional<JobRow>());
  }
  if (rc != SQLITE_ROW) {
    sqlite3_reset(s);
    return R::failure(failure(what));
  }
  // read_job takes a Stmt; the persistent statement's columns are read the same way by hand.
  JobRow j;
  j.id = sqlite3_column_int64(s, 0);
  j.run_id = sqlite3_column_int64(s, 1);
  j.input_path = column_text(s, 2);
  j.input_size_bytes = static_cast<std::uint64_t>(sqlite3_column_int64(s, 3));
  j.input_mtime_ns = sqlite3_column_int64(s, 4);
  if (sqlite3_column_type(s, 5) != SQLITE_NULL) j.audio_duration_s = sqlite3_column_double(s, 5);
  j.job_key = column_text(s, 6);
  j.status = JobStatus::kOk;
  j.finished_at_ms = sqlite3_column_int64(s, 18);
  j.task = column_text(s, 19);
  if (sqlite3_column_type(s, 20) != SQLITE_NULL) j.transcript_hash = column_text(s, 20);
  sqlite3_reset(s);  // ends the read, so this connection does not pin an old WAL snapshot

  if (!prepare_once(db_, outputs_stmt_,
                    "SELECT path, size_bytes, mtime_ns FROM job_outputs WHERE job_id = ? ORDER BY seq"))
    return R::failure(failure(what));
  s = outputs_stmt_;
  sqlite3_bind_int64(s, 1, j.id);
  while ((rc = sqlite3_step(s)) == SQLITE_ROW)
    j.outputs.push_back({column_text(s, 0), static_cast<std::uint64_t>(sqlite3_column_int64(s, 1)),
                         sqlite3_column_int64(s, 2)});
  sqlite3_reset(s);
  if (rc != SQLITE_DONE) return R::failure(failure(what + "'s outputs"));
  return R(std::optional<JobRow>(std::move(j)));
}

StoreResult<bool> HistoryStore::ok_under_other_key(const std::string& input_path, const std::string& job_key) {
  using R = StoreResult<bool>;
  const std::string what = "looking up " + input_path;
  if (!prepare_once(db_, other_key_stmt_,
                    "SELECT 1 FROM jobs WHERE input_path = ? AND job_key != ? AND status = 'ok' LIMIT 1"))
    return R::failure(failure(what));
  sqlite3_stmt* s = other_key_stmt_;
  bind_text(s, 1, input_path);
  bind_text(s, 2, job_key);
  const int rc = sqlite3_step(s);
  sqlite3_reset(s);
  if (rc == SQLITE_ROW) return R(true);
  if (rc == SQLITE_DONE) return R(false);
  return R::failure(failure(what));
}

StoreResult<std::vector<JobRow>> HistoryStore::jobs_for_key(const std::string& job_key,
                                                            std::size_t limit) {
  using R = StoreResult<std::vector<JobRow>>;
  const std::string sql = fmt::format(
      "SELECT {} FROM jobs WHERE job_key = ? ORDER BY finished_at_ms DESC, id DESC LIMIT ?",
      kJobColumns);
  Stmt s(db_, sql.c_str());
  s.bind(1, job_key).bind(2, static_cast<std::int64_t>(limit));
  std::vector<JobRow> rows;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) rows.push_back(read_job(s));
  if (rc != SQLITE_DONE) return R::failure(failure("reading jobs of key " + job_key));
  return R(std::move(rows));
}

StoreResult<std::vector<JobRow>> HistoryStore::jobs_for_run(std::int64_t run_id) {
  using R = StoreResult<std::vector<JobRow>>;
  const std::string sql =
      fmt::format("SELECT {} FROM jobs WHERE run_id = ? ORDER BY finished_at_ms, id", kJobColumns);
  Stmt s(db_, sql.c_str());
  s.bind(1, run_id);
  std::vector<JobRow> rows;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) rows.push_back(read_job(s));
  if (rc != SQLITE_DONE) return R::failure(failure(fmt::format("reading jobs of run {}", run_id)));
  return R(std::move(rows));
}

StoreResult<std::vector<TimelinePoint>> HistoryStore::timeline(std::int64_t job_id) {
  using R = StoreResult<std::vector<TimelinePoint>>;
  Stmt s(db_,
         "SELECT t_ms, rss_bytes, pss_bytes, vram_bytes FROM job_timelines WHERE job_id = ? "
         "ORDER BY seq");
  s.bind(1, job_id);
  std::vector<TimelinePoint> points;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    points.push_back({s.i64(0), static_cast<std::uint64_t>(s.i64(1)),
                      static_cast<std::uint64_t>(s.i64(2)), static_cast<std::uint64_t>(s.i64(3))});
  if (rc != SQLITE_DONE)
    return R::failure(failure(fmt::format("reading the timeline of job {}", job_id)));
  return R(std::move(points));
}

StoreResult<std::vector<RunRow>> HistoryStore::runs(std::size_t limit) {
  using R = StoreResult<std::vector<RunRow>>;
  const std::string sql = std::string(kRunSelect) + "ORDER BY r.id DESC LIMIT ?";
  Stmt s(db_, sql.c_str());
  s.bind(1, static_cast<std::int64_t>(limit));
  std::vector<RunRow> rows;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) rows.push_back(read_run(s));
  if (rc != SQLITE_DONE) return R::failure(failure("listing runs"));
  return R(std::move(rows));
}

StoreResult<std::optional<RunRow>> HistoryStore::run(std::int64_t run_id) {
  using R = StoreResult<std::optional<RunRow>>;
  const std::string sql = std::string(kRunSelect) + "WHERE r.id = ?";
  Stmt s(db_, sql.c_str());
  s.bind(1, run_id);
  const int rc = s.step();
  if (rc == SQLITE_ROW) return R(std::optional<RunRow>(read_run(s)));
  if (rc == SQLITE_DONE) return R(std::optional<RunRow>());
  return R::failure(failure(fmt::format("reading run {}", run_id)));
}

StoreResult<std::vector<KeyRow>> HistoryStore::keys() {
  using R = StoreResult<std::vector<KeyRow>>;
  Stmt s(db_,
         "SELECT job_key, COUNT(*), SUM(status = 'ok'), MAX(finished_at_ms) FROM jobs "
         "GROUP BY job_key ORDER BY MAX(finished_at_ms) DESC, job_key");
  std::vector<KeyRow> rows;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW)
    rows.push_back({s.text(0), static_cast<std::uint32_t>(s.i64(1)),
                    static_cast<std::uint32_t>(s.i64(2)), s.i64(3)});
  if (rc != SQLITE_DONE) return R::failure(failure("listing job keys"));
  return R(std::move(rows));
}

StoreResult<std::uint32_t> HistoryStore::forget_key(const std::string& job_key) {
  using R = StoreResult<std::uint32_t>;
  const std::string what = "forgetting key " + job_key;
  Transaction tx(db_);
  if (tx.begin_rc() != SQLITE_OK) return R::failure(failure(what));
  // Timelines go with their jobs (ON DELETE CASCADE; foreign_keys is on).
  Stmt jobs(db_, "DELETE FROM jobs WHERE job_key = ?");
  jobs.bind(1, job_key);
  if (jobs.step() != SQLITE_DONE) return R::failure(failure(what));
  const auto deleted = static_cast<std::uint32_t>(sqlite3_changes(db_));
  Stmt tuned(db_, "DELETE FROM tuned_settings WHERE job_key = ?");
  tuned.bind(1, job_key);
  if (tuned.step() != SQLITE_DONE) return R::failure(failure(what));
  if (tx.commit() != SQLITE_OK) return R::failure(failure(what));
  return R(deleted);
}

StoreResult<nlohmann::json> HistoryStore::tuned_settings(const std::string& job_key) {
  using R = StoreResult<nlohmann::json>;
  Stmt s(db_, "SELECT settings_json FROM tuned_settings WHERE job_key = ?");
  s.bind(1, job_key);
  const int rc = s.step();
  if (rc == SQLITE_DONE) return R(nlohmann::json());
  if (rc != SQLITE_ROW) return R::failure(failure("reading tuned settings of " + job_key));
  auto parsed = nlohmann::json::parse(s.text(0), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded())
    return R::failure(fmt::format(
        "{}: the tuned settings of {} are not valid JSON; run `align-batch history forget {}` or "
        "`replay --apply` again",
        path_.string(), job_key, job_key));
  return R(std::move(parsed));
}

StoreResult<Done> HistoryStore::record_slurm_task(const SlurmTaskRecord& t) {
  using R = StoreResult<Done>;
  Stmt s(db_,
         "INSERT OR REPLACE INTO slurm_tasks (run_id, task_id, job_key, state, exit_code, exit_signal, "
         "req_mem_bytes, max_rss_bytes, elapsed_s, files, recorded_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  s.bind(1, t.run_id).bind(2, t.task_id).bind(3, t.job_key).bind(4, t.state).bind(5, t.exit_code);
  s.bind(6, t.exit_signal).bind(7, t.req_mem_bytes).bind(8, t.max_rss_bytes).bind(9, t.elapsed_s).bind(10, t.files);
  s.bind(11, now_ms());
  if (s.step() != SQLITE_DONE) return R::failure(failure("recording Slurm task " + t.task_id));
  return R(Done{});
}

StoreResult<Done> HistoryStore::record_run_samples(std::int64_t run_id, const std::vector<RunSample>& samples) {
  using R = StoreResult<Done>;
  if (samples.empty()) return R(Done{});
  const std::string what = fmt::format("recording the memory samples of run {}", run_id);
  Transaction tx(db_);
  if (tx.begin_rc() != SQLITE_OK) return R::failure(failure(what));
  Stmt s(db_,
         "INSERT OR REPLACE INTO run_samples (run_id, t_ms, ours_bytes, shared_bytes, mem_available_bytes, "
         "psi_full_avg10) VALUES (?, ?, ?, ?, ?, ?)");
  for (const RunSample& x : samples) {
    s.reset();
    s.bind(1, run_id).bind(2, x.t_ms).bind(3, x.ours_bytes).bind(4, x.shared_bytes);
    s.bind(5, x.mem_available_bytes).bind(6, x.psi_full_avg10);
    if (s.step() != SQLITE_DONE) return R::failure(failure(what));
  }
  if (tx.commit() != SQLITE_OK) return R::failure(failure(what));
  return R(Done{});
}

StoreResult<std::vector<RunSample>> HistoryStore::run_samples(std::int64_t run_id) {
  using R = StoreResult<std::vector<RunSample>>;
  Stmt s(db_,
         "SELECT t_ms, ours_bytes, shared_bytes, mem_available_bytes, psi_full_avg10 FROM run_samples "
         "WHERE run_id = ? ORDER BY t_ms");
  s.bind(1, run_id);
  std::vector<RunSample> rows;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    RunSample x;
    x.t_ms = s.i64(0);
    x.ours_bytes = static_cast<std::uint64_t>(s.i64(1));
    x.shared_bytes = static_cast<std::uint64_t>(s.i64(2));
    if (!s.null(3)) x.mem_available_bytes = static_cast<std::uint64_t>(s.i64(3));
    if (!s.null(4)) x.psi_full_avg10 = s.f64(4);
    rows.push_back(x);
  }
  if (rc != SQLITE_DONE) return R::failure(failure(fmt::format("reading the memory samples of run {}", run_id)));
  return R(std::move(rows));
}

StoreResult<std::vector<SlurmTaskRecord>> HistoryStore::slurm_tasks_for_run(std::int64_t run_id) {
  using R = StoreResult<std::vector<SlurmTaskRecord>>;
  Stmt s(db_,
         "SELECT run_id, task_id, job_key, state, exit_code, exit_signal, req_mem_bytes, max_rss_bytes, elapsed_s, "
         "files FROM slurm_tasks WHERE run_id = ? ORDER BY recorded_at_ms, task_id");
  s.bind(1, run_id);
  std::vector<SlurmTaskRecord> rows;
  int rc;
  while ((rc = s.step()) == SQLITE_ROW) {
    SlurmTaskRecord t;
    t.run_id = s.i64(0);
    t.task_id = s.text(1);
    t.job_key = s.text(2);
    t.state = s.text(3);
    t.exit_code = static_cast<int>(s.i64(4));
    t.exit_signal = static_cast<int>(s.i64(5));
    t.req_mem_bytes = static_cast<std::uint64_t>(s.i64(6));
    if (!s.null(7)) t.max_rss_bytes = static_cast<std::uint64_t>(s.i64(7));
    t.elapsed_s = s.f64(8);
    t.files = static_cast<std::uint32_t>(s.i64(9));
    rows.push_back(std::move(t));
  }
  if (rc != SQLITE_DONE) return R::failure(failure(fmt::format("reading the Slurm tasks of run {}", run_id)));
  return R(std::move(rows));
}

StoreResult<Done> HistoryStore::store_tuned_settings(const std::string& job_key,
                                                     const nlohmann::json& settings) {
  using R = StoreResult<Done>;
  Stmt s(db_,
         "INSERT INTO tuned_settings (job_key, settings_json, updated_at_ms) VALUES (?, ?, ?) "
         "ON CONFLICT(job_key) DO UPDATE SET settings_json = excluded.settings_json, "
         "updated_at_ms = excluded.updated_at_ms");
  s.bind(1, job_key).bind(2, settings.dump()).bind(3, now_ms());
  if (s.step() != SQLITE_DONE) return R::failure(failure("storing tuned settings of " + job_key));
  return R(Done{});
}

}  // namespace ab
