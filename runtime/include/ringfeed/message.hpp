// A message handed to a consumer: a view into the ring's shared memory, valid until
// the consumer acks it (the writer does not reuse space a group has not acked).
#pragma once

#include <cstdint>
#include <string_view>

namespace ringfeed {

class Consumer;

class Message {
 public:
  std::string_view key() const { return {key_, key_len_}; }
  std::string_view value() const { return {value_, value_len_}; }
  // The record's headers (a Kafka record's headers), encoded; decode_headers
  // (ringfeed/headers.hpp) reads them. Empty when it has none.
  std::string_view headers() const { return {headers_, headers_len_}; }
  std::uint64_t offset() const { return upstream_offset_; }    // offset in the upstream
  std::int64_t timestamp_ns() const { return timestamp_ns_; }  // the record's time
  std::uint32_t delivery_count() const { return delivery_count_; }
  std::uint64_t position() const { return position_; }  // byte position in the ring

 private:
  friend class Consumer;
  const char* key_ = nullptr;
  const char* value_ = nullptr;
  const char* headers_ = nullptr;
  std::uint32_t key_len_ = 0;
  std::uint32_t value_len_ = 0;
  std::uint32_t headers_len_ = 0;
  std::uint64_t upstream_offset_ = 0;
  std::int64_t timestamp_ns_ = 0;
  std::uint64_t position_ = 0;
  // Exclusive and broadcast: this consumer's delivery number. Shared: the message's
  // sequence in the partition, which finds its lease.
  std::uint64_t sequence_ = 0;
  std::uint32_t lease_generation_ = 0;  // shared: the lease's generation when taken
  std::uint32_t delivery_count_ = 1;
  // Which attachment of its consumer handed it out: after the consumer reattached to a
  // new fetcher, handles from before are refused.
  std::uint32_t attach_epoch_ = 0;
};

}  // namespace ringfeed
