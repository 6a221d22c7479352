// libFuzzer entry point for both decoders (RELIABILITY.md S1).
//
// Input: the first byte picks a chunk size (1..192, then 256 B..1 MiB); the rest is the byte
// stream. For the command decoder and the reply decoder alike it checks:
//  1. chunked decoding gives the same results as one-shot decoding (differential);
//  2. a decoder never holds more than limits::max_buffered() bytes, never consumes more than it
//     was given, and need_more means every byte was taken;
//  3. every decoded message re-encodes to a frame that decodes to the same message, whole.
// Any bytes are allowed: errors are expected results, only a broken check aborts.
// LARIV_FUZZ_SMALL=1 builds with 64-byte limits so that the length checks are reachable.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "lariv/protocol/protocol.hpp"

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
        l.max_line = 64;
        l.max_payload = 64;
        l.max_json = 64;
        l.max_json_depth = 3;
        l.max_list = 50;
    }
    return l;
}

// Re-encoding may lengthen a HELLO line a little (an explicit "version"), so the round-trip
// decoder gets some slack on the line and JSON limits; it checks the codec, not the limits.
limits round_trip_limits(limits l) {
    l.max_line += 64;
    l.max_json += 64;
    return l;
}

// One decode() outcome, in a form that outlives the decoder's views.
struct record {
    decode_status status;
    error_code error;
    bool fatal;
    std::string frame;  // the message re-encoded, when good

    friend bool operator==(const record&, const record&) = default;
};

template <class Decoder>
void check_round_trip(const std::string& frame, const limits& lim) {
    Decoder d(round_trip_limits(lim));
    const auto r = d.decode(frame);
    LARIV_FUZZ_CHECK(r.status == decode_status::good);
    LARIV_FUZZ_CHECK(r.consumed == frame.size());
    std::string again;
    encode(again, r.message);
    LARIV_FUZZ_CHECK(again == frame);
}

// Decodes `in` in chunks of `chunk` bytes (everything at once when chunk == 0).
template <class Decoder>
std::vector<record> decode_stream(std::string_view in, std::size_t chunk, const limits& lim) {
    Decoder d(lim);
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
            record rec{r.status,
                       r.status == decode_status::bad ? r.error : error_code::internal,
                       r.fatal,
                       {}};
            if (r.status == decode_status::good) {
                encode(rec.frame, r.message);
            } else {
                LARIV_FUZZ_CHECK(r.fatal == is_fatal(r.error) || r.error == error_code::bad_syntax);
            }
            out.push_back(std::move(rec));
            if (r.fatal) {
                // The decoder must stay failed, and refuse without consuming.
                const auto again = d.decode(piece);
                LARIV_FUZZ_CHECK(again.status == decode_status::bad && again.fatal);
                LARIV_FUZZ_CHECK(again.consumed == 0);
                return out;
            }
        }
    }
    return out;
}

template <class Decoder>
void check_decoder(std::string_view in, std::size_t chunk, const limits& lim) {
    const auto whole = decode_stream<Decoder>(in, 0, lim);
    const auto chunked = decode_stream<Decoder>(in, chunk, lim);
    LARIV_FUZZ_CHECK(whole == chunked);
    for (const auto& rec : whole) {
        if (rec.status == decode_status::good) {
            check_round_trip<Decoder>(rec.frame, lim);
        }
    }
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
    check_decoder<command_decoder>(in, chunk, lim);
    check_decoder<reply_decoder>(in, chunk, lim);
    return 0;
}
