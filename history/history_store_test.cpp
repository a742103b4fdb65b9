// HistoryStore tests on real SQLite files: schema, round trips, resume, keys, forget, settings.
#include "history/history_store.h"

#include "tests/testutil/raw_sqlite.h"
#include "tests/testutil/temp_dir.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <filesystem>

using ab::HistoryStore;
using ab::JobRecord;
using ab::JobStatus;
using ab::test::raw_exec;
using ab::test::raw_int;

namespace {

std::unique_ptr<HistoryStore> open_ok(const std::filesystem::path& p) {
  auto r = HistoryStore::open(p);
  INFO(r.error());
  REQUIRE(r.ok());
  return std::move(r.value());
}

JobRecord make_job(std::int64_t run, const std::string& path, const std::string& key,
                   JobStatus status = JobStatus::kOk) {
  JobRecord j;
  j.run_id = run;
  j.input_path = path;
  j.input_size_bytes = 123456;
  j.input_mtime_ns = 1700000000123456789;
  j.job_key = key;
  j.status = status;
  j.peak_rss_bytes = 2'000'000'000;
  j.peak_pss_bytes = 1'500'000'000;
  j.finished_at_ms = 1700000000000;
  return j;
}

}  // namespace

TEST_CASE("default path sits beside the outputs") {
  CHECK(ab::default_history_path("/data/out") == "/data/out/.align-batch/history.sqlite");
}

TEST_CASE("open creates the directory and a WAL database stamped with our id and version") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "out" / ".align-batch" / "history.sqlite";
  { auto store = open_ok(db); }
  CHECK(std::filesystem::exists(db));
  CHECK(raw_int(db, "PRAGMA user_version") == ab::kHistorySchemaVersion);
  CHECK(raw_int(db, "PRAGMA application_id") == ab::kHistoryApplicationId);
  CHECK(raw_int(db, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'") == 7);  // runs, jobs, job_timelines, tuned_settings, job_outputs, slurm_tasks, run_samples
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &s, nullptr);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 0))) == "wal");
  sqlite3_finalize(s);
  sqlite3_close(h);
  // Reopening an existing history works and migrates nothing.
  auto again = open_ok(db);
  CHECK(again->keys()->empty());
}

TEST_CASE("schema 4: a run's Slurm tasks, sacct's figures beside its jobs and not among them") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "h.sqlite";
  {
    auto store = open_ok(db);
    REQUIRE(store->begin_run({}).ok());
  }
  // A schema 3 file (no slurm_tasks) gains the table.
  raw_exec(db, "DROP TABLE run_samples; DROP TABLE slurm_tasks; PRAGMA user_version = 3");
  auto store = open_ok(db);
  CHECK(raw_int(db, "PRAGMA user_version") == ab::kHistorySchemaVersion);
  ab::SlurmTaskRecord t;
  t.run_id = 1;
  t.task_id = "12_3";
  t.job_key = "cmd:aa";
  t.state = "OUT_OF_MEMORY";
  t.exit_code = 0;
  t.exit_signal = 125;
  t.req_mem_bytes = 200ull << 20;
  t.max_rss_bytes = 190ull << 20;
  t.elapsed_s = 2.5;
  t.files = 4;
  REQUIRE(store->record_slurm_task(t).ok());
  ab::SlurmTaskRecord u = t;
  u.task_id = "12_4";
  u.state = "COMPLETED";
  u.max_rss_bytes.reset();  // sacct had not shown it yet
  REQUIRE(store->record_slurm_task(u).ok());
  const auto rows = store->slurm_tasks_for_run(1);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 2);
  CHECK(rows->at(0).task_id == "12_3");
  CHECK(rows->at(0).state == "OUT_OF_MEMORY");
  CHECK(rows->at(0).exit_signal == 125);
  CHECK(rows->at(0).req_mem_bytes == 200ull << 20);
  CHECK(rows->at(0).max_rss_bytes == std::optional<std::uint64_t>(190ull << 20));
  CHECK(rows->at(0).elapsed_s == doctest::Approx(2.5));
  CHECK(rows->at(0).files == 4);
  CHECK_FALSE(rows->at(1).max_rss_bytes);
  // Not jobs: `history` lists no key for them, and the run's jobs do not include them.
  CHECK(store->keys()->empty());
  CHECK(store->jobs_for_run(1)->empty());
  CHECK(store->slurm_tasks_for_run(2)->empty());
}

