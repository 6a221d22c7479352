#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/error.hpp"

#include <set>

#include <doctest/doctest.h>

#include "helpers.hpp"

using namespace lariv::protocol;
using namespace lariv::protocol::test;

namespace {

const std::string ida = id_a.to_string();

/// Decodes `in` whole and returns the first result (with the message re-encoded).
template <class Decoder = command_decoder>
outcome first(std::string_view in, const limits& lim = {}) {
    Decoder d(lim);
    auto out = decode_all(d, in);
    REQUIRE_FALSE(out.empty());
    return out.front();
}

/// Checks `line` gives a non-fatal `code`, and that a PING after it still decodes.
template <class Decoder = command_decoder>
void check_recoverable(const std::string& bad_frame, error_code code, const limits& lim = {}) {
    CAPTURE(bad_frame);
    for (std::size_t chunk : {0, 1}) {
        Decoder d(lim);
        const auto out = decode_all(d, bad_frame + "PING\r\n", chunk);
        REQUIRE(out.size() == 2);
        CHECK(out[0].status == decode_status::bad);
        CHECK(out[0].error == code);
        CHECK_FALSE(out[0].fatal);
        CHECK(out[1].status == decode_status::good);
        CHECK(out[1].frame == "PING\r\n");
    }
}

/// Checks `in` gives a fatal `code`, after which the decoder refuses everything.
template <class Decoder = command_decoder>
void check_fatal(const std::string& in, error_code code, const limits& lim = {}) {
    CAPTURE(in);
    for (std::size_t chunk : {0, 1}) {
        Decoder d(lim);
        const auto out = decode_all(d, in, chunk);
        REQUIRE_FALSE(out.empty());
        CHECK(out.back().status == decode_status::bad);
        CHECK(out.back().error == code);
        CHECK(out.back().fatal);
        const auto again = d.decode(std::string_view("PING\r\n"));
        CHECK(again.status == decode_status::bad);
        CHECK(again.fatal);
        CHECK(again.error == code);
        CHECK(again.consumed == 0);
    }
}

}  // namespace

TEST_CASE("error codes have stable unique names and numbers") {
    std::set<std::string_view> names;
    std::set<std::uint16_t> numbers;
    for (const auto c : all_error_codes()) {
        names.insert(to_string(c));
        numbers.insert(to_number(c));
        CHECK(parse_error_code(to_string(c)) == c);
    }
    CHECK(names.size() == all_error_codes().size());
    CHECK(numbers.size() == all_error_codes().size());
    CHECK(all_error_codes().size() == 18);
    CHECK(to_number(error_code::bad_syntax) == 100);
    CHECK(to_number(error_code::unknown_command) == 101);
    CHECK(to_number(error_code::frame_too_large) == 103);
    CHECK(to_number(error_code::not_authorized) == 107);
    CHECK(to_number(error_code::unknown_session) == 200);
    CHECK(to_number(error_code::stale_session) == 201);
    CHECK(to_number(error_code::queue_full) == 202);
    CHECK(to_number(error_code::rate_limited) == 203);
    CHECK(to_number(error_code::node_unreachable) == 204);
    CHECK(to_number(error_code::draining) == 300);
    CHECK(to_number(error_code::internal) == 304);
    CHECK(parse_error_code("UNKNOWN_SESSION") == error_code::unknown_session);
    CHECK_FALSE(parse_error_code("no_such_code"));
    CHECK_FALSE(parse_error_code(""));
    CHECK(is_fatal(error_code::frame_too_large));
    CHECK(is_fatal(error_code::line_too_long));
    CHECK_FALSE(is_fatal(error_code::unknown_session));
    CHECK_FALSE(is_fatal(error_code::bad_syntax));
}

TEST_CASE("unknown verbs are reported and the stream goes on") {
    check_recoverable("FROB 1 2\r\n", error_code::unknown_command);
    check_recoverable("MSG " + ida + " 1\r\n", error_code::unknown_command);  // server-only verb
    check_recoverable<reply_decoder>("SEND " + ida + " 1\r\n", error_code::unknown_command);
    check_recoverable<reply_decoder>("+NOPE 3\r\n", error_code::unknown_command);
}

