// MNS/1 wire protocol: encoding and decoding of the multipart messages that
// docs/protocol.md specifies. Every function here is pure (no socket I/O) and
// may be called from any thread; Frames objects are not shared between threads.
//
// Decoders validate everything the document requires and throw ProtocolError
// on any violation; callers count and drop such messages. Payload frames
// (args, result) are moved out of the input, never copied or decoded.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

namespace monsoon::protocol {

inline constexpr std::uint8_t kVersion = 1;
// The minor version this implementation speaks (docs/protocol.md section
// 10), announced in WELCOME's `minor`: 2 = 1.2 (CREDIT, `refused`), 3 = 1.3
// (named queues: READY's `pools`, JOB's `queue`, CREDIT's `pool`).
inline constexpr std::uint32_t kProtocolMinor = 3;
inline constexpr std::string_view kSignature{"MNS\x01", 4};
inline constexpr std::size_t kMaxTaskNameBytes = 128;
inline constexpr std::size_t kMaxMetaBytes = 4096;
inline constexpr std::size_t kMaxMetaDepth = 32;
inline constexpr std::size_t kMaxValueDepth = 128;
inline constexpr std::uint32_t kMaxTimeoutMs = 86'400'000;
inline constexpr std::size_t kMaxAnnouncedTasks = 1024;
inline constexpr std::uint32_t kMaxSlots = 65'536;
// Pools in one READY (since 1.3), and queues in one pool.
inline constexpr std::size_t kMaxPools = 64;
inline constexpr std::size_t kMaxPoolQueues = 1024;

enum class Command : std::uint8_t {
  Ready = 0x01,       // worker -> broker: [info]
  Submit = 0x02,      // client -> broker: [task, meta, args]
  Job = 0x03,         // broker -> worker: [task, meta, args]
  Done = 0x04,        // worker -> broker: [task, meta, result]
  Result = 0x05,      // broker -> client: [task, meta, result]
  Heartbeat = 0x06,   // any direction, no body
  Disconnect = 0x07,  // any direction, no body
  Welcome = 0x08,     // broker -> worker (answers READY) or client: [info]
  Hello = 0x09,       // client -> broker: [info]
  Credit = 0x0A,      // worker -> broker: [info] (since 1.2)
};

std::string_view command_name(Command command) noexcept;

// Error codes carried in RESULT/DONE meta (docs/protocol.md section 6).
namespace error_code {
inline constexpr std::string_view kBadRequest = "bad_request";
inline constexpr std::string_view kUnknownTask = "unknown_task";
inline constexpr std::string_view kNoWorker = "no_worker";
inline constexpr std::string_view kDeadlineExceeded = "deadline_exceeded";
inline constexpr std::string_view kOverloaded = "overloaded";
inline constexpr std::string_view kTaskFailed = "task_failed";
inline constexpr std::string_view kInternal = "internal";
// DONE only: run the job again later (retry_after_ms: the least delay).
// The broker retries or answers task_failed; never relayed as is.
inline constexpr std::string_view kRetry = "retry";
// A frame over the receiving peer's announced limit: refused, not sent.
inline constexpr std::string_view kTooLarge = "too_large";
// DONE only, to a broker of 1.2 or later: the job found every slot of the
// worker held (by jobs from any of its brokers) and did not run. The broker
// queues it again; never relayed as is.
inline constexpr std::string_view kRefused = "refused";
}  // namespace error_code

class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using Frames = std::vector<zmq::message_t>;

// Meta of SUBMIT (client's id) and JOB (broker's id).
struct JobMeta {
  std::uint64_t id = 0;
  std::uint32_t timeout_ms = 0;
  std::uint32_t attempt = 1;
  // The largest result frame the answer may carry, in bytes; 0 = absent
  // (section 7).
  std::uint64_t max_result_bytes = 0;
  // JOB only (since 1.3): the queue the broker took the job from, which
  // names the worker's pool it is for (section 4, "Named queues"); empty =
  // absent. Not read from, nor written to, a SUBMIT.
  std::string queue{};
};

// Meta of DONE (broker's id) and RESULT (client's id).
struct OutcomeMeta {
  std::uint64_t id = 0;
  bool ok = true;
  std::string code;                  // empty when ok
  std::string message;               // empty when ok
  std::uint32_t retry_after_ms = 0;  // 0 = absent
  std::string worker;  // RESULT only: name of the worker that ran the job
  // DONE only (since 1.3): the index in READY's `pools` of the pool whose
  // slot the job took, so that a broker that no longer knows the job (it
  // restarted, or the job expired) returns that pool's credit. Absent when
  // unset.
  std::optional<std::uint32_t> pool{};

  static OutcomeMeta success(std::uint64_t id) {
    return {id, true, {}, {}, 0, {}};
  }
  static OutcomeMeta failure(std::uint64_t id, std::string_view code,
                             std::string message,
                             std::uint32_t retry_after_ms = 0) {
    return {id, false, std::string(code), std::move(message), retry_after_ms,
            {}};
  }
};

// Body of READY.
// One pool of a worker (READY's `pools`, since 1.3): slots of their own
// serving the listed queues, so that one queue's jobs cannot take the slots
// of another (docs/protocol.md section 4, "Named queues").
struct Pool {
  std::vector<std::string> queues;  // 1..kMaxPoolQueues queue names
  std::uint32_t slots = 0;          // 1..kMaxSlots
  // Slots of this pool free now (READY's rule for `free`, per pool); absent
  // means all `slots`.
  std::optional<std::uint32_t> free;

