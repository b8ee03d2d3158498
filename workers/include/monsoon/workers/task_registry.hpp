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
// Threading: a worker calls a task from any of its pools' threads, possibly
// from several at once, so a task must be safe to run concurrently with
// itself (keep per-call state local; guard shared state). The registry is
// filled before the worker starts and only read afterwards.
//
// Failing: throw TaskError to fail with a specific protocol error code
// (docs/protocol.md section 6), or RetryLater for a passing failure (a
// dependency down, a lock held): the broker runs the job again after an
// exponential back-off with jitter, within its deadline and max attempts.
// Any other std::exception fails the job with code task_failed and e.what()
// as message. Nothing a task throws stops the worker.
//
// Retries: a job may run more than once (RetryLater, or its worker died
// while running it), possibly on another worker: tasks must be idempotent,
// or be registered with TaskOptions{.retry_if_worker_dies = false} (then a
// worker's death fails the job instead: at most once).
//
// Time: every job has a deadline. A long task should call
// context.throw_if_stopped() (or poll should_stop()) now and then; the
// worker also cancels running tasks when it stops and its drain timeout has
// passed, and waits for them to return.
//
// Async tasks (add_async) are for work that waits rather than computes: a
// timer, a non-blocking client. They run on the worker's event thread and
// must not block it; they hold an AsyncJob instead of a thread, so one
// worker carries thousands of them at once. A worker's pools bound the jobs
// it holds per queue, whatever their kind (WorkerConfig::pools); by default
// its thread tasks and its async tasks are two pools of one registration,
// each with its own concurrency (run_worker_main: --concurrency,
// --async-concurrency; or --queue NAME=SLOTS for pools of one's own).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>  // all of Value, not just its declaration
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <variant>
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

// Thrown by a task to have its job run again later (code `retry`), no
// sooner than `after`. When the job is out of attempts or time, its client
// gets task_failed with `message`.
class RetryLater : public TaskError {
 public:
  explicit RetryLater(const std::string& message,
                      std::chrono::milliseconds after = {});
  std::chrono::milliseconds after() const noexcept { return after_; }

 private:
  std::chrono::milliseconds after_;
};

// The outcome of one execution, ready for a DONE message.
struct TaskOutcome {
  bool ok = true;
  std::string code;     // protocol error code; empty when ok
  std::string message;  // empty when ok
  std::string result;   // exactly one MessagePack value (nil on error)
  std::uint32_t retry_after_ms = 0;  // with code retry; 0 = no minimum

  // `result` encoded and checked as peers will decode it; a task_failed
  // outcome when it cannot be (e.g. nesting too deep).
  static TaskOutcome success(const Value& result);
  static TaskOutcome failure(std::string_view code, std::string message);
};

// One job of an async task, from its start until it is finished. Move-only;
// whoever holds it owns the job. Finish it exactly once, with succeed() or
// fail(), from any thread; or hand it back to the worker's event thread with
// resume_at(). A job destroyed unfinished fails with code internal, so a
// job is never silently lost (its credit would be).
class AsyncJob {
 public:
  // What the worker provides; implemented by Worker, not by tasks.
  class Host {
   public:
    // Any thread. Takes the outcome of job `id`, with the host's own
    // `handle` of it (as given to the constructor); cannot fail.
    virtual void finish(std::size_t handle, std::string_view task,
                        std::uint64_t id, TaskOutcome outcome) noexcept = 0;
    // Any thread. Calls callback(job) on the event thread at `when`, or
    // earlier once jobs are cancelled.
    virtual void schedule(Clock::time_point when,
                          std::function<void(AsyncJob&)> callback,
                          AsyncJob job) = 0;

   protected:
    ~Host() = default;
  };

