// HistoryStore safety on real processes: concurrent writers, a SIGKILLed writer, and files that
// must be refused without being touched (corrupt, newer schema, foreign, unwritable).
#include "history/history_store.h"

#include "tests/testutil/raw_sqlite.h"
#include "tests/testutil/temp_dir.h"

#include <doctest/doctest.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using ab::HistoryStore;
using ab::test::raw_exec;

namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string raw_text(const std::filesystem::path& db, const char* sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, sql, -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  std::string v(reinterpret_cast<const char*>(sqlite3_column_text(s, 0)));
  sqlite3_finalize(s);
  sqlite3_close(h);
  return v;
}

ab::JobRecord job(std::int64_t run, int i) {
  ab::JobRecord j;
  j.run_id = run;
  j.input_path = "/corpus/" + std::to_string(run) + "/" + std::to_string(i) + ".wav";
  j.input_size_bytes = 1000 + static_cast<std::uint64_t>(i);
  j.job_key = "ctc:safety";
  j.peak_pss_bytes = 1'000'000 + static_cast<std::uint64_t>(i);
  return j;
}

std::vector<ab::TimelinePoint> points(int n) {
  std::vector<ab::TimelinePoint> v;
  for (int i = 0; i < n; ++i) v.push_back({i * 10, 100u + i, 90u + i, 0});
  return v;
}

// Child side of the writer tests: never returns. Writes what failed to stderr.
[[noreturn]] void child_fail(const std::string& what) {
  std::fprintf(stderr, "child %d: %s\n", getpid(), what.c_str());
  _exit(1);
}

int wait_exit(pid_t pid) {
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("two processes write 300 jobs each into one new file at once: all rows, no lock error") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "shared" / "history.sqlite";
  constexpr int kJobsEach = 300, kPointsEach = 10;
  int gate[2];
  REQUIRE(pipe(gate) == 0);
  std::vector<pid_t> kids;
  for (int k = 0; k < 2; ++k) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(gate[1]);
      char c;
      while (read(gate[0], &c, 1) > 0) {}  // wait until the parent opens the gate (EOF)
      // Both create the file and its schema at the same moment, then interleave commits.
      auto store = HistoryStore::open(db);
      if (!store) child_fail(store.error());
      const auto run = (*store)->begin_run({});
      if (!run) child_fail(run.error());
      for (int i = 0; i < kJobsEach; ++i) {
        if (i == kJobsEach / 2) {
          // Halfway, wait until the other writer has committed too: the second half of each
          // then certainly overlaps the other's writes (without this, one could finish first).
          const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
          for (;;) {
            const auto runs = (*store)->runs();
            if (!runs) child_fail(runs.error());
            const bool other_wrote = std::any_of(runs->begin(), runs->end(), [&](const ab::RunRow& r) {
              return r.id != *run && r.job_count > 0;
            });
            if (other_wrote) break;
            if (std::chrono::steady_clock::now() > deadline) child_fail("the other writer never wrote");
            usleep(1000);
          }
        }
        const auto r = (*store)->record_job(job(*run, i), points(kPointsEach));
        if (!r) child_fail(r.error());
        if (auto done = (*store)->find_done(job(*run, i).input_path, 1000 + static_cast<std::uint64_t>(i), 0, "ctc:safety"); !done || !*done)
          child_fail("own job not found after commit");
      }
      if (auto e = (*store)->end_run(*run, 0); !e) child_fail(e.error());
      _exit(0);
    }
    kids.push_back(pid);
  }
  close(gate[0]);
  close(gate[1]);  // go
  for (pid_t pid : kids) CHECK(wait_exit(pid) == 0);

  auto store = HistoryStore::open(db, HistoryStore::Create::kNever);
  REQUIRE(store.ok());
  const auto runs = (*store)->runs();
  REQUIRE(runs->size() == 2);
  for (const auto& r : *runs) {
    CHECK(r.job_count == kJobsEach);
    CHECK(r.ended_at_ms);
    const auto jobs = (*store)->jobs_for_run(r.id);
    std::set<std::string> paths;
    for (const auto& j : *jobs) paths.insert(j.input_path);
    CHECK(paths.size() == kJobsEach);
  }
  CHECK(raw_text(db, "SELECT COUNT(*) FROM job_timelines") == std::to_string(2 * kJobsEach * kPointsEach));
  // The writers really overlapped: in commit (id) order, the writer changes more than once (the
  // halfway wait guarantees at least 2; SQLite's busy handler backs off for up to 100 ms, so one
  // writer often commits many jobs in a row).
  const int switches = std::stoi(raw_text(
      db, "SELECT COUNT(*) FROM jobs a JOIN jobs b ON b.id = a.id + 1 WHERE a.run_id != b.run_id"));
  MESSAGE("two writers: " << switches << " switches between writers in 600 commits");
  CHECK(switches >= 2);
  CHECK(raw_text(db, "PRAGMA integrity_check") == "ok");
}

