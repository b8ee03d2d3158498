// The task API: how users extend Monsoon. A task is a C++ function from a
// Value (the job's arguments, decoded from MessagePack) to a Value (its
// result). Register tasks in a TaskRegistry under a task name, then hand the
// registry to a Worker (worker.hpp) or to run_worker_main (worker_main.hpp):
//
//   monsoon::workers::TaskRegistry registry;
//   registry.add("add", [](const monsoon::Value& args,
//                          const monsoon::workers::TaskContext&) {
//     return monsoon::Value(args.at("a").get<int>() + args.at("b").get<int>());
//   });
//
// Threading: a worker calls a task from any of its slot threads, possibly
// from several at once, so a task must be safe to run concurrently with
// itself (keep per-call state local; guard shared state). The registry is
// filled before the worker starts and only read afterwards.
//
// Failing: throw TaskError to fail with a specific protocol error code
// (docs/protocol.md section 6). Any other std::exception fails the job with
// code task_failed and e.what() as message. Nothing a task throws stops the
// worker.
//
// Time: every job has a deadline. A long task should call
// context.throw_if_stopped() (or poll should_stop()) now and then; the
// worker also cancels running tasks when it stops and its drain timeout has
// passed, and waits for them to return.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>  // all of Value, not just its declaration
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "monsoon/common/liveness.hpp"
#include "monsoon/common/value.hpp"

namespace monsoon::workers {

// What a task knows about the job it runs. Valid during the call only.
struct TaskContext {
  std::string_view task;
  std::uint64_t job_id = 0;        // the broker's job id
  std::uint32_t attempt = 1;       // 1 on the first dispatch
  Clock::time_point deadline{};    // after it, nobody waits for the result
  std::stop_token cancellation{};  // stop requested: the worker is stopping

  // Time left until the deadline, zero once it has passed.
  std::chrono::milliseconds remaining() const;
  bool expired() const { return Clock::now() >= deadline; }
  bool cancelled() const { return cancellation.stop_requested(); }
  bool should_stop() const { return expired() || cancelled(); }
  // Throws TaskError deadline_exceeded when expired, internal ("worker is
  // shutting down") when cancelled.
  void throw_if_stopped() const;
};

// Thrown by a task to fail its job with `code`, one of the protocol error
// codes (monsoon::protocol::error_code; empty means task_failed), and a
// human-readable message.
class TaskError : public std::runtime_error {
 public:
  TaskError(std::string_view code, const std::string& message);
  const std::string& code() const noexcept { return code_; }

 private:
  std::string code_;
};

using TaskFunction =
    std::function<Value(const Value& args, const TaskContext& context)>;

class TaskRegistry {
 public:
  // Throws std::invalid_argument when `name` is not a valid task name
  // (protocol::is_valid_task_name), is already registered, or `task` is
  // empty.
  void add(std::string name, TaskFunction task);

  // nullptr when no task has that name. The pointer stays valid until the
  // registry is modified or destroyed.
  const TaskFunction* find(std::string_view name) const;

  std::vector<std::string> names() const;  // sorted
  bool empty() const { return tasks_.empty(); }

 private:
  std::map<std::string, TaskFunction, std::less<>> tasks_;
};

// The outcome of one execution, ready for a DONE message.
struct TaskOutcome {
  bool ok = true;
  std::string code;     // protocol error code; empty when ok
  std::string message;  // empty when ok
  std::string result;   // exactly one MessagePack value (nil on error)
};

// Runs the task named context.task on `args_msgpack` (one MessagePack
// value). Never throws: undecodable args give bad_request, an unknown name
// unknown_task, a deadline already passed deadline_exceeded (the task is not
// called), and whatever the task throws an error outcome as described above.
TaskOutcome execute_task(const TaskRegistry& registry,
                         const TaskContext& context,
                         std::string_view args_msgpack) noexcept;

}  // namespace monsoon::workers
