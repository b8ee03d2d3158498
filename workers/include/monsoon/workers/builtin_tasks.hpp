// The tasks every monsoon-worker serves out of the box, for demos, tests and
// benchmarks. Each validates its args (a map) and fails with bad_request on
// anything else.
//
//   echo      any value          -> the same value
//   sleep     {"ms": 0..3600000} -> {"slept_ms": ms}; sleeps, but never past
//                                   the job's deadline (then fails with
//                                   deadline_exceeded)
//   hash      {"rounds": 1..10000000, "data": str (optional)}
//                                -> lowercase hex of SHA-256 applied `rounds`
//                                   times (each round hashes the previous
//                                   digest); default data: the 64 bytes
//                                   0x00, 0x01, ... 0x3f
//   db.query  {"flag": int, "limit": 1..1000 (optional, default 1000)}
//                                -> [{"id", "name", "flag", "created_at"}...]
//                                   rows of the demo SQLite table `items`
//                                   with that flag, ordered by id
//
// echo and sleep are async tasks (a sleep is a timer, not a thread: one
// worker holds thousands); hash and db.query are thread tasks.
//
// db.query opens its database lazily, on its first call. If the table does
// not exist yet it creates it with 1000 deterministic demo rows (flags 0..9,
// 100 rows each) in one transaction; that is safe when several workers start
// at once on the same file.
#pragma once

#include <filesystem>

#include "monsoon/workers/task_registry.hpp"

namespace monsoon::workers {

struct BuiltinTaskOptions {
  // The db.query database; empty means default_demo_database_path() as it
  // is when db.query first runs.
  std::filesystem::path db_path;
};

// Throws std::invalid_argument if a built-in name is already registered.
void register_builtin_tasks(TaskRegistry& registry,
                            const BuiltinTaskOptions& options = {});

// Process-wide default database of db.query: "monsoon-demo.sqlite3" in the
// current directory unless set (run_worker_main sets it from --db-path).
// Thread-safe.
void set_default_demo_database_path(std::filesystem::path path);
std::filesystem::path default_demo_database_path();

// Creates the demo table and rows at `path` unless they exist (db.query
// calls it itself). Throws std::runtime_error when SQLite fails.
void prepare_demo_database(const std::filesystem::path& path);

}  // namespace monsoon::workers