  // `handle`: the host's own reference to the job (the Worker's: which held
  // job it is), handed back to Host::finish.
  AsyncJob(Host& host, std::string task, std::uint64_t job_id,
           std::uint32_t attempt, Clock::time_point deadline,
           std::stop_token cancellation, std::size_t handle = 0);
  AsyncJob(AsyncJob&&) noexcept;
  AsyncJob& operator=(AsyncJob&&) noexcept;
  ~AsyncJob();

  // False once finished or moved from; the calls below need an open job
  // (std::logic_error otherwise).
  bool open() const noexcept { return state_ != nullptr; }
  // Valid while the job is open; its `task` view stays valid that long too.
  const TaskContext& context() const;

  void succeed(const Value& result);
  void fail(std::string_view code, std::string message);
  // Gives the job to the worker's event thread, which calls callback(job)
  // at `when` (at once if it has passed) or as soon as the worker cancels
  // running jobs (context().cancelled() is then true). The callback, like
  // the task, must not block; it may finish the job, reschedule it or keep
  // it elsewhere. Any thread.
  void resume_at(Clock::time_point when,
                 std::function<void(AsyncJob&)> callback);

 private:
  struct State;
  friend void run_async_step(const std::function<void(AsyncJob&)>& step,
                             AsyncJob& job) noexcept;
  void finish(TaskOutcome outcome) noexcept;
  static TaskOutcome failure_noexcept(const char* message) noexcept;

  std::unique_ptr<State> state_;
};

using TaskFunction =
    std::function<Value(const Value& args, const TaskContext& context)>;
// Called on the worker's event thread; must not block. Whatever it throws
// fails the job like a thread task's exception (if the job is still here).
using AsyncTaskFunction = std::function<void(const Value& args, AsyncJob& job)>;

struct TaskOptions {
  // False: when the worker dies while running a job of this task, the
  // broker fails the job (code internal) instead of dispatching it again.
  bool retry_if_worker_dies = true;
};

class TaskRegistry {
 public:
  // Register a thread task / an async task. Throw std::invalid_argument
  // when `name` is not a valid task name (protocol::is_valid_task_name), is
  // already registered, or `task` is empty.
  void add(std::string name, TaskFunction task, TaskOptions options = {});
  void add_async(std::string name, AsyncTaskFunction task,
                 TaskOptions options = {});

  // nullptr when no task of that kind has that name. The pointers stay
  // valid until the registry is modified or destroyed.
  const TaskFunction* find(std::string_view name) const;
  const AsyncTaskFunction* find_async(std::string_view name) const;
  bool contains(std::string_view name) const;
  // The options `name` was registered with (defaults if it was not).
  TaskOptions options(std::string_view name) const;

  std::vector<std::string> names() const;  // sorted, both kinds
  bool empty() const { return tasks_.empty(); }

 private:
  struct Entry {
    std::variant<TaskFunction, AsyncTaskFunction> function;
    TaskOptions options;
  };
  void insert(std::string name, Entry task, bool callable);

  std::map<std::string, Entry, std::less<>> tasks_;
};

// Runs the task named context.task on `args_msgpack` (one MessagePack
// value). Never throws: undecodable args give bad_request, an unknown name
// unknown_task, a deadline already passed deadline_exceeded (the task is not
// called), and whatever the task throws an error outcome as described above.
TaskOutcome execute_task(const TaskRegistry& registry,
                         const TaskContext& context,
                         std::string_view args_msgpack) noexcept;

// Runs one step of an async job (a task's start or a resume_at callback)
// the way the worker does: whatever `step` throws fails the job, if it is
// still open, like a thread task's exception. Never throws.
void run_async_step(const std::function<void(AsyncJob&)>& step,
                    AsyncJob& job) noexcept;

// Starts the async task named job.context().task on `args_msgpack` with the
// same checks and error outcomes as execute_task, which it reports through
// the job (so the job is finished, handed on, or failed when this returns).
// Never throws.
void start_async_task(const TaskRegistry& registry, AsyncJob job,
                      std::string_view args_msgpack) noexcept;

}  // namespace monsoon::workers