TEST_CASE("a writer SIGKILLed mid-run leaves a database that opens and holds every committed job") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "history.sqlite";
  int ids[2];
  REQUIRE(pipe(ids) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(ids[0]);
    auto store = HistoryStore::open(db);
    if (!store) child_fail(store.error());
    const auto run = (*store)->begin_run({});
    if (!run) child_fail(run.error());
    for (int i = 0;; ++i) {
      // A long timeline, so that the kill often lands inside a transaction.
      const auto id = (*store)->record_job(job(*run, i), points(2000));
      if (!id) child_fail(id.error());
      const std::int64_t committed = *id;
      if (write(ids[1], &committed, sizeof committed) != sizeof committed) child_fail("pipe");
    }
  }
  close(ids[1]);
  std::vector<std::int64_t> reported;
  std::int64_t id;
  while (reported.size() < 150 && read(ids[0], &id, sizeof id) == sizeof id) reported.push_back(id);
  REQUIRE(reported.size() == 150);
  REQUIRE(kill(pid, SIGKILL) == 0);
  CHECK(wait_exit(pid) == 128 + SIGKILL);
  while (read(ids[0], &id, sizeof id) == sizeof id) reported.push_back(id);  // written before death
  close(ids[0]);
  // The run never ended and the WAL was never checkpointed by a clean close.
  CHECK(std::filesystem::exists(db.string() + "-wal"));

  auto store = HistoryStore::open(db, HistoryStore::Create::kNever);
  INFO(store.error());
  REQUIRE(store.ok());
  const auto runs = (*store)->runs();
  REQUIRE(runs->size() == 1);
  CHECK_FALSE((*runs)[0].ended_at_ms);
  const auto jobs = (*store)->jobs_for_run((*runs)[0].id);
  std::set<std::int64_t> stored;
  for (const auto& j : *jobs) stored.insert(j.id);
  for (auto r : reported) CHECK(stored.count(r) == 1);
  // At most one job committed between its commit and the kill without being reported.
  CHECK(stored.size() >= reported.size());
  CHECK(stored.size() <= reported.size() + 1);
  MESSAGE("SIGKILL: " << reported.size() << " jobs reported committed, " << stored.size()
                      << " found after reopening");
  for (auto j : stored) CHECK((*store)->timeline(j)->size() == ab::kDefaultTimelinePoints);
  CHECK(raw_text(db, "PRAGMA integrity_check") == "ok");
}

TEST_CASE("a corrupt file is refused, named, and left byte for byte as it was") {
  ab::test::TempDir dir;
  std::mt19937_64 rng(9);
  std::string garbage(64 * 1024, '\0');
  for (auto& c : garbage) c = static_cast<char>(rng());
  const auto db = dir.write("history.sqlite", garbage);
  const auto r = HistoryStore::open(db);
  REQUIRE_FALSE(r.ok());
  INFO(r.error());
  CHECK(r.error().find(db.string()) != std::string::npos);
  CHECK(r.error().find("not a readable align-batch history") != std::string::npos);
  CHECK(r.error().find("--history") != std::string::npos);
  CHECK(slurp(db) == garbage);
  CHECK_FALSE(std::filesystem::exists(db.string() + "-wal"));
}

TEST_CASE("a history from a newer schema is refused and left untouched") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "history.sqlite";
  { REQUIRE(HistoryStore::open(db).ok()); }
  raw_exec(db, "PRAGMA user_version = 7; CREATE TABLE from_the_future (x)");
  const auto before = slurp(db);
  const auto r = HistoryStore::open(db);
  REQUIRE_FALSE(r.ok());
  INFO(r.error());
  CHECK(r.error().find(db.string()) != std::string::npos);
  CHECK(r.error().find("newer align-batch (history schema 7, this build knows up to " +
                       std::to_string(ab::kHistorySchemaVersion) + ")") != std::string::npos);
  CHECK(r.error().find("upgrade align-batch") != std::string::npos);
  CHECK(slurp(db) == before);
}

TEST_CASE("another program's SQLite file is refused and left untouched") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "notes.sqlite";
  raw_exec(db, "CREATE TABLE notes (text); INSERT INTO notes VALUES ('keep me')");
  const auto before = slurp(db);
  const auto r = HistoryStore::open(db);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find("not an align-batch history") != std::string::npos);
  CHECK(slurp(db) == before);
  // A file stamped with someone else's application_id likewise.
  raw_exec(db, "PRAGMA application_id = 1234");
  const auto stamped = slurp(db);
  const auto r2 = HistoryStore::open(db);
  REQUIRE_FALSE(r2.ok());
  CHECK(r2.error().find("belongs to another program") != std::string::npos);
  CHECK(slurp(db) == stamped);
}

