// ringfeed-bench shared: consumer groups between processes. Total pop + ack throughput
// of shared and key_shared groups of 1, 2 and 4 consumer processes, of a failover group
// (active + standby) and of broadcast groups of 2 and 4 against one exclusive consumer in
// the same run, and how long the leases of a SIGKILLed consumer take to reach another.
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "commands.hpp"
#include "harness.hpp"
#include "ringfeed_steps.hpp"
#include "shm/ring_layout.hpp"

namespace ringfeed::bench {
namespace {

constexpr const char* kHelp = R"(usage: ringfeed-bench shared [flags]

Leased consumer groups between processes. The writer is this process; the consumers
are forked children. Each run measures:
  throughput  messages published --publish-batch at a time, taken with pop(B) +
              ack(batch) for B = 1 and 64. Unkeyed (64-byte values): one exclusive
              consumer (the baseline), a shared group of 1, 2 and 4 consumer
              processes, a failover group of an active consumer and a standby
              attached after it, and a broadcast group of 2 and 4 consumer processes
              (each takes every message: messages/s counts each message once, the
              deliveries are that many times more). Keyed (8-byte key of --keys distinct keys, round
              robin, and a 56-byte value that starts with the message's sequence
              number: records of the same size): one exclusive consumer (the keyed
              baseline) and a key_shared group of 1, 2 and 4 consumer processes; every
              keyed consumer checks each message's key against its sequence number and
              that, per key, first deliveries come in sequence order (a table in shared
              memory that all consumers of the variant update).
              Each variant has its own ring; one unmeasured lap first. The clock runs
              from the writer's first measured publish to the last message popped.
              Exactly-once check: as many messages taken as published, none with
              delivery_count > 1 (no consumer dies, leases last 30 s); keyed variants
              also count first deliveries that came out of their key's order (with the
              counts, a duplicate would be one). Reported, not fatal.
  takeover    a shared consumer takes --leases messages and holds them; the writer
              SIGKILLs it (t0 just before the kill), then a second consumer in the
              writer's process polls pop(64, 0) while the writer calls service(); the
              time is t0 to the last of the killed consumer's messages popped again
              (delivery_count 2). --takeovers times per run.
The writer is pinned to cpu 0 and every consumer to cpu 1: with 2 and 4 consumers (and
the failover standby) they share that cpu (on a 2-cpu machine, more than one consumer
oversubscribes it anyway). A variant that fails is reported (what and where, on stderr)
and left out of that run's figures; the others go on, and the exit status is 1.

flags:
  --runs K            runs (default 5); medians are taken over them
  --count N           measured messages per throughput variant (default 4000000)
  --publish-batch P   messages per publish (default 64)
  --ring-mb MB        ring size in MiB, a power of two (default 64)
  --keys K            distinct keys of the keyed variants (default 1024)
  --spin-us U         ConsumerOptions::spin of every consumer (default 50)
  --leases N          messages the killed consumer holds (default 64)
  --takeovers T       kills per run (default 20)
  --wait-idle S       before each run, wait up to S seconds for a second of idle cpus
  --only TEXT         only the variants whose name contains TEXT (and their baselines),
                      e.g. --only 'key_shared, 2' to profile one
  --no-pin            do not pin
  --help
)";

struct Options {
  std::uint64_t runs = 5;
  std::uint64_t count = 4'000'000;
  std::uint64_t publish_batch = 64;
  std::uint64_t ring_mb = 64;
  std::uint64_t keys = 1024;
  std::uint64_t spin_us = 50;
  std::uint64_t leases = 64;
  std::uint64_t takeovers = 20;
  std::uint64_t wait_idle = 0;
  std::string only;  // empty: every variant
  bool pin = true;
};

constexpr int kMaxConsumers = 4;
constexpr std::uint64_t kMaxKeys = 1 << 16;
// Keyed messages: an 8-byte key and a 56-byte value, so that their records are as large
// as those of the unkeyed 64-byte values (shm::record_size rounds up to 32 bytes).
constexpr std::size_t kKeyBytes = 8;
constexpr std::size_t kKeyedValueBytes = kValueBytes - kKeyBytes;
static_assert(shm::record_size(kKeyBytes, kKeyedValueBytes) == shm::record_size(0, kValueBytes));

