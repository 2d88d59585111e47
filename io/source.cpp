// open_source: reads the scheme of a source URI and hands the rest to that source; and
// Source::poll_batches for sources that hand records over one at a time.
// `file:` parameters are parsed here, `redis:` ones in redis_source.cpp and `kafka:` ones
// in kafka_source.cpp, strictly: a typo in a parameter must not silently fall back to a
// default.
#include <cerrno>
#include <string>
#include <utility>

#include "io/kafka_source.hpp"
#include "io/local_log_source.hpp"
#include "io/redis_source.hpp"
#include "io/source.hpp"

namespace ringfeed::io {

namespace {

Error bad_uri(std::string_view uri, const std::string& what) {
  return Error{"source URI '" + std::string(uri) + "': " + what, EINVAL};
}

struct FileUri {
  std::string dir;
  LocalLogOptions local;
};

// file:DIR[?format=framed|lines]
Result<FileUri> parse_file_uri(std::string_view uri, std::string_view rest) {
  const std::size_t q = rest.find('?');
  const std::string_view dir = rest.substr(0, q);
  if (dir.empty()) return bad_uri(uri, "no directory after 'file:' (expected file:DIR)");

  LocalLogOptions local;
  bool format_seen = false;
  if (q != std::string_view::npos) {
    std::string_view query = rest.substr(q + 1);
    for (;;) {
      const std::size_t amp = query.find('&');
      const std::string_view param = query.substr(0, amp);
      const std::size_t eq = param.find('=');
      const std::string_view name = param.substr(0, eq);
      if (param.empty()) return bad_uri(uri, "empty parameter");
      if (name != "format") {
        return bad_uri(uri, "unknown parameter '" + std::string(name) +
                                "' (file: takes only format=framed|lines)");
      }
      if (format_seen) return bad_uri(uri, "parameter 'format' given twice");
      format_seen = true;
      const std::string_view value =
          eq == std::string_view::npos ? std::string_view{} : param.substr(eq + 1);
      if (value == "framed") {
        local.format = LogFormat::framed;
      } else if (value == "lines") {
        local.format = LogFormat::lines;
      } else {
        return bad_uri(uri, "format '" + std::string(value) + "' is not framed or lines");
      }
      if (amp == std::string_view::npos) break;
      query = query.substr(amp + 1);
    }
  }
  return FileUri{std::string(dir), local};
}

// One stream per partition.
Status streams_match(std::string_view uri, const RedisSourceOptions& parsed,
                     const SourceOptions& options) {
  if (options.partitions != 0 && options.partitions != parsed.streams.size()) {
    return bad_uri(uri, std::to_string(parsed.streams.size()) + " streams for " +
                            std::to_string(options.partitions) + " partitions");
  }
  return Ok{};
}

// Pinned partitions: one ring each.
Status pinned_match(std::string_view uri, const KafkaSourceOptions& parsed,
                    const SourceOptions& options) {
  if (options.partitions != 0 && !parsed.partitions.empty() &&
      options.partitions != parsed.partitions.size()) {
    return bad_uri(uri, std::to_string(parsed.partitions.size()) + " Kafka partitions for " +
                            std::to_string(options.partitions) + " partitions");
  }
  return Ok{};
}

Error unknown_scheme(std::string_view uri, std::string_view scheme) {
  return bad_uri(uri, "unknown scheme '" + std::string(scheme) +
                          "' (this build reads file:DIR, redis://HOST:PORT?streams=... and "
                          "kafka://HOST:PORT?topic=...)");
}

}  // namespace

Result<std::size_t> Source::poll_batches(BatchSink& sink, std::chrono::milliseconds timeout) {
  return poll(
      [&sink](const SourceRecord& r) {
        return sink.take(r.partition, {&r, 1}) == 1;
      },
      timeout);
}

Result<std::unique_ptr<Source>> open_source(std::string_view uri, const SourceOptions& options) {
  const std::size_t colon = uri.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return bad_uri(uri, "no scheme (expected file:DIR)");
  }
  const std::string_view scheme = uri.substr(0, colon);
  if (scheme == "file") {
    auto parsed = parse_file_uri(uri, uri.substr(colon + 1));
    if (!parsed) return parsed.error();
    parsed->local.partitions = options.partitions;
    return open_local_log(parsed->dir, parsed->local, std::string(uri));
  }
  if (scheme == "redis") {
    auto parsed = parse_redis_uri(uri);
    if (!parsed) return parsed.error();
    if (Status ok = streams_match(uri, *parsed, options); !ok) return ok.error();
    return open_redis(*parsed, std::string(uri));
  }
  if (scheme == "kafka") {
    auto parsed = parse_kafka_uri(uri);
    if (!parsed) return parsed.error();
    if (Status ok = pinned_match(uri, *parsed, options); !ok) return ok.error();
    auto source = open_kafka(*parsed, std::string(uri));
    if (source && options.partitions != 0 && (*source)->partitions() != options.partitions) {
      return bad_uri(uri, "the topic has " + std::to_string((*source)->partitions()) +
                              " partitions, not " + std::to_string(options.partitions));
    }
    return source;
  }
  return unknown_scheme(uri, scheme);
}

Status check_source_uri(std::string_view uri, const SourceOptions& options) {
  const std::size_t colon = uri.find(':');
  if (colon == std::string_view::npos || colon == 0) {
    return bad_uri(uri, "no scheme (expected file:DIR)");
  }
  const std::string_view scheme = uri.substr(0, colon);
  if (scheme == "file") {
    if (auto parsed = parse_file_uri(uri, uri.substr(colon + 1)); !parsed) return parsed.error();
  } else if (scheme == "redis") {
    auto parsed = parse_redis_uri(uri);
    if (!parsed) return parsed.error();
    if (Status ok = streams_match(uri, *parsed, options); !ok) return ok;
  } else if (scheme == "kafka") {
    auto parsed = parse_kafka_uri(uri);
    if (!parsed) return parsed.error();
    if (Status ok = pinned_match(uri, *parsed, options); !ok) return ok;
  } else {
    return unknown_scheme(uri, scheme);
  }
  return Ok{};
}

}  // namespace ringfeed::io
