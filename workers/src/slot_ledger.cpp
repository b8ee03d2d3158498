#include "monsoon/workers/slot_ledger.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace monsoon::workers {

SlotLedger::SlotLedger(std::uint32_t slots, std::size_t brokers)
    : slots_(slots), starved_(brokers, false), done_to_(brokers, false) {
  if (slots < 1 || brokers < 1) {
    throw std::invalid_argument(
        "a slot ledger needs at least one slot and one broker");
  }
}

bool SlotLedger::try_take(std::size_t broker) {
  if (broker >= starved_.size()) {
    throw std::out_of_range("no broker " + std::to_string(broker));
  }
  if (held_ < slots_) {
    ++held_;
    return true;
  }
  starved_[broker] = true;
  return false;
}

void SlotLedger::release(std::size_t broker) {
  if (broker >= starved_.size()) {
    throw std::out_of_range("no broker " + std::to_string(broker));
  }
  if (held_ == 0) throw std::logic_error("release() with no slot held");
  --held_;
  released_ = true;
  done_to_[broker] = true;
}

std::vector<std::pair<std::size_t, std::uint32_t>>
SlotLedger::take_credit_grants() {
  std::vector<std::pair<std::size_t, std::uint32_t>> grants;
  if (std::exchange(released_, false) && held_ < slots_) {
    // An idle worker's grant is every slot: the broker's credit is then what
    // its own JOBs and DONEs make it, so its mark can go.
    const bool idle = held_ == 0;
    for (std::size_t broker = 0; broker < starved_.size(); ++broker) {
      if (!starved_[broker] || (done_to_[broker] && !idle)) continue;
      grants.emplace_back(broker, free());
      if (idle) starved_[broker] = false;
    }
  }
  std::fill(done_to_.begin(), done_to_.end(), false);
  return grants;
}

}  // namespace monsoon::workers