struct alignas(kLine) PerConsumer {
  std::atomic<std::uint64_t> taken;         // messages popped and acked
  std::atomic<std::int64_t> last_ns;        // when the last batch was popped
  std::atomic<std::uint64_t> redelivered;   // messages seen with delivery_count > 1
  std::atomic<std::uint64_t> out_of_order;  // keyed: first deliveries behind their key
};

struct Control {
  Rendezvous rv;  // only its failure slot is used
  alignas(kLine) std::atomic<std::uint32_t> attached;
  alignas(kLine) std::atomic<std::uint32_t> stop;
  PerConsumer c[kMaxConsumers];
  // Keyed variants: per key, 1 + the sequence number of its last first delivery. A key is
  // with one consumer at a time (whose pop follows the previous holder's ack), so plain
  // loads and stores see the previous holder's entry.
  alignas(kLine) std::atomic<std::uint64_t> key_next[kMaxKeys];
};

struct Variant {
  std::string name;
  Mode mode;
  int consumers;
  std::size_t batch;
  bool keyed;        // keyed messages, checked by the consumers
  std::size_t base;  // index of the same run's exclusive baseline (keyed ones: the keyed)
};

using KeyText = std::array<char, kKeyBytes>;

// "k0000042": the key of every message whose sequence number is 42 modulo the key count.
KeyText key_text(std::uint64_t key) {
  KeyText k{};
  k[0] = 'k';
  for (std::size_t i = kKeyBytes - 1; i > 0; --i, key /= 10)
    k[i] = static_cast<char>('0' + key % 10);
  return k;
}

bool pin_to(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(pid, sizeof set, &set) == 0;
}

// Forks a child that runs fn and exits with its result; it dies with the parent.
template <typename Fn>
pid_t spawn(Control& ctl, bool pin, Fn&& fn) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ctl.rv.fail(std::string("fork: ") + std::strerror(errno));
    return -1;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) std::_Exit(1);
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGALRM, SIG_DFL);
    if (pin) pin_to(0, 1);
    int rc = 1;
    try {
      rc = fn();
    } catch (const std::exception& e) {
      ctl.rv.fail(std::string("consumer: ") + e.what());
    }
    std::_Exit(rc);
  }
  return pid;
}

bool reap(Control& ctl, pid_t pid, bool expect_kill) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (expect_kill) return true;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  ctl.rv.fail("consumer process " + std::to_string(pid) +
              (WIFEXITED(status) ? " exited with status " + std::to_string(WEXITSTATUS(status))
                                 : " was killed by a signal"));
  return false;
}

std::unique_ptr<Consumer> attach(Control& ctl, const std::string& ns, Mode mode,
                                 std::chrono::nanoseconds spin) {
  auto c =
      Consumer::attach({.ns = ns, .partition = 0, .group = kGroup, .mode = mode, .spin = spin});
  if (!c) {
    ctl.rv.fail("attaching a consumer: " + c.error().message);
    return nullptr;
  }
  return std::move(c.value());
}

