// libFuzzer entry point for the cluster link decoder (PROTOCOL.md section 11; RELIABILITY.md S1).
//
// Input: the first byte picks a chunk size (1..192, then 256 B..1 MiB); the rest is the byte
// stream a peer node sends. It checks:
//  1. chunked decoding gives the same results as one-shot decoding (differential);
//  2. the decoder never holds more than limits::max_buffered() bytes, never consumes more than
//     it was given, and need_more means every byte was taken;
//  3. every error is fatal, and a failed decoder refuses everything after without consuming;
//  4. every decoded frame re-encodes to a frame that decodes, whole, to the same frame, and that
//     frame re-encodes to the same bytes.
// Any bytes are allowed: errors are expected results, only a broken check aborts.
// LARIV_FUZZ_SMALL=1 builds with small limits (96-byte lines and JSON, 64-byte payloads) so that
// the length checks are reachable.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "lariv/protocol/link.hpp"

#ifndef LARIV_FUZZ_SMALL
#define LARIV_FUZZ_SMALL 0
#endif

namespace {

using namespace lariv::protocol;

#define LARIV_FUZZ_CHECK(cond)                                                            \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            std::abort();                                                                 \
        }                                                                                 \
    } while (false)

limits fuzz_limits() {
    limits l;
    if (LARIV_FUZZ_SMALL) {
        // A ROUTE line is 73 bytes before its count and token, and the smallest LINK JSON 56:
        // 96 lets short ones through and sends long ones into the length checks.
        l.max_line = 96;
        l.max_payload = 64;
        l.max_json = 96;
        l.max_json_depth = 3;
    }
    return l;
}

// The canonical form of a frame is never longer than what was decoded, but the round-trip
// decoder gets some slack on the line and JSON limits anyway: it checks the codec, not limits.
limits round_trip_limits(limits l) {
    l.max_line += 64;
    l.max_json += 64;
    return l;
}

// One decode() outcome, in a form that outlives the decoder's views.
struct record {
    decode_status status;
    error_code error;
    std::string frame;  // the frame re-encoded, when good

    friend bool operator==(const record&, const record&) = default;
};

// Checks property 4 while `m`'s views are still valid; returns the canonical encoding.
std::string check_round_trip(const link_frame& m, const limits& lim) {
    std::string frame;
    encode(frame, m);
    link_decoder d(round_trip_limits(lim));
    const auto r = d.decode(frame);
    LARIV_FUZZ_CHECK(r.status == decode_status::good);
    LARIV_FUZZ_CHECK(r.consumed == frame.size());
    LARIV_FUZZ_CHECK(r.message == m);
    std::string again;
    encode(again, r.message);
    LARIV_FUZZ_CHECK(again == frame);
    return frame;
}

// Decodes `in` in chunks of `chunk` bytes (everything at once when chunk == 0).
std::vector<record> decode_stream(std::string_view in, std::size_t chunk, const limits& lim) {
    link_decoder d(lim);
    std::vector<record> out;
    std::size_t offset = 0;
    while (offset < in.size()) {
        const std::size_t n = chunk == 0 ? in.size() - offset : std::min(chunk, in.size() - offset);
        std::string_view piece = in.substr(offset, n);
        offset += n;
        while (!piece.empty()) {
            const auto r = d.decode(piece);
            LARIV_FUZZ_CHECK(r.consumed <= piece.size());
            LARIV_FUZZ_CHECK(d.buffered() <= lim.max_buffered());
            piece.remove_prefix(r.consumed);
            if (r.status == decode_status::need_more) {
                LARIV_FUZZ_CHECK(piece.empty());
                break;
            }
            if (r.status == decode_status::good) {
                out.push_back({r.status, error_code::internal, check_round_trip(r.message, lim)});
                continue;
            }
            LARIV_FUZZ_CHECK(r.fatal);  // every link error is fatal
            out.push_back({r.status, r.error, {}});
            const auto again = d.decode(piece);
            LARIV_FUZZ_CHECK(again.status == decode_status::bad && again.fatal);
            LARIV_FUZZ_CHECK(again.error == r.error);
            LARIV_FUZZ_CHECK(again.consumed == 0);
            return out;
        }
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    static const limits lim = fuzz_limits();
    // 0..191 give chunks of 1..192 bytes (every split of small frames); 192..255 give
    // 256 B..1 MiB, so that large production-size frames are not always fed a byte at a time.
    const std::size_t chunk =
        data[0] < 192 ? std::size_t{data[0]} + 1 : std::size_t{256} << ((data[0] - 192) % 13);
    const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
    const auto whole = decode_stream(in, 0, lim);
    const auto chunked = decode_stream(in, chunk, lim);
    LARIV_FUZZ_CHECK(whole == chunked);
    return 0;
}
