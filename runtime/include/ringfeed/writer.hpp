// The writer API: one writer per partition ring publishes batches of messages.
// The fetcher uses it; so do the demo, the bench tools and the tests.
#pragma once

#include "shm/ring_writer.hpp"

namespace ringfeed {

using Writer = shm::RingWriter;
using WriterOptions = shm::RingWriterOptions;
using OutMessage = shm::OutMessage;
using PublishStatus = shm::PublishStatus;
using Reservation = shm::Reservation;

}  // namespace ringfeed
