#include "monsoon/workers/builtin_tasks.hpp"

#include <openssl/evp.h>
#include <sqlite3.h>

#include <array>
#include <cstdint>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "monsoon/common/protocol.hpp"

namespace monsoon::workers {

namespace {

namespace error_code = protocol::error_code;

// ---- argument checking ----------------------------------------------------

void require_map(const Value& args) {
  if (!args.is_object()) {
    throw TaskError(error_code::kBadRequest, "args must be a map");
  }
}

// The integer args[key] within [min, max]; `fallback` when the key is
// absent, which is an error when there is no fallback.
std::int64_t integer_arg(const Value& args, const char* key, std::int64_t min,
                         std::int64_t max,
                         std::optional<std::int64_t> fallback = std::nullopt) {
  auto range_error = [&] {
    return TaskError(error_code::kBadRequest,
                     std::string("'") + key + "' must be an integer from " +
                         std::to_string(min) + " to " + std::to_string(max));
  };
  auto it = args.find(key);
  if (it == args.end()) {
    if (fallback) return *fallback;
    throw range_error();
  }
  if (!it->is_number_integer()) throw range_error();
  if (it->is_number_unsigned() &&
      it->get<std::uint64_t>() >
          static_cast<std::uint64_t>(
              std::numeric_limits<std::int64_t>::max())) {
    throw range_error();
  }
  auto value = it->get<std::int64_t>();
  if (value < min || value > max) throw range_error();
  return value;
}

// ---- echo, sleep ------------------------------------------------------------

void echo_task(const Value& args, AsyncJob& job) { job.succeed(args); }

// A timer, not a thread: thousands of sleeps cost one event thread.
void sleep_task(const Value& args, AsyncJob& job) {
  require_map(args);
  const auto ms = integer_arg(args, "ms", 0, 3'600'000);
  const auto wanted_end = Clock::now() + std::chrono::milliseconds{ms};
  const auto deadline = job.context().deadline;
  const bool cut_short = wanted_end > deadline;
  job.resume_at(std::min(wanted_end, deadline), [ms, cut_short](AsyncJob& job) {
    const TaskContext& context = job.context();
    if (context.cancelled()) context.throw_if_stopped();
    if (cut_short) {
      throw TaskError(error_code::kDeadlineExceeded,
                      "sleep of " + std::to_string(ms) +
                          " ms would pass the job's deadline");
    }
    job.succeed({{"slept_ms", ms}});
  });
}

// ---- hash
// ---------------------------------------------------------------------

struct DigestContextDeleter {
  void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
};
struct DigestDeleter {
  void operator()(EVP_MD* digest) const { EVP_MD_free(digest); }
};

std::string default_hash_data() {
  std::string data(64, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<char>(i);
  }
  return data;
}

std::string to_hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(size * 2, '0');
  for (std::size_t i = 0; i < size; ++i) {
    hex[2 * i] = kDigits[bytes[i] >> 4];
    hex[2 * i + 1] = kDigits[bytes[i] & 0x0f];
  }
  return hex;
}

Value hash_task(const Value& args, const TaskContext& context) {
  require_map(args);
  const auto rounds = integer_arg(args, "rounds", 1, 10'000'000);
  std::string data;
  if (auto it = args.find("data"); it == args.end()) {
    data = default_hash_data();
  } else if (it->is_string()) {
    data = it->get<std::string>();
  } else {
    throw TaskError(error_code::kBadRequest, "'data' must be a string");
  }

  std::unique_ptr<EVP_MD, DigestDeleter> sha256(
      EVP_MD_fetch(nullptr, "SHA256", nullptr));
  std::unique_ptr<EVP_MD_CTX, DigestContextDeleter> digest_context(
      EVP_MD_CTX_new());
  if (!sha256 || !digest_context) {
    throw TaskError(error_code::kInternal, "OpenSSL has no SHA-256");
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int digest_size = 0;
  auto hash = [&](const void* input, std::size_t size) {
    if (EVP_DigestInit_ex2(digest_context.get(), sha256.get(), nullptr) != 1 ||
        EVP_DigestUpdate(digest_context.get(), input, size) != 1 ||
        EVP_DigestFinal_ex(digest_context.get(), digest.data(), &digest_size) !=
            1) {
      throw TaskError(error_code::kInternal, "SHA-256 failed");
    }
  };
  hash(data.data(), data.size());
  for (std::int64_t round = 1; round < rounds; ++round) {
    if (round % 1024 == 0) context.throw_if_stopped();
    hash(digest.data(), digest_size);
  }
  return to_hex(digest.data(), digest_size);
}

// ---- db.query
// -------------------------------------------------------------------

constexpr int kBusyTimeoutMs = 10'000;
constexpr int kDemoRows = 1000;
constexpr std::int64_t kMaxQueryRows = 1000;
constexpr std::size_t kMaxIdleConnections = 64;

struct SqliteCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StatementFinalizer {
  void operator()(sqlite3_stmt* statement) const {
    sqlite3_finalize(statement);
  }
};
using SqliteHandle = std::unique_ptr<sqlite3, SqliteCloser>;
using Statement = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

[[noreturn]] void throw_sqlite(sqlite3* db, const std::string& what) {
  throw std::runtime_error(what + ": " +
                           (db ? sqlite3_errmsg(db) : "out of memory"));
}

SqliteHandle open_database(const std::filesystem::path& path, int flags) {
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  SqliteHandle db(raw);  // sqlite3_open_v2 may allocate a handle on failure
  if (rc != SQLITE_OK) throw_sqlite(db.get(), "cannot open " + path.string());
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);
  return db;
}

void execute(sqlite3* db, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
    throw_sqlite(db, sql);
  }
}