// Waits until pred() or 10 s, calling w.service() meanwhile; false on failure.
template <typename Pred>
bool wait_until(Control& ctl, Writer* w, const char* what, Pred&& pred) {
  const std::int64_t deadline = now_ns() + 10'000'000'000;
  while (!pred()) {
    if (ctl.rv.failed.load(std::memory_order_acquire) != 0) return false;
    if (now_ns() > deadline) {
      ctl.rv.fail(std::string("waited 10 s for ") + what);
      return false;
    }
    if (w != nullptr) w->service();
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return true;
}

// What a keyed consumer knows of the stream: messages 0 .. published-1, key = seq % keys.
struct KeyedStream {
  std::uint64_t published = 0;
  std::uint64_t keys = 1;
  const std::vector<KeyText>* key_texts = nullptr;
};

// The consumer of a throughput variant: pops and acks until told to stop. Keyed: checks
// every message's key and sequence number, and per key the order of first deliveries.
template <bool kKeyed>
int consume(Control& ctl, int index, const std::string& ns, Mode mode, std::size_t batch,
            std::chrono::nanoseconds spin, const KeyedStream& stream) {
  auto c = attach(ctl, ns, mode, spin);
  if (!c) return 1;
  PerConsumer& me = ctl.c[index];
  ctl.attached.fetch_add(1, std::memory_order_acq_rel);
  std::uint64_t taken = 0;
  std::uint64_t redelivered = 0;
  std::uint64_t out_of_order = 0;
  while (ctl.stop.load(std::memory_order_acquire) == 0) {
    const Batch& b = c->pop(batch, std::chrono::milliseconds(5));
    const std::int64_t t = now_ns();
    if (b.status() == PopStatus::timed_out) continue;
    if (b.status() != PopStatus::ok) {
      ctl.rv.fail(ns + ": pop: " + to_string(b.status()) + " after " + std::to_string(taken));
      return 1;
    }
    for (const Message& m : b) {
      if (m.delivery_count() > 1) {
        ++redelivered;
        continue;
      }
      if constexpr (kKeyed) {
        const std::string_view key = m.key();
        const std::string_view value = m.value();
        std::uint64_t seq = stream.published;
        if (value.size() == kKeyedValueBytes) std::memcpy(&seq, value.data(), sizeof seq);
        if (seq >= stream.published || key.size() != kKeyBytes ||
            std::memcmp(key.data(), (*stream.key_texts)[seq % stream.keys].data(), kKeyBytes) !=
                0) {
          ctl.rv.fail(ns + ": a message at ring position " + std::to_string(m.position()) +
                      " has key '" + std::string(key) + "' and a " + std::to_string(value.size()) +
                      "-byte value: not a message published");
          return 1;
        }
        std::atomic<std::uint64_t>& next = ctl.key_next[seq % stream.keys];
        if (next.load(std::memory_order_relaxed) > seq) ++out_of_order;
        next.store(seq + 1, std::memory_order_relaxed);
      }
    }
    if (const AckStatus st = c->ack(b); st != AckStatus::ok) {
      ctl.rv.fail(ns + ": ack refused a batch just popped (" + to_string(st) + ", " +
                  std::to_string(b.size()) + " messages from offset " +
                  std::to_string(b[0].offset()) + ", delivery " +
                  std::to_string(b[0].delivery_count()) + ")");
      return 1;
    }
    taken += b.size();
    me.last_ns.store(t, std::memory_order_relaxed);
    me.redelivered.store(redelivered, std::memory_order_relaxed);
    me.out_of_order.store(out_of_order, std::memory_order_relaxed);
    me.taken.store(taken, std::memory_order_release);
  }
  return 0;
}

// Publishes keyed messages first .. first+count-1 (see KeyedStream), up to `per_publish`
// at a time; false (with the reason in ctl.rv) if the ring stayed full for 10 s.
bool publish_keyed(Control& ctl, Writer& w, std::uint64_t first, std::uint64_t count,
                   std::size_t per_publish, const KeyedStream& stream) {
  std::vector<std::array<char, kKeyedValueBytes>> values(per_publish);
  std::vector<OutMessage> batch(per_publish);
  for (std::size_t j = 0; j < batch.size(); ++j) {
    values[j].fill('v');
    batch[j].value = {values[j].data(), kKeyedValueBytes};
  }
  for (std::uint64_t sent = 0; sent < count;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(per_publish, count - sent));
    for (std::size_t j = 0; j < k; ++j) {
      const std::uint64_t seq = first + sent + j;
      std::memcpy(values[j].data(), &seq, sizeof seq);
      batch[j].key = {(*stream.key_texts)[seq % stream.keys].data(), kKeyBytes};
    }
    std::size_t n = 0;
    while (n < k) {  // a partial publish leaves the rest for the next call
      const std::size_t m = w.publish({batch.data() + n, k - n}, std::chrono::seconds(10));
      if (m == 0) {
        ctl.rv.fail(w.segment_name() + ": ring full for 10 s at message " +
                    std::to_string(first + sent + n));
        return false;
      }
      n += m;
    }
    sent += k;
  }
  return true;
}

std::uint64_t total_taken(const Control& ctl, int n) {
  std::uint64_t sum = 0;
  for (int i = 0; i < n; ++i) sum += ctl.c[i].taken.load(std::memory_order_acquire);
  return sum;
}

// What the checks of a run found, summed over its variants.
struct Checks {
  std::uint64_t duplicates = 0;     // redelivered or taken more often than published
  std::uint64_t out_of_order = 0;   // keyed: first deliveries behind their key's last
  std::uint64_t standby_taken = 0;  // failover: messages the standby took
};

