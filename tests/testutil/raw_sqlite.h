// A history file read and changed with its own raw SQLite connection, apart from HistoryStore:
// tests check what is on disk, not what the store believes, and make older or foreign files.
#pragma once

#include <sqlite3.h>

#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace ab::test {

/// Runs `sql` (any number of statements) on `db`.
inline void raw_exec(const std::filesystem::path& db, const std::string& sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  const int rc = sqlite3_exec(h, sql.c_str(), nullptr, nullptr, nullptr);
  sqlite3_close(h);
  REQUIRE(rc == SQLITE_OK);
}

/// The first column of the first row of `sql` on `db`, read-only.
inline std::int64_t raw_int(const std::filesystem::path& db, const std::string& sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  const auto v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(h);
  return v;
}

}  // namespace ab::test
