// Record headers: name/value pairs a message carries besides its key and value (a Kafka
// record's headers, passed on by the fetcher as they are). Message::headers() and
// OutMessage::headers hold them encoded as in a Kafka record: a varint count, then per
// header a varint name length, the name, a varint value length (-1: null) and the value.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/kafka_records.hpp"
#include "shm/result.hpp"

namespace ringfeed {

// key: the header's name; value and value_null: its value.
using Header = io::kafka::RecordHeaderView;
// key: the name; value: std::nullopt for a null value.
using OutHeader = io::kafka::OutRecordHeader;

// The headers of a message. The bytes come from shared memory another process writes:
// every length is checked, and an error names the header and field. Views point into
// `encoded` (valid while the message is).
inline Result<std::vector<Header>> decode_headers(std::string_view encoded) {
  std::vector<Header> out;
  if (auto ok = io::kafka::decode_record_headers(encoded, out); !ok) return ok.error();
  return out;
}

// For OutMessage::headers; no headers encode to an empty string.
inline std::string encode_headers(std::span<const OutHeader> headers) {
  return io::kafka::encode_record_headers(headers);
}

}  // namespace ringfeed