// Messages per second of one variant; 0 after a failure (in ctl.rv).
// The reason of a failure is printed and left in `error`.
double run_variant(const Options& o, const Variant& v, const std::string& ns,
                   const std::vector<KeyText>& key_texts, Checks& checks, std::string& error) {
  SharedObject<Control> ctl;
  auto w = create_ring(ctl->rv, ns, 0, o.ring_mb << 20);
  if (!w) {
    error = ctl->rv.error_message();
    return 0;
  }
  const auto spin = std::chrono::microseconds(o.spin_us);
  // Keyed and unkeyed records have the same size, so the same lap.
  const std::uint64_t lap = lap_messages(w->capacity());
  const std::uint64_t want = lap + o.count;
  // Broadcast: every consumer takes every message.
  const std::uint64_t copies =
      v.mode == Mode::broadcast ? static_cast<std::uint64_t>(v.consumers) : 1;
  const KeyedStream stream{.published = want, .keys = o.keys, .key_texts = &key_texts};
  std::vector<pid_t> pids;
  bool ok = true;
  for (int i = 0; ok && i < v.consumers; ++i) {
    const pid_t pid = spawn(*ctl, o.pin, [&, i] {
      return v.keyed ? consume<true>(*ctl, i, ns, v.mode, v.batch, spin, stream)
                     : consume<false>(*ctl, i, ns, v.mode, v.batch, spin, stream);
    });
    if (pid > 0) pids.push_back(pid);
    // Failover: the consumer attached first is the active one; attach them in order.
    ok = pid > 0 && (v.mode != Mode::failover ||
                     wait_until(*ctl, w.get(), "a failover consumer to attach", [&] {
                       return ctl->attached.load() == static_cast<std::uint32_t>(i + 1);
                     }));
  }
  double rate = 0;
  ok =
      ok && static_cast<int>(pids.size()) == v.consumers &&
      wait_until(*ctl, w.get(), "the consumers to attach",
                 [&] { return ctl->attached.load() == static_cast<std::uint32_t>(v.consumers); }) &&
      wait_for_group(ctl->rv, *w) &&
      (v.keyed ? publish_keyed(*ctl, *w, 0, lap, o.publish_batch, stream)
               : publish_lap(ctl->rv, *w)) &&
      wait_until(*ctl, w.get(), "the warm-up lap",
                 [&] { return total_taken(*ctl, v.consumers) >= lap * copies; });
  if (ok && v.keyed) {
    const std::int64_t start = now_ns();
    ok = publish_keyed(*ctl, *w, lap, o.count, o.publish_batch, stream);
    ok = ok && wait_until(*ctl, w.get(), "the consumers to take every message",
                          [&] { return total_taken(*ctl, v.consumers) >= want * copies; });
    if (ok) {
      std::int64_t end = 0;
      for (int i = 0; i < v.consumers; ++i) end = std::max(end, ctl->c[i].last_ns.load());
      rate = static_cast<double>(o.count) / (static_cast<double>(end - start) / 1e9);
    }
  } else if (ok) {
    std::vector<std::array<char, kValueBytes>> values(o.publish_batch);
    std::vector<OutMessage> batch(o.publish_batch);
    for (std::size_t j = 0; j < batch.size(); ++j) {
      values[j].fill('v');
      batch[j].value = {values[j].data(), kValueBytes};
    }
    const std::int64_t start = now_ns();
    for (std::uint64_t sent = 0; ok && sent < o.count;) {
      const auto k = static_cast<std::size_t>(std::min(o.publish_batch, o.count - sent));
      const std::size_t n = w->publish({batch.data(), k}, std::chrono::seconds(10));
      if (n == 0) {
        ctl->rv.fail(ns + ": ring full for 10 s at message " + std::to_string(sent));
        ok = false;
      }
      sent += n;
    }
    ok = ok && wait_until(*ctl, w.get(), "the consumers to take every message",
                          [&] { return total_taken(*ctl, v.consumers) >= want * copies; });
    if (ok) {
      std::int64_t end = 0;
      for (int i = 0; i < v.consumers; ++i) end = std::max(end, ctl->c[i].last_ns.load());
      rate = static_cast<double>(o.count) / (static_cast<double>(end - start) / 1e9);
    }
  }
  if (ok) {
    // Nothing should be taken twice: no more than published, no redeliveries (no
    // consumer dies, leases last 30 s); keyed, no first delivery behind its key's last
    // (with the counts, every message exactly once). Counted and reported rather than
    // failing the run.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::uint64_t redelivered = 0;
    std::uint64_t out_of_order = 0;
    for (int i = 0; i < v.consumers; ++i) {
      redelivered += ctl->c[i].redelivered.load();
      out_of_order += ctl->c[i].out_of_order.load();
    }
    const std::uint64_t taken = total_taken(*ctl, v.consumers);
    if (taken != want * copies || redelivered != 0 || out_of_order != 0) {
      checks.duplicates += std::max(redelivered, taken > want * copies ? taken - want * copies : 0);
      checks.out_of_order += out_of_order;
      std::fprintf(stderr,
                   "ringfeed-bench shared: %s (%s): %llu messages taken of %llu published, "
                   "%llu with delivery_count > 1, %llu first deliveries out of key order\n",
                   v.name.c_str(), ns.c_str(), static_cast<unsigned long long>(taken),
                   static_cast<unsigned long long>(want * copies),
                   static_cast<unsigned long long>(redelivered),
                   static_cast<unsigned long long>(out_of_order));
    }
    if (v.mode == Mode::failover) checks.standby_taken += ctl->c[1].taken.load();
  }
  if (!ok && ctl->rv.failed.load() == 0) ctl->rv.fail(ns + ": the variant stopped early");
  ctl->stop.store(1, std::memory_order_release);
  if (!ok) {
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
  }
  for (pid_t pid : pids) ok = reap(*ctl, pid, !ok) && ok;
  w.reset();
  unwatch_segments();
  if (!ok) {
    error = ctl->rv.error_message();
    std::fprintf(stderr, "ringfeed-bench shared: %s: %s\n", v.name.c_str(), error.c_str());
    return 0;
  }
  return rate;
}

