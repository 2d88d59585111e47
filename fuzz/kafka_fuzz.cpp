// libFuzzer target for the Kafka decoders: response frames (io/kafka_wire.hpp), the API
// responses and the consumer group protocol (io/kafka_messages.hpp), and record batches
// with their codecs (io/kafka_records.hpp).
//
// An input is: one byte choosing the decoder (below), one byte choosing the version
// (folded into the API's supported range when outside it), then the bytes to decode:
//
//   0 ApiVersions   1 Metadata      2 ListOffsets   3 Fetch (and the record batches of
//   4 OffsetCommit  5 OffsetFetch   6 FindCoordinator  every partition it returns)
//   7 JoinGroup     8 SyncGroup     9 Heartbeat    10 LeaveGroup
//  11 ConsumerSubscription         12 ConsumerAssignment
//  13 record batches, one after another, as in a Fetch response's records
//  14 a stream of response frames
//  15 record batches as 13, with each whole batch's CRC set right first, so that
//     mutations get past the CRC check into decompression and the records
//
// Besides no crash, leak or read past the input (libFuzzer hands over a heap block of
// exactly its size, and every decoder gets a view of it or of an exact-size copy), it
// checks: an error names the API and version it decoded ("Fetch v11: ..."); a batch that
// decodes is incomplete when cut anywhere, and its records, written again as a batch of
// their own, decode to the same keys, values and headers; a frame that is complete is
// need_more when cut, and an error stays the same error on a longer input. A failed
// check prints what and aborts.
//
// The seeds in fuzz/corpus/kafka have this layout; the mock_* ones are responses of
// librdkafka's mock cluster, written by tests/kafka_mock_cluster_test.cpp with
// RINGFEED_KAFKA_SEED_DIR set.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/crc32c.hpp"
#include "io/kafka_group.hpp"
#include "io/kafka_messages.hpp"
#include "io/kafka_records.hpp"
#include "io/kafka_wire.hpp"

namespace {

namespace kafka = ringfeed::io::kafka;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "kafka_fuzz: %s\n", what.c_str());
  std::abort();
}

// A copy of `s` in a heap block of exactly its size.
class Exact {
 public:
  explicit Exact(std::string_view s) : size_(s.size()), p_(new char[s.empty() ? 1 : s.size()]) {
    if (!s.empty()) std::memcpy(p_.get(), s.data(), s.size());
  }
  std::string_view view() const { return {p_.get(), size_}; }

 private:
  std::size_t size_;
  std::unique_ptr<char[]> p_;
};

// A version byte in the API's range is that version; any other is folded into it.
std::int16_t fold_version(kafka::ApiKey api, std::uint8_t v) {
  const kafka::VersionRange r = kafka::supported_versions(api);
  if (v >= r.min && v <= r.max) return v;
  return static_cast<std::int16_t>(r.min + v % (r.max - r.min + 1));
}

template <typename Response>
bool decode_checked(kafka::ApiKey api, std::uint8_t version_byte, std::string_view body,
                    Response& out) {
  const std::int16_t version = fold_version(api, version_byte);
  const ringfeed::Status s = kafka::decode_response(body, version, out);
  if (s) return true;
  const std::string context = kafka::api_name(api) + " v";
  // An UNSUPPORTED_VERSION ApiVersions answer is decoded (and named) as v0.
  if (s.error().message.rfind(context, 0) != 0) {
    fail("the error does not name " + context + std::to_string(version) + ": " + s.error().message);
  }
  return false;
}

// Writes the records of `b` as a new uncompressed batch and checks it decodes to the same.
void check_rewrite(const kafka::RecordBatch& b) {
  std::vector<kafka::OutRecord> records;
  records.reserve(b.records.size());
  for (const kafka::RecordView& r : b.records) {
    kafka::OutRecord o;
    if (!r.key_null) o.key = r.key;
    if (!r.value_null) o.value = r.value;
    o.timestamp = r.timestamp;
    for (const kafka::RecordHeaderView& h : b.headers_of(r)) {
      o.headers.push_back({h.key, h.value_null ? std::nullopt : std::optional(h.value)});
    }
    records.push_back(std::move(o));
  }
  if (records.empty()) return;
  std::string bytes;
  if (!kafka::append_record_batch(bytes, {}, records)) fail("a decoded batch does not encode");
  kafka::RecordBatch again;
  const kafka::BatchResult r = kafka::decode_record_batch(bytes, again);
  if (r.status != kafka::BatchStatus::complete || again.records.size() != b.records.size()) {
    fail("a batch re-encoded from decoded records does not decode: " + r.error);
  }
  for (std::size_t i = 0; i < b.records.size(); ++i) {
    const kafka::RecordView& x = b.records[i];
    const kafka::RecordView& y = again.records[i];
    if (x.key != y.key || x.key_null != y.key_null || x.value != y.value ||
        x.value_null != y.value_null || x.header_count != y.header_count) {
      fail("record " + std::to_string(i) + " changed in a re-encoded batch");
    }
  }
}

