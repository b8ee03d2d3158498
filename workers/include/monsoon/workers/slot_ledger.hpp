// The slots a worker shares among the sessions it keeps with several brokers
// (docs/protocol.md, "Several brokers: shared slots"): which JOB takes a slot
// and which is refused, and which brokers a freed slot must be announced to
// with CREDIT.
//
// Each broker holds optimistic credit for the worker, so together they may
// send more JOBs than it has slots. A JOB that finds every slot held is
// refused (DONE `refused` to a broker of 1.2 or later, `overloaded` to an
// older one) and its broker marked starved: the refusal set that broker's
// credit to 0, so it must hear when a slot is free again. A starved broker is
// granted the free slots (CREDIT) after each release, until one finds the
// worker idle: a grant caps the broker's credit at the slots free at that
// moment, so it must be renewed as more slots free up, or they would stay
// idle for that broker (stranded). Brokers never refused need no CREDIT: their
// own DONEs return their credit.
//
// The worker calls try_take() for each JOB, and for each answered job
// release() then take_credit_grants(), sending the DONE then the CREDITs.
//
// Pure: no I/O, no clock. Owned and used by one thread. Throws only on a
// violated precondition (below) and std::bad_alloc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace monsoon::workers {

class SlotLedger {
 public:
  // Brokers are numbered 0..brokers-1. Throws std::invalid_argument unless
  // slots >= 1 and brokers >= 1.
  SlotLedger(std::uint32_t slots, std::size_t brokers);

  // A JOB arrived from broker `broker`. True: a slot is now held for it (run
  // it, and release() once it is answered). False: no slot is free; answer it
  // `refused` (`overloaded` to a broker older than 1.2) without running it;
  // the broker is marked starved. Throws std::out_of_range unless
  // broker < brokers.
  [[nodiscard]] bool try_take(std::size_t broker);

  // A held job of broker `broker` was answered: its slot is free again.
  // Call it when its DONE is handed to that broker's session, then
  // take_credit_grants(). Throws std::logic_error when no slot is held,
  // std::out_of_range unless broker < brokers.
  void release(std::size_t broker);

  // The CREDITs to send now, after the DONE: (broker, free) for each starved
  // broker, free being the slots free now, when a release() came since the
  // last call and a slot is still free; empty otherwise. A broker whose
  // DONE freed a slot since the last call is left out unless every slot is
  // free: that DONE returns it a credit already, and a CREDIT behind it
  // would count the slot twice once the broker has spent that credit. Marks
  // stay set, so that the next release grants again, until a grant finds
  // every slot free. A grant for a broker older than 1.2 must not be sent
  // (it would count CREDIT as malformed).
  [[nodiscard]] std::vector<std::pair<std::size_t, std::uint32_t>>
  take_credit_grants();

  std::uint32_t slots() const noexcept { return slots_; }
  std::uint32_t held() const noexcept { return held_; }
  std::uint32_t free() const noexcept { return slots_ - held_; }
  // Whether `broker` is marked starved. Throws std::out_of_range unless
  // broker < brokers.
  bool starved(std::size_t broker) const { return starved_.at(broker); }

 private:
  std::uint32_t slots_;
  std::uint32_t held_ = 0;
  bool released_ = false;  // a release() since the last grants
  std::vector<bool> starved_;
  // Per broker: a release() of one of its jobs since the last grants.
  std::vector<bool> done_to_;
};

}  // namespace monsoon::workers