// One takeover: nanoseconds from the kill to the last of the killed consumer's leases
// popped by the survivor; negative after a failure.
double takeover(const Options& o, const std::string& ns) {
  SharedObject<Control> ctl;
  auto w = create_ring(ctl->rv, ns, 0, 1 << 20);
  if (!w) return -1;
  auto survivor = attach(*ctl, ns, Mode::shared, std::chrono::nanoseconds(0));
  if (!survivor) return -1;
  const std::uint64_t n = o.leases;
  const pid_t victim = spawn(*ctl, o.pin, [&]() -> int {
    auto c = attach(*ctl, ns, Mode::shared, std::chrono::microseconds(50));
    if (!c) return 1;
    ctl->attached.store(1, std::memory_order_release);
    std::uint64_t held = 0;
    while (held < n) {
      const Batch& b = c->pop(n - held, std::chrono::seconds(1));
      if (b.status() == PopStatus::timed_out && ctl->rv.failed.load() == 0) continue;
      if (b.status() != PopStatus::ok) {
        ctl->rv.fail(ns + ": the victim's pop: " + to_string(b.status()));
        return 1;
      }
      held += b.size();
    }
    ctl->c[0].taken.store(held, std::memory_order_release);
    for (;;) ::pause();  // holds the leases until killed
  });
  double result = -1;
  bool ok = victim > 0 &&
            wait_until(*ctl, w.get(), "the victim to attach",
                       [&] { return ctl->attached.load() == 1; }) &&
            wait_for_group(ctl->rv, *w);
  if (ok) {
    std::array<char, kValueBytes> value{};
    std::vector<OutMessage> batch(n, OutMessage{.value = {value.data(), value.size()}});
    ok = w->publish(batch, std::chrono::seconds(1)) == n &&
         wait_until(*ctl, w.get(), "the victim to take its leases",
                    [&] { return ctl->c[0].taken.load(std::memory_order_acquire) == n; });
  }
  if (ok) {
    std::uint64_t back = 0;
    const std::int64_t t0 = now_ns();
    ::kill(victim, SIGKILL);
    const std::int64_t deadline = t0 + 5'000'000'000;
    while (ok && back < n) {
      w->service();
      const Batch& b = survivor->pop(64, std::chrono::nanoseconds(0));
      if (b.status() == PopStatus::ok) {
        const std::int64_t t = now_ns();
        for (const Message& m : b) {
          if (m.delivery_count() != 2) {
            ctl->rv.fail(ns + ": the survivor popped a message with delivery_count " +
                         std::to_string(m.delivery_count()));
            ok = false;
          }
        }
        back += b.size();
        if (survivor->ack(b) != AckStatus::ok) {
          ctl->rv.fail(ns + ": the survivor's ack was refused");
          ok = false;
        }
        if (back >= n) result = static_cast<double>(t - t0);
      } else if (b.status() != PopStatus::timed_out) {
        ctl->rv.fail(ns + ": the survivor's pop: " + to_string(b.status()));
        ok = false;
      } else if (now_ns() > deadline) {
        ctl->rv.fail(ns + ": " + std::to_string(back) + " of " + std::to_string(n) +
                     " leases back 5 s after the kill");
        ok = false;
      }
    }
  }
  if (victim > 0) {
    ::kill(victim, SIGKILL);
    reap(*ctl, victim, true);
  }
  survivor.reset();
  w.reset();
  unwatch_segments();
  if (!ok) {
    if (ctl->rv.failed.load() == 0) ctl->rv.fail(ns + ": the takeover stopped early");
    std::fprintf(stderr, "ringfeed-bench shared: takeover: %s\n", ctl->rv.error_message().c_str());
    return -1;
  }
  return result;
}

