#pragma once
// Test helpers: decode a byte string in chunks into owned records.

#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>

#include "lariv/protocol/protocol.hpp"

namespace lariv::protocol::test {

/// One decode() outcome with its message re-encoded, so it outlives the decoder's views.
struct outcome {
    decode_status status = decode_status::need_more;
    error_code error = error_code::internal;
    bool fatal = false;
    std::string frame;  // canonical encoding of the message, when good
};

/// Feeds `in` to `d` in pieces of `chunk` bytes (0: all at once) and collects every result
/// other than need_more. Checks the decoder's contract on the way.
template <class Decoder>
std::vector<outcome> decode_all(Decoder& d, std::string_view in, std::size_t chunk = 0) {
    std::vector<outcome> out;
    std::size_t offset = 0;
    while (offset < in.size()) {
        const std::size_t n = chunk == 0 ? in.size() - offset : std::min(chunk, in.size() - offset);
        std::string_view piece = in.substr(offset, n);
        offset += n;
        while (!piece.empty()) {
            const auto r = d.decode(piece);
            REQUIRE(r.consumed <= piece.size());
            REQUIRE(d.buffered() <= d.limits().max_buffered());
            piece.remove_prefix(r.consumed);
            if (r.status == decode_status::need_more) {
                REQUIRE(piece.empty());
                break;
            }
            outcome o{r.status, r.error, r.fatal, {}};
            if (r.status == decode_status::good) {
                encode(o.frame, r.message);
            }
            out.push_back(std::move(o));
            if (r.fatal) {
                return out;
            }
        }
    }
    return out;
}

/// Encodes one message.
template <class M>
std::string enc(const M& m) {
    std::string s;
    encode(s, m);
    return s;
}

/// A fixed id used across tests.
inline constexpr session_id id_a = session_id::make(0x01020304, 0xa0b0c0d0, 7, 42);
/// Another.
inline constexpr session_id id_b = session_id::make(0xffffffff, 0, 0xfffffffe, 0);

}  // namespace lariv::protocol::test