// Decodes the batches of a records section until the end, an incomplete batch or an
// error, with `limits`.
void decode_batches(std::string_view records, const kafka::RecordLimits& limits) {
  kafka::RecordBatch batch;
  while (!records.empty()) {
    const Exact copy(records);
    const kafka::BatchResult r = kafka::decode_record_batch(copy.view(), batch, limits);
    if (r.status == kafka::BatchStatus::error) {
      if (r.error.rfind("record batch at offset ", 0) != 0) fail("unnamed batch error: " + r.error);
      return;
    }
    if (r.status == kafka::BatchStatus::incomplete) {
      if (r.size <= records.size()) fail("incomplete, yet the input holds the size it asks for");
      return;
    }
    if (r.size == 0 || r.size > records.size()) fail("a complete batch of a bad size");
    check_rewrite(batch);
    // Any cut of a whole batch is incomplete, never an error (its magic is 2).
    const std::size_t cut = r.size / 2 + records.size() % (r.size / 2 + 1);
    if (cut < r.size) {
      const Exact part(records.substr(0, cut));
      kafka::RecordBatch scratch;
      const kafka::BatchResult p = kafka::decode_record_batch(part.view(), scratch, limits);
      if (p.status != kafka::BatchStatus::incomplete) {
        fail("a batch cut to " + std::to_string(cut) + " of " + std::to_string(r.size) +
             " bytes is " + kafka::to_string(p.status) + " " + p.error);
      }
    }
    records.remove_prefix(r.size);
  }
}

void decode_all_batches(std::string_view records) {
  decode_batches(records, {.max_decompressed_size = 1 << 20});
  decode_batches(records, {.max_batch_size = 4096, .max_decompressed_size = 4096});
}

// A copy of `records` in which every whole batch has the CRC of its bytes.
Exact with_crcs_set(std::string_view records) {
  std::string out(records);
  std::size_t pos = 0;
  while (out.size() - pos >= kafka::kBatchHeaderSize) {
    kafka::Reader r(std::string_view(out).substr(pos), "batch");
    r.int64("base_offset");
    const std::int32_t length = r.int32("batch_length");
    if (length < 0 ||
        out.size() - pos - kafka::kBatchLogOverhead < static_cast<std::size_t>(length)) {
      break;
    }
    const std::size_t end = pos + kafka::kBatchLogOverhead + static_cast<std::size_t>(length);
    if (end < pos + kafka::kBatchHeaderSize) break;
    const std::string_view covered = std::string_view(out).substr(
        pos + kafka::kBatchAttributesOffset, end - pos - kafka::kBatchAttributesOffset);
    const std::uint32_t crc =
        ringfeed::io::crc32c(std::as_bytes(std::span(covered.data(), covered.size())));
    std::string patched;
    kafka::Writer(patched).uint32(crc);
    out.replace(pos + kafka::kBatchCrcOffset, 4, patched);
    pos = end;
  }
  return Exact(out);
}

