// How a reader waits for the next message, the same for ringfeed and every baseline that
// can wait more than one way, so that a comparison is of transports, not of waits:
//   spin        poll without ever sleeping (ringfeed: ConsumerOptions::spin of 1 s;
//               message_queue: try_receive; socket and pipe: FIONREAD, then read)
//   spin-sleep  poll for --spin-us, then sleep in the kernel until a message comes
//   sleep       sleep in the kernel at once (ringfeed: spin 0, the futex; message_queue:
//               receive; socket and pipe: a blocking read)
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "cli.hpp"

namespace ringfeed::bench {

enum class Wait { spin, spin_sleep, sleep };

inline const char* to_string(Wait w) {
  switch (w) {
    case Wait::spin:
      return "spin";
    case Wait::spin_sleep:
      return "spin-sleep";
    case Wait::sleep:
      return "sleep";
  }
  return "?";
}

inline Wait parse_wait(std::string_view text) {
  for (Wait w : {Wait::spin, Wait::spin_sleep, Wait::sleep}) {
    if (text == to_string(w)) return w;
  }
  throw UsageError("--wait: '" + std::string(text) + "' is not spin, spin-sleep or sleep");
}

// How long a reader polls before it sleeps. `spin_sleep` is the --spin-us of spin-sleep;
// spin polls "forever" (a reader gets at least one message a second in every bench).
inline std::chrono::nanoseconds spin_time(Wait w, std::chrono::nanoseconds spin_sleep) {
  switch (w) {
    case Wait::spin:
      return std::chrono::seconds(1);
    case Wait::spin_sleep:
      return spin_sleep;
    case Wait::sleep:
      return std::chrono::nanoseconds(0);
  }
  return std::chrono::nanoseconds(0);
}

}  // namespace ringfeed::bench