TEST_CASE("schema 5: a run's memory samples, in time order, absent figures kept absent") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "h.sqlite";
  {
    auto store = open_ok(db);
    REQUIRE(store->begin_run({}).ok());
  }
  // A schema 4 file (no run_samples) gains the table, and its runs read back none.
  raw_exec(db, "DROP TABLE run_samples; PRAGMA user_version = 4");
  auto store = open_ok(db);
  CHECK(raw_int(db, "PRAGMA user_version") == ab::kHistorySchemaVersion);
  REQUIRE(store->run_samples(1).ok());
  CHECK(store->run_samples(1)->empty());
  const auto run2 = store->begin_run({});
  REQUIRE(run2.ok());
  std::vector<ab::RunSample> later(1), earlier(1);
  later[0].t_ms = 2000;
  later[0].ours_bytes = 700ull << 20;
  later[0].shared_bytes = 300ull << 20;
  later[0].mem_available_bytes = 5ull << 30;
  later[0].psi_full_avg10 = 12.5;
  earlier[0].t_ms = 1000;
  earlier[0].ours_bytes = 100ull << 20;  // no MemAvailable, no PSI on this machine
  REQUIRE(store->record_run_samples(*run2, later).ok());
  REQUIRE(store->record_run_samples(*run2, earlier).ok());
  const auto rows = store->run_samples(*run2);
  REQUIRE(rows.ok());
  REQUIRE(rows->size() == 2);
  CHECK(rows->at(0).t_ms == 1000);
  CHECK(rows->at(0).ours_bytes == 100ull << 20);
  CHECK_FALSE(rows->at(0).mem_available_bytes);
  CHECK_FALSE(rows->at(0).psi_full_avg10);
  CHECK(rows->at(1).t_ms == 2000);
  CHECK(rows->at(1).shared_bytes == 300ull << 20);
  CHECK(rows->at(1).mem_available_bytes == std::optional<std::uint64_t>(5ull << 30));
  CHECK(rows->at(1).psi_full_avg10 == std::optional<double>(12.5));
  CHECK(store->run_samples(1)->empty());
}

TEST_CASE("a schema 2 history migrates to 3 keeping its jobs; the report's new fields read as unknown") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "h.sqlite";
  {
    auto store = open_ok(db);
    const auto run = store->begin_run({});
    REQUIRE(run.ok());
    JobRecord j = make_job(*run, "/c/old.wav", "ctc:aa");
    j.started_at_ms = 5;
    REQUIRE(store->record_job(j).ok());
  }
  // Back to schema 2 exactly as it was: the three columns migration 2 -> 3 adds removed, and
  // the tables 3 -> 4 and 4 -> 5 add.
  raw_exec(db, "ALTER TABLE jobs DROP COLUMN started_at_ms; ALTER TABLE jobs DROP COLUMN "
           "predicted_peak_bytes; ALTER TABLE jobs DROP COLUMN oom_suspected; "
           "DROP TABLE slurm_tasks; DROP TABLE run_samples; PRAGMA user_version = 2");
  REQUIRE(raw_int(db, "PRAGMA user_version") == 2);

  auto store = open_ok(db);
  CHECK(raw_int(db, "PRAGMA user_version") == ab::kHistorySchemaVersion);
  const auto jobs = store->jobs_for_run(1);
  REQUIRE(jobs.ok());
  REQUIRE(jobs->size() == 1);
  CHECK(jobs->at(0).input_path == "/c/old.wav");
  CHECK(jobs->at(0).peak_pss_bytes == 1'500'000'000);
  CHECK_FALSE(jobs->at(0).started_at_ms);
  CHECK_FALSE(jobs->at(0).predicted_peak_bytes);
  CHECK_FALSE(jobs->at(0).oom_suspected);
}

TEST_CASE("Create::kNever refuses a missing file and creates nothing") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "sub" / "history.sqlite";
  auto r = HistoryStore::open(db, HistoryStore::Create::kNever);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find(db.string()) != std::string::npos);
  CHECK(r.error().find("no history database") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir.path() / "sub"));
}

