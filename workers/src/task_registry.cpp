#include "monsoon/workers/task_registry.hpp"

#include <exception>
#include <new>
#include <nlohmann/json.hpp>
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

void TaskRegistry::add(std::string name, TaskFunction task) {
  if (!protocol::is_valid_task_name(name)) {
    throw std::invalid_argument("invalid task name '" + name +
                                "': use 1 to 128 of [A-Za-z0-9._:-]");
  }
  if (!task) {
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
  return it == tasks_.end() ? nullptr : &it->second;
}

std::vector<std::string> TaskRegistry::names() const {
  std::vector<std::string> names;
  names.reserve(tasks_.size());
  for (const auto& entry : tasks_) names.push_back(entry.first);
  return names;
}

namespace {

TaskOutcome failure(std::string_view code, std::string message) {
  return {false, std::string(code), std::move(message),
          std::string(protocol::kMsgpackNil)};
}

}  // namespace

TaskOutcome execute_task(const TaskRegistry& registry,
                         const TaskContext& context,
                         std::string_view args_msgpack) noexcept {
  try {
    const TaskFunction* task = registry.find(context.task);
    if (task == nullptr) {
      return failure(error_code::kUnknownTask,
                     "no task named '" + std::string(context.task) + "'");
    }
    if (context.expired()) {
      return failure(error_code::kDeadlineExceeded,
                     "deadline passed before the task started");
    }
    Value args;
    try {
      args = from_msgpack(args_msgpack);
    } catch (const ValueError& e) {
      return failure(error_code::kBadRequest,
                     std::string("undecodable args: ") + e.what());
    }
    Value result;
    try {
      result = (*task)(args, context);
    } catch (const TaskError& e) {
      return failure(e.code(), e.what());
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      return failure(error_code::kTaskFailed, e.what());
    } catch (...) {
      return failure(error_code::kTaskFailed, "unknown exception");
    }
    std::string encoded = to_msgpack(result);
    try {
      validate_msgpack(encoded);  // e.g. nesting deeper than peers accept
    } catch (const ValueError& e) {
      return failure(error_code::kTaskFailed,
                     std::string("unusable result: ") + e.what());
    }
    return {true, {}, {}, std::move(encoded)};
  } catch (const std::bad_alloc&) {
    // Report it rather than die. Strings short enough to need no allocation.
    return {false, std::string(error_code::kInternal), "out of memory",
            std::string(protocol::kMsgpackNil)};
  } catch (...) {
    // Whatever a task throws is handled above: this is a bug of ours.
    return {false, std::string(error_code::kInternal), "internal error",
            std::string(protocol::kMsgpackNil)};
  }
}

}  // namespace monsoon::workers
