// Fetcher::start by URI: the options are checked before the source is opened, so a bad
// flag is reported without touching the upstream. Kept apart from fetcher.cpp so that a
// program that brings its own io::Source does not link the URI sources.
#include "ringfeed/fetcher.hpp"

namespace ringfeed {

Result<std::unique_ptr<Fetcher>> Fetcher::start(const FetcherOptions& options) {
  if (auto ok = check_fetcher_options(options); !ok) return ok.error();
  auto source = io::open_source(options.source, {.partitions = options.partitions});
  if (!source) return source.error();
  return start(options, std::move(source.value()));
}

}  // namespace ringfeed