Statement prepare(sqlite3* db, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
    throw_sqlite(db, sql);
  }
  return Statement(raw);
}

std::string column_text(sqlite3_stmt* statement, int column) {
  const auto* text = sqlite3_column_text(statement, column);
  if (text == nullptr) return {};
  return {reinterpret_cast<const char*>(text),
          static_cast<std::size_t>(sqlite3_column_bytes(statement, column))};
}

// One read-only connection with its prepared query; used by one thread at a
// time.
struct QueryConnection {
  SqliteHandle db;
  Statement select_by_flag;
};

std::mutex default_path_mutex;
std::filesystem::path default_path = "monsoon-demo.sqlite3";

// Shared by every task thread: opens the database on first use and keeps a
// small pool of read-only connections.
class DemoDatabase {
 public:
  explicit DemoDatabase(std::filesystem::path path) : path_(std::move(path)) {}

  Value query(std::int64_t flag, std::int64_t limit) {
    auto connection = acquire();
    sqlite3_stmt* statement = connection->select_by_flag.get();
    Value rows = Value::array();
    sqlite3_bind_int64(statement, 1, flag);
    sqlite3_bind_int64(statement, 2, limit);
    int rc;
    while ((rc = sqlite3_step(statement)) == SQLITE_ROW) {
      rows.push_back({{"id", sqlite3_column_int64(statement, 0)},
                      {"name", column_text(statement, 1)},
                      {"flag", sqlite3_column_int64(statement, 2)},
                      {"created_at", column_text(statement, 3)}});
    }
    sqlite3_reset(statement);
    if (rc != SQLITE_DONE) {
      throw TaskError(
          error_code::kInternal,
          std::string("query failed: ") + sqlite3_errmsg(connection->db.get()));
    }
    release(std::move(connection));
    return rows;
  }