TEST_CASE("bad arguments are bad_syntax and the stream goes on") {
    check_recoverable("PING now\r\n", error_code::bad_syntax);
    check_recoverable("STATS x\r\n", error_code::bad_syntax);
    check_recoverable("QUIT 1\r\n", error_code::bad_syntax);
    check_recoverable("PONG x\r\n", error_code::bad_syntax);
    check_recoverable("INFO\r\n", error_code::bad_syntax);
    check_recoverable("INFO 123\r\n", error_code::bad_syntax);
    check_recoverable("INFO " + ida + " extra\r\n", error_code::bad_syntax);
    check_recoverable("KICK " + ida + "0\r\n", error_code::bad_syntax);
    check_recoverable("LIST limit=0\r\n", error_code::bad_syntax);
    check_recoverable("LIST limit=1001\r\n", error_code::bad_syntax);
    check_recoverable("LIST limit=-1\r\n", error_code::bad_syntax);
    check_recoverable("LIST limit=3 limit=3\r\n", error_code::bad_syntax);
    check_recoverable("LIST after=zz\r\n", error_code::bad_syntax);
    check_recoverable("LIST after\r\n", error_code::bad_syntax);
    check_recoverable("LIST sort=1\r\n", error_code::bad_syntax);
    check_recoverable("PING\x01\r\n", error_code::bad_syntax);
    check_recoverable("PING\rX\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("+OK a\x7f\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("-ERR no_such_code x\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("-ERR\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("ACK t\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("ACK t fine\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("ACK t ok more\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("ACK b@d ok\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("PING x\r\n", error_code::bad_syntax);
}

TEST_CASE("a SEND with a bad id or token skips its payload, then reports bad_syntax") {
    // The payload holds something that would decode as a command: it must be skipped.
    check_recoverable("SEND nothex 6\r\nQUIT\r\n\r\n", error_code::bad_syntax);
    check_recoverable("SEND " + ida + " 6 b/d\r\nQUIT\r\n\r\n", error_code::bad_syntax);
    check_recoverable("SEND " + ida + " 6 " + std::string(65, 't') + "\r\nQUIT\r\n\r\n",
                      error_code::bad_syntax);
    check_recoverable("SEND " + ida + " 6 tok extra\r\nQUIT\r\n\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("MSG " + ida + "z 4\r\nPING\r\n", error_code::bad_syntax);
    check_recoverable<reply_decoder>("+INFO 2 x\r\n{}\r\n", error_code::bad_syntax);
}

TEST_CASE("a SEND without a usable count is fatal: the payload's end is unknown") {
    check_fatal("SEND " + ida + "\r\nxx\r\n", error_code::bad_syntax);
    check_fatal("SEND " + ida + " -1\r\n", error_code::bad_syntax);
    check_fatal("SEND " + ida + " 0x10\r\n", error_code::bad_syntax);
    check_fatal("SEND " + ida + " +5\r\n", error_code::bad_syntax);
    check_fatal<reply_decoder>("MSG " + ida + " five\r\n", error_code::bad_syntax);
    check_fatal<reply_decoder>("+LIST\r\n", error_code::bad_syntax);
}

TEST_CASE("a payload not followed by a line end is fatal") {
    check_fatal("SEND " + ida + " 3\r\nabcd\r\n", error_code::bad_syntax);
    check_fatal("SEND " + ida + " 3\r\nabc\rX", error_code::bad_syntax);
    check_fatal<reply_decoder>("MSG " + ida + " 0\r\nX", error_code::bad_syntax);
    check_fatal<reply_decoder>("+STATS 2\r\n{}}\r\n", error_code::bad_syntax);
}

TEST_CASE("a declared payload above max_payload is refused before any payload byte") {
    limits lim;
    lim.max_payload = 100;
    const std::string header = "SEND " + ida + " 101\r\n";
    command_decoder d(lim);
    const auto r = d.decode(header);  // no payload bytes at all
    CHECK(r.status == decode_status::bad);
    CHECK(r.error == error_code::frame_too_large);
    CHECK(r.fatal);
    CHECK(d.buffered() == 0);
    // Exactly the limit is fine.
    command_decoder ok(lim);
    const auto out = decode_all(ok, "SEND " + ida + " 100\r\n" + std::string(100, 'p') + "\r\n", 1);
    REQUIRE(out.size() == 1);
    CHECK(out[0].status == decode_status::good);
    check_fatal("SEND " + ida + " 4294967296\r\n", error_code::frame_too_large);  // 4 GiB
    check_fatal("SEND " + ida + " 18446744073709551615\r\n", error_code::frame_too_large);
    check_fatal("SEND " + ida + " 99999999999999999999999999\r\n", error_code::frame_too_large);
    check_fatal<reply_decoder>("MSG " + ida + " 101\r\n", error_code::frame_too_large, lim);
}

TEST_CASE("the count's 20-digit limit applies to the text: leading zeros count (1*20DIGIT)") {
    limits lim;
    lim.max_payload = 100;
    // 20 digits with leading zeros: within the grammar, the value 5 is fine.
    command_decoder ok(lim);
    const auto out = decode_all(ok, "SEND " + ida + " 00000000000000000005\r\nhello\r\n", 1);
    REQUIRE(out.size() == 1);
    CHECK(out[0].status == decode_status::good);
    // 21 digits whose value is small: outside the grammar, refused like an oversized count.
    check_fatal("SEND " + ida + " 000000000000000000005\r\n", error_code::frame_too_large, lim);
    check_fatal("SEND " + ida + " " + std::string(4000, '0') + "1\r\n", error_code::frame_too_large, lim);
    check_fatal<reply_decoder>("MSG " + ida + " 000000000000000000001\r\n", error_code::frame_too_large, lim);
    check_fatal<reply_decoder>("+STATS 000000000000000000002\r\n", error_code::frame_too_large, lim);
}

TEST_CASE("a JSON body above max_json is refused before any body byte") {
    limits lim;
    lim.max_json = 50;
    check_fatal<reply_decoder>("+HELLO 51\r\n", error_code::frame_too_large, lim);
    check_fatal<reply_decoder>("+STATS 1000000\r\n", error_code::frame_too_large, lim);
    reply_decoder d(lim);
    const auto out = decode_all(d, "+LIST 50\r\n" + std::string(50, ' ') + "\r\n");
    REQUIRE(out.size() == 1);
    CHECK(out[0].status == decode_status::good);
}

TEST_CASE("a control line is limited to max_line bytes, found without waiting for a newline") {
    limits lim;
    lim.max_line = 16;
    // Exactly max_line bytes, with either terminator, is accepted.
    const std::string max_line = "PING" + std::string(12, ' ');
    CHECK(first(max_line + "\r\n", lim).status == decode_status::good);
    CHECK(first(max_line + "\n", lim).status == decode_status::good);
    // One more, and it is refused...
    check_fatal(max_line + " \r\n", error_code::line_too_long, lim);
    check_fatal(max_line + " \n", error_code::line_too_long, lim);
    // ...also when the newline never comes: max_line + 2 bytes without one are enough.
    for (std::size_t chunk : {0, 1, 5}) {
        command_decoder d(lim);
        const auto out = decode_all(d, std::string(18, 'x'), chunk);
        REQUIRE(out.size() == 1);
        CHECK(out[0].error == error_code::line_too_long);
        CHECK(d.buffered() <= 17);
    }
    command_decoder d(lim);
    CHECK(decode_all(d, std::string(17, 'x'), 1).empty());  // still waiting
    check_fatal<reply_decoder>("+OK " + std::string(100, 'a') + "\r\n", error_code::line_too_long,
                               lim);
}

TEST_CASE("the buffer never exceeds max_buffered while a max-size frame trickles in") {
    limits lim;
    lim.max_line = 64;
    lim.max_payload = 1000;
    const std::string frame = "SEND " + ida + " 1000 tok\r\n" + std::string(1000, '\n') + "\r\n";
    command_decoder d(lim);
    std::size_t peak = 0;
    for (const char c : frame) {
        const auto r = d.decode(std::string_view(&c, 1));
        peak = std::max(peak, d.buffered());
        CHECK(r.consumed == 1);
    }
    CHECK(peak <= lim.max_buffered());
    CHECK(peak == 1002);  // the payload and its "\r\n", never the header
}

TEST_CASE("after a fatal error the decoder refuses everything, consuming nothing") {
    check_fatal("SEND " + ida + " nope\r\nPING\r\n", error_code::bad_syntax);
    check_fatal<reply_decoder>("MSG " + ida + " 99999999999\r\n", error_code::frame_too_large);
}

TEST_CASE("HELLO JSON is bounded and typed") {
    limits lim;
    lim.max_json_depth = 2;
    lim.max_json = 40;
    CHECK(first(R"(HELLO {"future":{"a":1}})"
                "\r\n",
                lim)
              .status == decode_status::good);
    check_recoverable(R"(HELLO {"x":{"a":[1]}})"
                      "\r\n",
                      error_code::bad_json, lim);  // depth 3
    check_recoverable("HELLO {\"name\":\"" + std::string(40, 'n') + "\"}\r\n", error_code::bad_json,
                      lim);  // over max_json
    check_recoverable("HELLO [1]\r\n", error_code::bad_json);
    check_recoverable("HELLO 1\r\n", error_code::bad_json);
    check_recoverable("HELLO {\r\n", error_code::bad_json);
    check_recoverable("HELLO {\"version\":\"1\"}\r\n", error_code::bad_json);
    check_recoverable("HELLO {\"version\":-1}\r\n", error_code::bad_json);
    check_recoverable("HELLO {\"version\":1.5}\r\n", error_code::bad_json);
    check_recoverable("HELLO {\"version\":4294967296}\r\n", error_code::bad_json);
    check_recoverable("HELLO {\"name\":7}\r\n", error_code::bad_json);
    check_recoverable("HELLO {\"auth\":null}\r\n", error_code::bad_json);
    check_recoverable("HELLO {\"verbose\":1}\r\n", error_code::bad_json);
    check_recoverable("HELLO {\"name\":\"\xff\"}\r\n", error_code::bad_json);  // not UTF-8
    // Unknown fields are ignored (forward compatibility).
    const auto o = first("HELLO {\"version\":3,\"future\":[1,2]}\r\n");
    CHECK(o.status == decode_status::good);
    CHECK(o.frame == "HELLO {\"version\":3}\r\n");
}
