#include "monsoon/workers/task_registry.hpp"

#include <algorithm>
#include <exception>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <utility>

#include "monsoon/common/protocol.hpp"

namespace monsoon::workers {

namespace error_code = protocol::error_code;

std::chrono::milliseconds TaskContext::remaining() const {
  auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return std::chrono::milliseconds{0};
  return std::chrono::duration_cast<std::chrono::milliseconds>(left);
}

void TaskContext::throw_if_stopped() const {
  if (expired()) {
    throw TaskError(error_code::kDeadlineExceeded, "deadline exceeded");
  }
  if (cancelled()) {
    throw TaskError(error_code::kInternal, "worker is shutting down");
  }
}

TaskError::TaskError(std::string_view code, const std::string& message)
    : std::runtime_error(message),
      code_(code.empty() ? error_code::kTaskFailed : code) {}

RetryLater::RetryLater(const std::string& message,
                       std::chrono::milliseconds after)
    : TaskError(error_code::kRetry, message),
      after_(std::clamp(after, std::chrono::milliseconds{0},
                        std::chrono::milliseconds{protocol::kMaxTimeoutMs})) {}

void TaskRegistry::add(std::string name, TaskFunction task,
                       TaskOptions options) {
  const bool callable = static_cast<bool>(task);
  insert(std::move(name), {std::move(task), options}, callable);
}

void TaskRegistry::add_async(std::string name, AsyncTaskFunction task,
                             TaskOptions options) {
  const bool callable = static_cast<bool>(task);
  insert(std::move(name), {std::move(task), options}, callable);
}

void TaskRegistry::insert(std::string name, Entry task, bool callable) {
  if (!protocol::is_valid_task_name(name)) {
    throw std::invalid_argument("invalid task name '" + name +
                                "': use 1 to 128 of [A-Za-z0-9._:-]");
  }
  if (!callable) {
    throw std::invalid_argument("task '" + name + "' has no function");
  }
  auto [it, inserted] = tasks_.try_emplace(std::move(name), std::move(task));
  if (!inserted) {
    throw std::invalid_argument("task '" + it->first +
                                "' is already registered");
  }
}

const TaskFunction* TaskRegistry::find(std::string_view name) const {
  auto it = tasks_.find(name);
  return it == tasks_.end() ? nullptr
                            : std::get_if<TaskFunction>(&it->second.function);
}

const AsyncTaskFunction* TaskRegistry::find_async(std::string_view name) const {
  auto it = tasks_.find(name);
  return it == tasks_.end()
             ? nullptr
             : std::get_if<AsyncTaskFunction>(&it->second.function);
}

bool TaskRegistry::contains(std::string_view name) const {
  return tasks_.find(name) != tasks_.end();
}

TaskOptions TaskRegistry::options(std::string_view name) const {
  auto it = tasks_.find(name);
  return it == tasks_.end() ? TaskOptions{} : it->second.options;
}

std::vector<std::string> TaskRegistry::names() const {
  std::vector<std::string> names;
  names.reserve(tasks_.size());
  for (const auto& entry : tasks_) names.push_back(entry.first);
  return names;
}

TaskOutcome TaskOutcome::failure(std::string_view code, std::string message) {
  return {false, std::string(code), std::move(message),
          std::string(protocol::kMsgpackNil)};
}

TaskOutcome TaskOutcome::success(const Value& result) {
  std::string encoded = to_msgpack(result);
  try {
    validate_msgpack(encoded);  // e.g. nesting deeper than peers accept
  } catch (const ValueError& e) {
    return failure(error_code::kTaskFailed,
                   std::string("unusable result: ") + e.what());
  }
  return {true, {}, {}, std::move(encoded)};
}

namespace {

// Report it rather than die. Strings short enough to need no allocation.
TaskOutcome out_of_memory() noexcept {
  return {false, std::string(error_code::kInternal), "out of memory",
          std::string(protocol::kMsgpackNil)};
}

// Whatever a task throws is handled before: this is a bug of ours.
TaskOutcome internal_error() noexcept {
  return {false, std::string(error_code::kInternal), "internal error",
          std::string(protocol::kMsgpackNil)};
}

// What a task threw, as the outcome of its job.
TaskOutcome outcome_of_exception(std::exception_ptr thrown) {
  try {
    std::rethrow_exception(std::move(thrown));
  } catch (const RetryLater& e) {
    TaskOutcome outcome = TaskOutcome::failure(e.code(), e.what());
    outcome.retry_after_ms = static_cast<std::uint32_t>(e.after().count());
    return outcome;
  } catch (const TaskError& e) {
    return TaskOutcome::failure(e.code(), e.what());
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    return TaskOutcome::failure(error_code::kTaskFailed, e.what());
  } catch (...) {
    return TaskOutcome::failure(error_code::kTaskFailed, "unknown exception");
  }
}

// The checks every job passes before its task runs: decodable args and a
// deadline still ahead. Sets `args` and returns nullopt when they pass.
std::optional<TaskOutcome> admit(const TaskContext& context,
                                 std::string_view args_msgpack, Value& args) {
  if (context.expired()) {
    return TaskOutcome::failure(error_code::kDeadlineExceeded,
                                "deadline passed before the task started");
  }
  try {
    args = from_msgpack(args_msgpack);
  } catch (const NotRepresentable& e) {
    return TaskOutcome::failure(
        error_code::kBadRequest,
        std::string("args the task cannot receive exactly: ") + e.what());
  } catch (const ValueError& e) {
    return TaskOutcome::failure(error_code::kBadRequest,
                                std::string("undecodable args: ") + e.what());
  }
  return std::nullopt;
}

TaskOutcome unknown_task(std::string_view task) {
  return TaskOutcome::failure(error_code::kUnknownTask,
                              "no task named '" + std::string(task) + "'");
}

}  // namespace

TaskOutcome execute_task(const TaskRegistry& registry,
                         const TaskContext& context,
                         std::string_view args_msgpack) noexcept {
  try {
    const TaskFunction* task = registry.find(context.task);
    if (task == nullptr) return unknown_task(context.task);
    Value args;
    if (auto refused = admit(context, args_msgpack, args)) return *refused;
    Value result;
    try {
      result = (*task)(args, context);
    } catch (...) {
      return outcome_of_exception(std::current_exception());
    }
    return TaskOutcome::success(result);
  } catch (const std::bad_alloc&) {
    return out_of_memory();
  } catch (...) {
    return internal_error();
  }
}

// ---- AsyncJob
// ----------------------------------------------------------------

struct AsyncJob::State {
  Host& host;
  std::string task;
  TaskContext context;
  std::size_t handle;
};

AsyncJob::AsyncJob(Host& host, std::string task, std::uint64_t job_id,
                   std::uint32_t attempt, Clock::time_point deadline,
                   std::stop_token cancellation, std::size_t handle)
    : state_(new State{host, std::move(task), {}, handle}) {
  state_->context = TaskContext{state_->task, job_id, attempt, deadline,
                                std::move(cancellation)};
}

AsyncJob::AsyncJob(AsyncJob&&) noexcept = default;

AsyncJob& AsyncJob::operator=(AsyncJob&& other) noexcept {
  if (this != &other) {
    if (open()) finish(failure_noexcept("the job was replaced unfinished"));
    state_ = std::move(other.state_);
  }
  return *this;
}

AsyncJob::~AsyncJob() {
  if (open()) finish(failure_noexcept("the task dropped its job unfinished"));
}

const TaskContext& AsyncJob::context() const {
  if (!open()) throw std::logic_error("AsyncJob: the job is not open");
  return state_->context;
}

void AsyncJob::succeed(const Value& result) {
  if (!open()) throw std::logic_error("AsyncJob: the job is not open");
  TaskOutcome outcome;
  try {
    outcome = TaskOutcome::success(result);
  } catch (const std::bad_alloc&) {
    outcome = out_of_memory();
  }
  finish(std::move(outcome));
}

void AsyncJob::fail(std::string_view code, std::string message) {
  if (!open()) throw std::logic_error("AsyncJob: the job is not open");
  finish(TaskOutcome::failure(code, std::move(message)));
}

void AsyncJob::finish(TaskOutcome outcome) noexcept {
  const auto state = std::move(state_);
  state->host.finish(state->handle, state->task, state->context.job_id,
                     std::move(outcome));
}

TaskOutcome AsyncJob::failure_noexcept(const char* message) noexcept {
  try {
    return TaskOutcome::failure(error_code::kInternal, message);
  } catch (...) {
    return internal_error();
  }
}

void AsyncJob::resume_at(Clock::time_point when,
                         std::function<void(AsyncJob&)> callback) {
  if (!open()) throw std::logic_error("AsyncJob: the job is not open");
  if (!callback) throw std::invalid_argument("AsyncJob: empty callback");
  Host& host = state_->host;
  host.schedule(when, std::move(callback), std::move(*this));
}

void run_async_step(const std::function<void(AsyncJob&)>& step,
                    AsyncJob& job) noexcept {
  try {
    step(job);
  } catch (...) {
    if (!job.open()) return;  // thrown after handing the job on
    try {
      job.finish(outcome_of_exception(std::current_exception()));
    } catch (...) {
      // Still open: the job fails with internal when its owner drops it.
    }
  }
}

void start_async_task(const TaskRegistry& registry, AsyncJob job,
                      std::string_view args_msgpack) noexcept {
  try {
    const TaskContext& context = job.context();
    const AsyncTaskFunction* task = registry.find_async(context.task);
    if (task == nullptr) {
      TaskOutcome outcome = unknown_task(context.task);
      job.fail(outcome.code, std::move(outcome.message));
      return;
    }
    Value args;
    if (auto refused = admit(context, args_msgpack, args)) {
      job.fail(refused->code, std::move(refused->message));
      return;
    }
    run_async_step([&](AsyncJob& started) { (*task)(args, started); }, job);
  } catch (...) {
    // The job, still open, fails with internal when it goes out of scope.
  }
}

}  // namespace monsoon::workers