 private:
  std::unique_ptr<QueryConnection> acquire() {
    {
      std::lock_guard lock(mutex_);
      if (!prepared_) {
        if (path_.empty()) path_ = default_demo_database_path();
        prepare_demo_database(path_);
        prepared_ = true;
      }
      if (!idle_.empty()) {
        auto connection = std::move(idle_.back());
        idle_.pop_back();
        return connection;
      }
    }
    auto connection = std::make_unique<QueryConnection>();
    connection->db = open_database(path_, SQLITE_OPEN_READONLY);
    connection->select_by_flag =
        prepare(connection->db.get(),
                "SELECT id, name, flag, created_at FROM items WHERE flag = ?1 "
                "ORDER BY id LIMIT ?2");
    return connection;
  }

  void release(std::unique_ptr<QueryConnection> connection) {
    std::lock_guard lock(mutex_);
    if (idle_.size() < kMaxIdleConnections) {
      idle_.push_back(std::move(connection));
    }
  }

  std::mutex mutex_;
  std::filesystem::path path_;  // fixed once prepared_
  bool prepared_ = false;
  std::vector<std::unique_ptr<QueryConnection>> idle_;
};

TaskFunction make_db_query_task(std::filesystem::path path) {
  auto database = std::make_shared<DemoDatabase>(std::move(path));
  return [database](const Value& args, const TaskContext&) -> Value {
    require_map(args);
    const auto flag =
        integer_arg(args, "flag", std::numeric_limits<std::int64_t>::min(),
                    std::numeric_limits<std::int64_t>::max());
    const auto limit =
        integer_arg(args, "limit", 1, kMaxQueryRows, kMaxQueryRows);
    try {
      return database->query(flag, limit);
    } catch (const TaskError&) {
      throw;
    } catch (const std::runtime_error& e) {  // opening or preparing failed
      throw TaskError(error_code::kInternal, e.what());
    }
  };
}

}  // namespace

void set_default_demo_database_path(std::filesystem::path path) {
  std::lock_guard lock(default_path_mutex);
  default_path = std::move(path);
}

std::filesystem::path default_demo_database_path() {
  std::lock_guard lock(default_path_mutex);
  return default_path;
}

void prepare_demo_database(const std::filesystem::path& path) {
  auto db = open_database(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  // IMMEDIATE takes the write lock up front, so concurrent first starts
  // queue here (busy timeout) and only the first one inserts rows.
  execute(db.get(), "BEGIN IMMEDIATE");
  try {
    execute(db.get(),
            "CREATE TABLE IF NOT EXISTS items ("
            " id INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL,"
            " flag INTEGER NOT NULL,"
            " created_at TEXT NOT NULL);"
            "CREATE INDEX IF NOT EXISTS items_flag ON items (flag);");
    auto has_rows = prepare(db.get(), "SELECT EXISTS (SELECT 1 FROM items)");
    if (sqlite3_step(has_rows.get()) != SQLITE_ROW) {
      throw_sqlite(db.get(), "cannot count demo rows");
    }
    if (sqlite3_column_int(has_rows.get(), 0) == 0) {
      auto insert =
          prepare(db.get(),
                  "WITH RECURSIVE seq (n) AS"
                  " (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?1)"
                  " INSERT INTO items (id, name, flag, created_at)"
                  " SELECT n, printf('item-%04d', n), (n - 1) % 10,"
                  "  strftime('%Y-%m-%dT%H:%M:%SZ', 1704067200 + n * 3600,"
                  "           'unixepoch')"
                  " FROM seq");
      sqlite3_bind_int(insert.get(), 1, kDemoRows);
      if (sqlite3_step(insert.get()) != SQLITE_DONE) {
        throw_sqlite(db.get(), "cannot insert demo rows");
      }
    }
    has_rows.reset();
    execute(db.get(), "COMMIT");
  } catch (...) {
    sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void register_builtin_tasks(TaskRegistry& registry,
                            const BuiltinTaskOptions& options) {
  registry.add_async("echo", echo_task);
  registry.add_async("sleep", sleep_task);
  registry.add("hash", hash_task);
  registry.add("db.query", make_db_query_task(options.db_path));
}

}  // namespace monsoon::workers