TEST_CASE("a location that cannot hold a directory: the error names it") {
  ab::test::TempDir dir;
  const auto file = dir.write("out", "a file where a directory should be");
  const auto db = file / ".align-batch" / "history.sqlite";
  const auto r = HistoryStore::open(db);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find(db.string()) != std::string::npos);
  CHECK(r.error().find("cannot create the history's directory") != std::string::npos);
  CHECK(slurp(file) == "a file where a directory should be");
}

namespace {

// Runs HistoryStore::open(db) as an unprivileged user (nobody, when we are root: root ignores
// permission bits) in a child; returns its error text, or "OPENED" if it succeeded.
std::string open_as_unprivileged(const std::filesystem::path& db) {
  int out[2];
  REQUIRE(pipe(out) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(out[0]);
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) child_fail("setuid");
    const auto r = HistoryStore::open(db);
    const std::string msg = r.ok() ? "OPENED" : r.error();
    if (write(out[1], msg.data(), msg.size()) < 0) _exit(2);
    _exit(0);
  }
  close(out[1]);
  std::string msg;
  char buf[512];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0) msg.append(buf, static_cast<std::size_t>(n));
  close(out[0]);
  CHECK(wait_exit(pid) == 0);
  return msg;
}

}  // namespace

TEST_CASE("an unwritable directory or a read-only history: clear errors, nothing changed") {
  ab::test::TempDir dir;
  // World-traversable, so the unprivileged child can reach what is inside.
  REQUIRE(chmod(dir.path().c_str(), 0755) == 0);
  const auto locked = dir.path() / "locked";
  std::filesystem::create_directory(locked);
  REQUIRE(chmod(locked.c_str(), 0555) == 0);

  SUBCASE("new file in a directory this user cannot write") {
    const auto db = locked / "history.sqlite";
    const auto msg = open_as_unprivileged(db);
    INFO(msg);
    CHECK(msg.find(db.string()) != std::string::npos);
    CHECK(msg.find("writable") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(db));
  }
  SUBCASE("existing history the user can read but not write") {
    const auto open_dir = dir.path() / "open";
    std::filesystem::create_directory(open_dir);
    REQUIRE(chmod(open_dir.c_str(), 0777) == 0);
    const auto db = open_dir / "history.sqlite";
    {
      auto store = HistoryStore::open(db);
      REQUIRE(store.ok());
      REQUIRE((*store)->begin_run({}).ok());
    }
    REQUIRE(chmod(db.c_str(), 0444) == 0);
    const auto before = slurp(db);
    const auto msg = open_as_unprivileged(db);
    INFO(msg);
    CHECK(msg.find(db.string()) != std::string::npos);
    CHECK(msg.find("read-only") != std::string::npos);
    CHECK(slurp(db) == before);
  }
  SUBCASE("writable history in a directory where its -wal and -shm files cannot be made") {
    const auto db = locked / "history.sqlite";
    chmod(locked.c_str(), 0755);
    { REQUIRE(HistoryStore::open(db).ok()); }
    REQUIRE(chmod(db.c_str(), 0666) == 0);
    REQUIRE(chmod(locked.c_str(), 0555) == 0);
    const auto before = slurp(db);
    const auto msg = open_as_unprivileged(db);
    INFO(msg);
    CHECK(msg != "OPENED");
    CHECK(msg.find(db.string()) != std::string::npos);
    CHECK(msg.find("writable") != std::string::npos);
    CHECK(slurp(db) == before);
  }
  chmod(locked.c_str(), 0755);
}

TEST_CASE("a lock held past the busy timeout: the write fails with a message saying so") {
  ab::test::TempDir dir;
  const auto db = dir.path() / "history.sqlite";
  auto store = HistoryStore::open(db, HistoryStore::Create::kIfMissing, std::chrono::milliseconds(200));
  REQUIRE(store.ok());
  const auto run = (*store)->begin_run({});
  REQUIRE(run.ok());
  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  const auto r = (*store)->record_job(job(*run, 1));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().find(db.string()) != std::string::npos);
  CHECK(r.error().find("held the database lock for more than 200 ms") != std::string::npos);
  // Reads still work under WAL while another process writes.
  CHECK((*store)->runs()->size() == 1);
  REQUIRE(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(other);
  CHECK((*store)->record_job(job(*run, 1)).ok());  // and writing resumes once it is released
}

TEST_CASE("an empty (0-byte) file at the path holds no data: it becomes the history") {
  ab::test::TempDir dir;
  const auto db = dir.write("history.sqlite", "");
  auto store = HistoryStore::open(db, HistoryStore::Create::kNever);
  INFO(store.error());
  REQUIRE(store.ok());
  CHECK((*store)->begin_run({}).ok());
}