void frames(std::string_view stream) {
  const kafka::FrameLimits limits{.max_frame_size = 1 << 16};
  while (!stream.empty()) {
    const kafka::ResponseFrame f = kafka::read_response_frame(stream, limits);
    if (f.status == kafka::FrameStatus::need_more) {
      if (f.size <= stream.size()) fail("need_more, yet the input holds the size it asks for");
      return;
    }
    if (f.status == kafka::FrameStatus::error) {
      // The verdict rests on the size prefix alone.
      const std::string more = std::string(stream) + "more";
      if (kafka::read_response_frame(more, limits).error != f.error) fail("an error changed");
      return;
    }
    const Exact cut(stream.substr(0, f.size - 1));
    if (kafka::read_response_frame(cut.view(), limits).status != kafka::FrameStatus::need_more) {
      fail("a complete frame cut by one byte is not need_more");
    }
    stream.remove_prefix(f.size);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t target = data[0];
  const std::uint8_t version = data[1];
  const std::string_view body(reinterpret_cast<const char*>(data) + 2, size - 2);
  const Exact exact(body);
  const std::string_view in = exact.view();
  switch (target % 16) {
    case 0: {
      kafka::ApiVersionsResponse r;
      decode_checked(kafka::ApiKey::api_versions, version, in, r);
      break;
    }
    case 1: {
      kafka::MetadataResponse r;
      decode_checked(kafka::ApiKey::metadata, version, in, r);
      break;
    }
    case 2: {
      kafka::ListOffsetsResponse r;
      decode_checked(kafka::ApiKey::list_offsets, version, in, r);
      break;
    }
    case 3: {
      kafka::FetchResponse r;
      if (decode_checked(kafka::ApiKey::fetch, version, in, r)) {
        for (const auto& t : r.responses) {
          for (const auto& p : t.partitions) decode_all_batches(p.records);
        }
      }
      break;
    }
    case 4: {
      kafka::OffsetCommitResponse r;
      decode_checked(kafka::ApiKey::offset_commit, version, in, r);
      break;
    }
    case 5: {
      kafka::OffsetFetchResponse r;
      decode_checked(kafka::ApiKey::offset_fetch, version, in, r);
      break;
    }
    case 6: {
      kafka::FindCoordinatorResponse r;
      decode_checked(kafka::ApiKey::find_coordinator, version, in, r);
      break;
    }
    case 7: {
      kafka::JoinGroupResponse r;
      if (decode_checked(kafka::ApiKey::join_group, version, in, r)) {
        for (const auto& m : r.members) {
          kafka::ConsumerSubscription s;
          static_cast<void>(kafka::decode_consumer_subscription(m.metadata, s));
        }
        // As the elected leader: every member's subscription read, the partitions split.
        kafka::GroupMember g({.group = "g", .topic = "t"});
        r.error_code = 0;
        r.leader = r.member_id;
        g.on_join(r, 0);
        const kafka::SyncGroupRequest sync = g.sync_request({0, 1, 2, 3});
        if (!r.member_id.empty() && sync.assignments.size() > r.members.size()) {
          fail("the leader assigned more members than joined");
        }
      }
      break;
    }
    case 8: {
      kafka::SyncGroupResponse r;
      if (decode_checked(kafka::ApiKey::sync_group, version, in, r)) {
        kafka::ConsumerAssignment a;
        static_cast<void>(kafka::decode_consumer_assignment(r.assignment, a));
        // As a member waiting for its assignment.
        kafka::GroupMember g({.group = "g", .topic = "t"});
        kafka::JoinGroupResponse joined;
        joined.generation_id = 1;
        joined.leader = "l";
        joined.member_id = "m";
        g.on_join(joined, 0);
        static_cast<void>(g.sync_request({}));
        g.on_sync(r, 0);
      }
      break;
    }
    case 9: {
      kafka::HeartbeatResponse r;
      decode_checked(kafka::ApiKey::heartbeat, version, in, r);
      break;
    }
    case 10: {
      kafka::LeaveGroupResponse r;
      decode_checked(kafka::ApiKey::leave_group, version, in, r);
      break;
    }
    case 11: {
      kafka::ConsumerSubscription s;
      if (kafka::decode_consumer_subscription(in, s)) {
        kafka::ConsumerSubscription again;
        if (!kafka::decode_consumer_subscription(kafka::encode_consumer_subscription(s), again) ||
            again.topics != s.topics || again.user_data != s.user_data) {
          fail("a subscription does not survive re-encoding");
        }
      }
      break;
    }
    case 12: {
      kafka::ConsumerAssignment a;
      if (kafka::decode_consumer_assignment(in, a)) {
        kafka::ConsumerAssignment again;
        if (!kafka::decode_consumer_assignment(kafka::encode_consumer_assignment(a), again) ||
            again.assigned.size() != a.assigned.size()) {
          fail("an assignment does not survive re-encoding");
        }
      }
      break;
    }
    case 13:
      decode_all_batches(in);
      break;
    case 14:
      frames(in);
      break;
    case 15:
      decode_all_batches(with_crcs_set(in).view());
      break;
  }
  return 0;
}