  bool operator==(const Pool&) const = default;
};

struct WorkerInfo {
  std::vector<std::string> tasks;
  std::uint32_t slots = 0;
  // Slots free right now; less than `slots` when a worker re-registers while
  // jobs from before are still running. Absent means all `slots`.
  std::optional<std::uint32_t> free;
  std::string name;
  std::uint32_t pid = 0;
  // Its heartbeat interval; 0 = absent (the broker assumes its own).
  std::uint32_t heartbeat_ms = 0;
  // Tasks among `tasks` whose jobs the broker must not dispatch again when
  // this worker dies while running them (at most once). Absent: none.
  std::vector<std::string> no_retry;
  // The largest frame this worker accepts, in bytes; 0 = absent.
  std::uint64_t max_message_bytes = 0;
  // Since 1.3: its pools, 1..kMaxPools, each queue in one pool only; then
  // `slots` is the sum of their slots and `free` (when set) of their frees,
  // for brokers older than 1.3. Empty: one pool of `slots` (and `free`)
  // serving the queue named as each of its tasks (effective_pools).
  std::vector<Pool> pools{};
};

// The pools a READY registers: its `pools`, or the one pool a READY without
// them stands for (queues = tasks, slots and free as announced).
std::vector<Pool> effective_pools(const WorkerInfo& info);

// Body of WELCOME: whether the broker took a READY (or HELLO), and what it
// accepts. A refused READY (ok false) carries code, message and, with
// `overloaded`, retry_after_ms.
struct Welcome {
  bool ok = true;
  std::string code;
  std::string message;
  std::uint32_t retry_after_ms = 0;     // 0 = absent
  std::uint64_t max_message_bytes = 0;  // 0 = absent
  std::uint32_t heartbeat_ms = 0;       // 0 = absent
  // The broker's protocol minor version (kProtocolMinor); 0 = absent, i.e. a
  // broker of 1.1 or earlier, which knows neither CREDIT nor `refused`.
  std::uint32_t minor = 0;

  static Welcome refusal(std::string_view code, std::string message,
                         std::uint32_t retry_after_ms) {
    return {false, std::string(code), std::move(message), retry_after_ms, 0, 0,
            0};
  }
};

// Body of CREDIT (since 1.2): a worker that refused a broker's JOB tells it
// that slots are free again (docs/protocol.md, "Several brokers").
struct Credit {
  std::uint32_t free = 0;  // slots free now, 0..kMaxSlots
  // Since 1.3: the index in READY's `pools` of the pool whose free slots
  // `free` counts; 0 (absent on the wire) for a worker without pools.
  std::uint32_t pool = 0;
};

// Body of HELLO: what a client announces about itself.
struct Hello {
  std::uint64_t max_message_bytes = 0;  // 0 = absent
};

// SUBMIT or JOB, decoded.
struct JobMessage {
  std::string task;
  JobMeta meta;
  zmq::message_t args;
};

// DONE or RESULT, decoded.
struct OutcomeMessage {
  std::string task;
  OutcomeMeta meta;
  zmq::message_t result;
};

// True when `name` is a valid task name (1..128 bytes of [A-Za-z0-9._:-]).
// Queue names (since 1.3) follow the same rule.
bool is_valid_task_name(std::string_view name) noexcept;

// Checks the signature and command frames and that the frame count matches
// the command. `frames` excludes any ROUTER identity frame.
Command decode_command(std::span<const zmq::message_t> frames);

// Each decoder first checks the command with decode_command and that it is
// the expected one (throws ProtocolError otherwise).
JobMessage decode_job(Command expected, std::span<zmq::message_t> frames);
OutcomeMessage decode_outcome(Command expected,
                              std::span<zmq::message_t> frames);
WorkerInfo decode_ready(std::span<const zmq::message_t> frames);
Welcome decode_welcome(std::span<const zmq::message_t> frames);
Hello decode_hello(std::span<const zmq::message_t> frames);
Credit decode_credit(std::span<const zmq::message_t> frames);

// Encoders. `expected` must be Submit/Job, Done/Result respectively; the
// payload (already MessagePack) is moved into the returned frames.
Frames encode_job(Command command, std::string_view task, const JobMeta& meta,
                  zmq::message_t args);
Frames encode_outcome(Command command, std::string_view task,
                      const OutcomeMeta& meta, zmq::message_t result);
Frames encode_ready(const WorkerInfo& info);
Frames encode_welcome(const Welcome& welcome);
Frames encode_hello(const Hello& hello);
Frames encode_credit(const Credit& credit);
Frames encode_control(Command command);  // Heartbeat or Disconnect

// A MessagePack nil, for error outcomes and absent args.
inline constexpr std::string_view kMsgpackNil{"\xc0", 1};
zmq::message_t nil_payload();

// The bytes of a frame, valid while the frame lives.
inline std::string_view frame_view(const zmq::message_t& frame) {
  return {static_cast<const char*>(frame.data()), frame.size()};
}

}  // namespace monsoon::protocol