Options parse(ArgReader& args) {
  Options o;
  constexpr std::uint64_t kBig = 100'000'000'000;
  while (!args.done()) {
    if (args.flag("--help") || args.flag("-h")) {
      std::fputs(kHelp, stdout);
      std::exit(0);
    }
    std::string_view only;
    if (args.flag("--no-pin")) {
      o.pin = false;
    } else if (args.text("--only", only)) {
      o.only = only;
    } else if (args.number("--runs", 1, 1000, o.runs) || args.number("--count", 1, kBig, o.count) ||
               args.number("--publish-batch", 1, 4096, o.publish_batch) ||
               args.number("--ring-mb", 1, 1 << 20, o.ring_mb) ||
               args.number("--keys", 1, kMaxKeys, o.keys) ||
               args.number("--spin-us", 0, 10'000'000, o.spin_us) ||
               args.number("--leases", 1, 1000, o.leases) ||
               args.number("--takeovers", 1, 10'000, o.takeovers) ||
               args.number("--wait-idle", 0, 3600, o.wait_idle)) {
    } else {
      args.unknown();
    }
  }
  if ((o.ring_mb & (o.ring_mb - 1)) != 0) {
    throw UsageError("--ring-mb " + std::to_string(o.ring_mb) + " is not a power of two");
  }
  return o;
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

double shared_takeover_ns(std::uint64_t leases, bool pin, const std::string& ns) {
  Options o;
  o.leases = leases;
  o.pin = pin;
  return takeover(o, ns);
}

int shared_main(ArgReader& args) {
  const Options o = parse(args);
  const unsigned cpus = std::thread::hardware_concurrency();
  std::printf("ringfeed-bench shared on %s\n", machine_description().c_str());
  std::printf(
      "%llu messages per variant, publish batch %llu, rings %llu MiB, consumer spin %llu us;\n"
      "unkeyed: 64-byte values; keyed: 8-byte keys (%llu, round robin) + 56-byte values\n",
      static_cast<unsigned long long>(o.count), static_cast<unsigned long long>(o.publish_batch),
      static_cast<unsigned long long>(o.ring_mb), static_cast<unsigned long long>(o.spin_us),
      static_cast<unsigned long long>(o.keys));
  std::printf("%s; %u cpus: the writer plus 2 or more consumers oversubscribe them%s\n",
              o.pin ? "writer pinned to cpu 0, all consumers to cpu 1" : "not pinned (--no-pin)",
              cpus, o.pin ? " (the consumers share cpu 1)" : "");

  std::vector<KeyText> key_texts(o.keys);
  for (std::uint64_t k = 0; k < o.keys; ++k) key_texts[k] = key_text(k);

  std::vector<Variant> variants;
  for (std::size_t b : {std::size_t{1}, std::size_t{64}}) {
    const std::string bs = ", batch " + std::to_string(b);
    auto consumers = [](int n) { return std::to_string(n) + " consumer" + (n > 1 ? "s" : ""); };
    const std::size_t base = variants.size();
    variants.push_back({"exclusive, 1 consumer" + bs, Mode::exclusive, 1, b, false, base});
    for (int n : {1, 2, 4}) {
      variants.push_back({"shared, " + consumers(n) + bs, Mode::shared, n, b, false, base});
    }
    variants.push_back({"failover, 1 + 1 standby" + bs, Mode::failover, 2, b, false, base});
    for (int n : {2, 4}) {
      variants.push_back({"broadcast, " + consumers(n) + bs, Mode::broadcast, n, b, false, base});
    }
    const std::size_t keyed_base = variants.size();
    // The keyed baseline is compared with the unkeyed one: what keys and checks cost.
    variants.push_back({"exclusive keyed, 1 consumer" + bs, Mode::exclusive, 1, b, true, base});
    for (int n : {1, 2, 4}) {
      variants.push_back(
          {"key_shared, " + consumers(n) + bs, Mode::key_shared, n, b, true, keyed_base});
    }
  }
  if (!o.only.empty()) {
    // The variants named, with their baselines; `base` indices follow them.
    std::vector<bool> keep(variants.size(), false);
    for (std::size_t i = 0; i < variants.size(); ++i) {
      if (variants[i].name.find(o.only) == std::string::npos) continue;
      keep[i] = true;
      keep[variants[i].base] = true;
      keep[variants[variants[i].base].base] = true;
    }
    std::vector<std::size_t> index(variants.size(), 0);
    std::vector<Variant> kept;
    for (std::size_t i = 0; i < variants.size(); ++i) {
      if (!keep[i]) continue;
      index[i] = kept.size();
      kept.push_back(variants[i]);
    }
    if (kept.empty()) throw UsageError("--only '" + o.only + "' names no variant");
    for (Variant& v : kept) v.base = index[v.base];
    variants = std::move(kept);
  }
  // Generous: a variant that moves fewer than 0.1 M messages a second has hung.
  const auto watchdog = static_cast<unsigned>(
      60 + variants.size() * (o.count + 1'000'000) / 100'000 + o.takeovers * 6);
  auto reference = [&](std::size_t i) { return variants[i].base; };

  Figures fig;
  std::vector<double> all_takeovers;
  Checks total;
  // A variant that fails (the reason goes to stderr) is left out of its run's figures;
  // the others go on, and the exit status is 1.
  std::vector<std::uint64_t> failures(variants.size(), 0);
  std::vector<std::string> first_error(variants.size());
  for (std::uint64_t run = 1; run <= o.runs; ++run) {
    const std::string idle =
        o.wait_idle > 0 ? wait_for_idle(static_cast<unsigned>(o.wait_idle)) : "";
    const CpuSample before = sample_cpu();
    if (o.pin) pin_to(0, 0);
    arm_watchdog(watchdog);
    std::vector<double> rates;
    Checks checks;
    for (std::size_t i = 0; i < variants.size(); ++i) {
      std::string error;
      const double r = run_variant(o, variants[i], run_namespace("shr", run * 100 + i), key_texts,
                                   checks, error);
      if (r <= 0 && failures[i]++ == 0) first_error[i] = error;
      rates.push_back(r);
    }
    std::vector<double> times;
    for (std::uint64_t k = 0; k < o.takeovers; ++k) {
      const double t = takeover(o, run_namespace("tko", run * 10'000 + k));
      if (t < 0) return 1;
      times.push_back(t);
    }
    disarm_watchdog();
    const double others = others_share(before, sample_cpu());
    std::printf("\nrun %llu/%llu (%s)\n", static_cast<unsigned long long>(run),
                static_cast<unsigned long long>(o.runs),
                run_note(o.pin ? "pinned" : "not pinned", idle, others).c_str());
    std::printf(
        "  messages redelivered or taken twice (no consumer died): %llu; keyed first deliveries "
        "out of key order: %llu; taken by failover standbys: %llu\n",
        static_cast<unsigned long long>(checks.duplicates),
        static_cast<unsigned long long>(checks.out_of_order),
        static_cast<unsigned long long>(checks.standby_taken));
    total.duplicates += checks.duplicates;
    total.out_of_order += checks.out_of_order;
    total.standby_taken += checks.standby_taken;
    for (std::size_t i = 0; i < variants.size(); ++i) {
      const std::size_t ref = reference(i);
      if (rates[i] <= 0) {
        std::printf("  %-38s FAILED (the reason is on stderr)\n", variants[i].name.c_str());
        continue;
      }
      fig.add(variants[i].name, rates[i]);
      if (rates[ref] <= 0) {
        std::printf("  %-38s %12s\n", variants[i].name.c_str(), format_rate(rates[i]).c_str());
        continue;
      }
      std::printf("  %-38s %12s  / %s %.3f\n", variants[i].name.c_str(),
                  format_rate(rates[i]).c_str(),
                  variants[ref].keyed ? "exclusive keyed" : "exclusive", rates[i] / rates[ref]);
    }
    const double med = median_of(times);
    const double mx = *std::max_element(times.begin(), times.end());
    std::printf("  takeover after SIGKILL (%llu leases, %llu kills): median %s, max %s\n",
                static_cast<unsigned long long>(o.leases),
                static_cast<unsigned long long>(o.takeovers), format_ns(med).c_str(),
                format_ns(mx).c_str());
    fig.add("takeover median", med);
    fig.add("takeover max", mx);
    all_takeovers.insert(all_takeovers.end(), times.begin(), times.end());
    std::fflush(stdout);
  }

  std::printf("\nmedians of %llu runs (ratios: of the medians)\n",
              static_cast<unsigned long long>(o.runs));
  auto runs_note = [&](std::size_t i) {
    return failures[i] == 0 ? std::string()
                            : "  (" + std::to_string(o.runs - failures[i]) + " of " +
                                  std::to_string(o.runs) + " runs)";
  };
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const std::size_t ref = reference(i);
    if (failures[i] == o.runs) {
      std::printf("  %-38s failed in every run\n", variants[i].name.c_str());
      continue;
    }
    const double r = fig.median(variants[i].name);
    const double e = fig.median(variants[ref].name);
    if (failures[ref] == o.runs) {
      std::printf("  %-38s %12s%s\n", variants[i].name.c_str(), format_rate(r).c_str(),
                  runs_note(i).c_str());
      continue;
    }
    std::printf("  %-38s %12s  / %-15s %.3f  per-message cost x%.2f%s\n", variants[i].name.c_str(),
                format_rate(r).c_str(), variants[ref].keyed ? "exclusive keyed" : "exclusive",
                r / e, e / r, runs_note(i).c_str());
  }
  std::printf("  takeover: median of run medians %s, max of run maxima %s, median of all %zu %s\n",
              format_ns(fig.median("takeover median")).c_str(),
              format_ns(*std::max_element(all_takeovers.begin(), all_takeovers.end())).c_str(),
              all_takeovers.size(), format_ns(median_of(all_takeovers)).c_str());
  std::printf(
      "  all runs (no consumer died): messages redelivered or taken twice %llu; keyed first "
      "deliveries out of key order %llu; taken by failover standbys %llu\n",
      static_cast<unsigned long long>(total.duplicates),
      static_cast<unsigned long long>(total.out_of_order),
      static_cast<unsigned long long>(total.standby_taken));

  std::printf("\ntargets (medians; cost = baseline rate / rate, same runs)\n");
  for (std::size_t i = 0; i < variants.size(); ++i) {
    const Variant& v = variants[i];
    // The targets are the leased groups' (broadcast groups take no leases).
    if (v.batch != 64 || v.mode == Mode::exclusive || v.mode == Mode::broadcast) continue;
    if (failures[i] == o.runs || failures[v.base] == o.runs) {
      std::printf("  %-38s no figure: it or its baseline failed in every run\n", v.name.c_str());
      continue;
    }
    const double r = fig.median(v.name);
    const double cost = fig.median(variants[v.base].name) / r;
    std::printf("  %-38s at least 5 M/s: %-10s %-7s; cost at most 2x %s: x%.2f %s\n",
                v.name.c_str(), format_rate(r).c_str(), r >= 5e6 ? "met" : "NOT met",
                v.keyed ? "exclusive keyed" : "exclusive", cost, cost <= 2 ? "met" : "NOT met");
  }
  const double tm = fig.median("takeover median");
  std::printf("  takeover median under 50 ms: %s %s\n", format_ns(tm).c_str(),
              tm < 50e6 ? "met" : "NOT met");
  if (cpus <= 2) {
    std::printf(
        "note: %u cpus; with 2 or more consumers plus the writer the machine is oversubscribed, "
        "so those figures are the cost of sharing, not parallel speed-up\n",
        cpus);
  }
  bool failed = false;
  for (std::size_t i = 0; i < variants.size(); ++i) {
    if (failures[i] == 0) continue;
    if (!failed) std::printf("\nFAILED variants\n");
    failed = true;
    std::printf("  %-38s failed in %llu of %llu runs; first: %s\n", variants[i].name.c_str(),
                static_cast<unsigned long long>(failures[i]),
                static_cast<unsigned long long>(o.runs), first_error[i].c_str());
  }
  return failed ? 1 : 0;
}

}  // namespace ringfeed::bench