TEST_CASE("runs and jobs round-trip every field") {
  ab::test::TempDir dir;
  auto store = open_ok(dir.path() / "h.sqlite");
  ab::RunInfo info;
  info.started_at_ms = 1700000000000;
  info.host = "node7";
  info.cores = 2;
  info.mem_total_bytes = 25'000'000'000;
  info.budget_bytes = 20'000'000'000;
  info.settings.mem_budget = "20G";
  const auto run = store->begin_run(info);
  REQUIRE(run.ok());

  JobRecord a = make_job(*run, "/c/a.wav", "ctc:aa");
  a.audio_duration_s = 12.5;
  a.attempts = 2;
  a.peak_uss_bytes = 1'000'000'000;
  a.peak_vram_bytes = 3'000'000'000;
  a.wall_s = 1.25;
  a.cpu_s = 2.5;
  a.exit_status = 0;
  a.started_at_ms = a.finished_at_ms - 1250;
  a.predicted_peak_bytes = 1'400'000'000;
  JobRecord b = make_job(*run, "/c/b.wav", "ctc:aa", JobStatus::kDied);
  b.term_signal = 9;
  b.error = "worker killed by SIGKILL (the kernel's OOM killer?)";
  b.oom_suspected = true;
  b.finished_at_ms = a.finished_at_ms + 10;
  REQUIRE(store->record_job(a).ok());
  REQUIRE(store->record_job(b).ok());
  REQUIRE(store->end_run(*run, 0, 1700000009000).ok());

  const auto jobs = store->jobs_for_run(*run);
  REQUIRE(jobs.ok());
  REQUIRE(jobs->size() == 2);
  const auto& ja = (*jobs)[0];
  CHECK(ja.input_path == "/c/a.wav");
  CHECK(ja.input_size_bytes == 123456);
  CHECK(ja.input_mtime_ns == 1700000000123456789);
  CHECK(ja.audio_duration_s == 12.5);
  CHECK(ja.status == JobStatus::kOk);
  CHECK(ja.attempts == 2);
  CHECK(ja.peak_rss_bytes == 2'000'000'000);
  CHECK(ja.peak_pss_bytes == 1'500'000'000);
  CHECK(ja.peak_uss_bytes == 1'000'000'000);
  CHECK(ja.peak_vram_bytes == 3'000'000'000);
  CHECK(ja.wall_s == 1.25);
  CHECK(ja.cpu_s == 2.5);
  CHECK(ja.exit_status == 0);
  CHECK_FALSE(ja.term_signal);
  CHECK(ja.started_at_ms == a.finished_at_ms - 1250);
  CHECK(ja.predicted_peak_bytes == 1'400'000'000);
  CHECK_FALSE(ja.oom_suspected);
  const auto& jb = (*jobs)[1];
  CHECK(jb.status == JobStatus::kDied);
  CHECK_FALSE(jb.audio_duration_s);
  CHECK_FALSE(jb.exit_status);
  CHECK(jb.term_signal == 9);
  CHECK(jb.error == b.error);
  CHECK_FALSE(jb.started_at_ms);
  CHECK_FALSE(jb.predicted_peak_bytes);
  CHECK(jb.oom_suspected);

  const auto r = store->run(*run);
  REQUIRE(r.ok());
  REQUIRE(r->has_value());
  const auto& row = **r;
  CHECK(row.info.host == "node7");
  CHECK(row.info.cores == 2);
  CHECK(row.info.mem_total_bytes == 25'000'000'000);
  CHECK(row.info.budget_bytes == 20'000'000'000);
  CHECK(row.info.version == AB_VERSION);
  CHECK(row.info.settings.mem_budget == "20G");
  CHECK(row.ended_at_ms == 1700000009000);
  CHECK(row.exit_code == 0);
  CHECK(row.job_count == 2);
  CHECK(row.ok_count == 1);
  CHECK_FALSE(store->run(*run + 100)->has_value());
  CHECK_FALSE(store->end_run(*run + 100, 0).ok());
}

TEST_CASE("a job must belong to a recorded run (foreign keys are on)") {
  ab::test::TempDir dir;
  auto store = open_ok(dir.path() / "h.sqlite");
  const auto r = store->record_job(make_job(42, "/c/a.wav", "ctc:aa"));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find("/c/a.wav") != std::string::npos);
  CHECK(r.error().find("FOREIGN KEY") != std::string::npos);
}

TEST_CASE("record_jobs writes a batch in one transaction: every job with its timeline, or none") {
  ab::test::TempDir dir;
  auto store = open_ok(dir.path() / "h.sqlite");
  const auto run = *store->begin_run({});
  std::vector<ab::JobWrite> batch;
  for (int i = 0; i < 3; ++i)
    batch.push_back({make_job(run, "/c/" + std::to_string(i) + ".wav", "ctc:aa"),
                     {{10, 100, 90, 0}, {20, 200 + static_cast<std::uint64_t>(i), 180, 0}}});
  const auto ids = store->record_jobs(batch);
  REQUIRE(ids.ok());
  REQUIRE(ids.value().size() == 3);
  const auto rows = *store->jobs_for_run(run);
  REQUIRE(rows.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(rows[static_cast<std::size_t>(i)].id == ids.value()[static_cast<std::size_t>(i)]);
    const auto tl = *store->timeline(ids.value()[static_cast<std::size_t>(i)]);
    REQUIRE(tl.size() == 2);
    CHECK(tl[1].rss_bytes == 200 + static_cast<std::uint64_t>(i));
  }
  // The second of a new batch belongs to no run: the whole batch is refused, the first included.
  std::vector<ab::JobWrite> bad = {{make_job(run, "/c/ok.wav", "ctc:aa"), {}}, {make_job(42, "/c/orphan.wav", "ctc:aa"), {}}};
  const auto refused = store->record_jobs(bad);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().find("/c/orphan.wav") != std::string::npos);
  CHECK(raw_int(dir.path() / "h.sqlite", "SELECT COUNT(*) FROM jobs") == 3);
}

TEST_CASE("find_done: an ok job with the same path, size, mtime and key") {
  ab::test::TempDir dir;
  auto store = open_ok(dir.path() / "h.sqlite");
  const auto run = *store->begin_run({});
  const auto job = make_job(run, "/c/a.wav", "ctc:aa");
  REQUIRE(store->record_job(job).ok());
  REQUIRE(store->record_job(make_job(run, "/c/b.wav", "ctc:aa", JobStatus::kFailed)).ok());
  CHECK(*store->find_done("/c/a.wav", job.input_size_bytes, job.input_mtime_ns, "ctc:aa"));
  CHECK_FALSE(*store->find_done("/c/a.wav", job.input_size_bytes + 1, job.input_mtime_ns, "ctc:aa"));
  CHECK_FALSE(*store->find_done("/c/a.wav", job.input_size_bytes, job.input_mtime_ns + 1, "ctc:aa"));
  CHECK_FALSE(*store->find_done("/c/a.wav", job.input_size_bytes, job.input_mtime_ns, "ctc:bb"));
  CHECK_FALSE(*store->find_done("/c/b.wav", job.input_size_bytes, job.input_mtime_ns, "ctc:aa"));
}

TEST_CASE("last_ok_job: the newest ok job of a path and key, with its task, transcript hash and outputs") {
  ab::test::TempDir dir;
  auto store = open_ok(dir.path() / "h.sqlite");
  const auto run = *store->begin_run({});
  auto job = make_job(run, "/c/caf\xe9.wav", "ctc:aa");  // not UTF-8: stored and found byte-exact
  job.task = "align";
  job.transcript_hash = "0123abcd";
  job.outputs = {{"/o/caf\xe9.TextGrid", 10, 111}, {"/o/caf\xe9.json", 20, 222}};
  job.finished_at_ms = 1000;
  REQUIRE(store->record_job(job).ok());
  auto newer = make_job(run, "/c/caf\xe9.wav", "ctc:aa");
  newer.task = "transcribe";
  newer.finished_at_ms = 2000;
  newer.outputs = {{"/o/caf\xe9.ctm", 30, 333}};
  REQUIRE(store->record_job(newer).ok());
  REQUIRE(store->record_job(make_job(run, "/c/caf\xe9.wav", "ctc:aa", JobStatus::kFailed)).ok());  // newest, not ok
  auto found = store->last_ok_job("/c/caf\xe9.wav", "ctc:aa");
  REQUIRE(found.ok());
  REQUIRE(found.value().has_value());
  const ab::JobRow& row = *found.value();
  CHECK(row.task == "transcribe");
  CHECK_FALSE(row.transcript_hash.has_value());
  REQUIRE(row.outputs.size() == 1);
  CHECK(row.outputs[0].path == "/o/caf\xe9.ctm");
  CHECK(row.outputs[0].size_bytes == 30);
  CHECK(row.outputs[0].mtime_ns == 333);
  CHECK(row.input_size_bytes == job.input_size_bytes);
  CHECK(row.input_mtime_ns == job.input_mtime_ns);
  CHECK_FALSE(store->last_ok_job("/c/caf\xe9.wav", "ctc:bb").value().has_value());
  CHECK(store->ok_under_other_key("/c/caf\xe9.wav", "ctc:bb").value());
  CHECK_FALSE(store->ok_under_other_key("/c/caf\xe9.wav", "ctc:aa").value());
  // Outputs go with their job.
  REQUIRE(store->forget_key("ctc:aa").ok());
  CHECK(raw_int(dir.path() / "h.sqlite", "SELECT COUNT(*) FROM job_outputs") == 0);
}

TEST_CASE("a schema-1 history is migrated: its jobs stay, with no task, so resume redoes them") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "h.sqlite";
  {
    // What a build of schema 1 wrote (its migration, verbatim from history_store.cpp 0 -> 1).
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
    const char* v1 =
        "CREATE TABLE runs (id INTEGER PRIMARY KEY, started_at_ms INTEGER NOT NULL, ended_at_ms INTEGER, "
        "exit_code INTEGER, host TEXT NOT NULL, cores INTEGER NOT NULL, mem_total_bytes INTEGER NOT NULL, "
        "budget_bytes INTEGER NOT NULL, version TEXT NOT NULL, flags_json TEXT NOT NULL);"
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, "
        "input_path TEXT NOT NULL, input_size_bytes INTEGER NOT NULL, input_mtime_ns INTEGER NOT NULL, "
        "audio_duration_s REAL, job_key TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('ok', 'failed', "
        "'killed', 'died')), attempts INTEGER NOT NULL, peak_rss_bytes INTEGER NOT NULL, peak_pss_bytes INTEGER "
        "NOT NULL, peak_uss_bytes INTEGER NOT NULL, peak_vram_bytes INTEGER NOT NULL, wall_s REAL NOT NULL, cpu_s "
        "REAL NOT NULL, exit_status INTEGER, term_signal INTEGER, error TEXT NOT NULL, finished_at_ms INTEGER NOT "
        "NULL);"
        "CREATE TABLE job_timelines (job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, seq INTEGER "
        "NOT NULL, t_ms INTEGER NOT NULL, rss_bytes INTEGER NOT NULL, pss_bytes INTEGER NOT NULL, vram_bytes "
        "INTEGER NOT NULL, PRIMARY KEY (job_id, seq)) WITHOUT ROWID;"
        "CREATE TABLE tuned_settings (job_key TEXT PRIMARY KEY, settings_json TEXT NOT NULL, updated_at_ms "
        "INTEGER NOT NULL);"
        "INSERT INTO runs VALUES (1, 1, 2, 0, 'h', 2, 1, 1, 'old', '{}');"
        "INSERT INTO jobs VALUES (1, 1, '/c/a.wav', 5, 6, 1.5, 'ctc:aa', 'ok', 1, 7, 8, 0, 0, 0.1, 0.1, 0, NULL, "
        "'', 3);"
        "PRAGMA application_id = 1094862897; PRAGMA user_version = 1;";
    REQUIRE(sqlite3_exec(h, v1, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(h);
  }
  auto store = open_ok(db);
  CHECK(raw_int(db, "PRAGMA user_version") == ab::kHistorySchemaVersion);
  auto found = store->last_ok_job("/c/a.wav", "ctc:aa");
  REQUIRE(found.ok());
  REQUIRE(found.value().has_value());
  CHECK(found.value()->task.empty());
  CHECK(found.value()->outputs.empty());
  CHECK_FALSE(found.value()->started_at_ms);
  CHECK_FALSE(found.value()->predicted_peak_bytes);
  CHECK_FALSE(found.value()->oom_suspected);
  CHECK(*store->find_done("/c/a.wav", 5, 6, "ctc:aa"));
}

TEST_CASE("timelines are stored down-sampled, in order, with the true peak") {
  ab::test::TempDir dir;
  auto store = open_ok(dir.path() / "h.sqlite");
  const auto run = *store->begin_run({});
  std::vector<ab::TimelinePoint> points;
  for (int i = 0; i < 5000; ++i)
    points.push_back({i * 20, 100'000'000u + static_cast<std::uint64_t>(i),
                      90'000'000u + static_cast<std::uint64_t>(i % 100), 0});
  points[3333].pss_bytes = 4'000'000'000;
  const auto id = store->record_job(make_job(run, "/c/a.wav", "ctc:aa"), points);
  REQUIRE(id.ok());
  const auto stored = store->timeline(*id);
  REQUIRE(stored.ok());
  REQUIRE(stored->size() == ab::kDefaultTimelinePoints);
  std::uint64_t max_pss = 0;
  for (std::size_t i = 0; i < stored->size(); ++i) {
    max_pss = std::max(max_pss, (*stored)[i].pss_bytes);
    if (i) CHECK((*stored)[i - 1].t_ms < (*stored)[i].t_ms);
  }
  CHECK(max_pss == 4'000'000'000);
  // A custom bound is honoured too.
  const auto id2 = store->record_job(make_job(run, "/c/b.wav", "ctc:aa"), points, 8);
  CHECK(store->timeline(*id2)->size() == 8);
}

TEST_CASE("keys, jobs_for_key (newest first, limited), forget_key") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "h.sqlite";
  auto store = open_ok(db);
  const auto run = *store->begin_run({});
  for (int i = 0; i < 30; ++i) {
    auto j = make_job(run, "/c/" + std::to_string(i) + ".wav", i % 3 ? "ctc:aa" : "cmd:tool {in}");
    j.finished_at_ms = 1000 + i;
    j.status = i == 4 ? JobStatus::kKilled : JobStatus::kOk;
    REQUIRE(store->record_job(j, {{0, 1, 1, 0}, {10, 2, 2, 0}}).ok());
  }
  REQUIRE(store->store_tuned_settings("ctc:aa", {{"high_water", 0.85}}).ok());
  const auto keys = store->keys();
  REQUIRE(keys.ok());
  REQUIRE(keys->size() == 2);
  // Most recently used first: job 29 is "ctc:aa" (29 % 3 != 0).
  CHECK((*keys)[0].job_key == "ctc:aa");
  CHECK((*keys)[0].job_count == 20);
  CHECK((*keys)[0].ok_count == 19);
  CHECK((*keys)[0].last_finished_at_ms == 1029);
  CHECK((*keys)[1].job_count == 10);

  const auto recent = store->jobs_for_key("ctc:aa", 5);
  REQUIRE(recent->size() == 5);
  CHECK((*recent)[0].finished_at_ms == 1029);
  CHECK((*recent)[4].finished_at_ms == 1023);  // 29, 28, 26, 25, 23: multiples of 3 are the other key

  const auto forgotten = store->forget_key("ctc:aa");
  REQUIRE(forgotten.ok());
  CHECK(*forgotten == 20);
  CHECK(*store->forget_key("ctc:never") == 0);
  CHECK(store->keys()->size() == 1);
  CHECK(store->tuned_settings("ctc:aa")->is_null());
  // Timelines went with their jobs: 10 jobs left, 2 points each.
  CHECK(raw_int(db, "SELECT COUNT(*) FROM job_timelines") == 20);
}

TEST_CASE("tuned settings: absent is null, stored JSON comes back, a second store replaces it") {
  ab::test::TempDir dir;
  auto store = open_ok(dir.path() / "h.sqlite");
  CHECK(store->tuned_settings("ctc:aa")->is_null());
  REQUIRE(store->store_tuned_settings("ctc:aa", {{"margin", 0.1}, {"max_workers", 3}}).ok());
  CHECK((*store->tuned_settings("ctc:aa"))["max_workers"] == 3);
  REQUIRE(store->store_tuned_settings("ctc:aa", {{"margin", 0.2}}).ok());
  const auto s = store->tuned_settings("ctc:aa");
  CHECK((*s)["margin"] == 0.2);
  CHECK_FALSE(s->contains("max_workers"));
}

TEST_CASE("runs lists newest first with job counts") {
  ab::test::TempDir dir;
  auto store = open_ok(dir.path() / "h.sqlite");
  const auto r1 = *store->begin_run({});
  const auto r2 = *store->begin_run({});
  REQUIRE(store->record_job(make_job(r1, "/c/a.wav", "k")).ok());
  REQUIRE(store->record_job(make_job(r2, "/c/a.wav", "k", JobStatus::kFailed)).ok());
  REQUIRE(store->record_job(make_job(r2, "/c/b.wav", "k")).ok());
  const auto runs = store->runs();
  REQUIRE(runs->size() == 2);
  CHECK((*runs)[0].id == r2);
  CHECK((*runs)[0].job_count == 2);
  CHECK((*runs)[0].ok_count == 1);
  CHECK_FALSE((*runs)[0].ended_at_ms);
  CHECK((*runs)[1].id == r1);
  CHECK(store->runs(1)->size() == 1);
}
