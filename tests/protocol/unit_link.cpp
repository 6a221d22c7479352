// Unit tests of the cluster link codec (lariv/protocol/link.hpp, PROTOCOL.md section 11).
#include "lariv/protocol/link.hpp"

#include <array>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <new>
#include <span>
#include <stdexcept>

#include <doctest/doctest.h>

#include "helpers.hpp"

#if LARIV_COUNT_ALLOCATIONS
// GCC inlines these replacements into callers and then sees free() on memory from "new": the
// replacement pair is malloc/free by design.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

// Counts the allocations of this thread's tests, to check the hot paths allocate nothing. The
// replacement forwards to malloc/free, so it changes nothing else in the test executable.
namespace {
std::atomic<std::size_t> allocations{0};
}  // namespace

void* operator new(std::size_t n) {
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n == 0 ? 1 : n)) {
        return p;
    }
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept {
    std::free(p);
}
void operator delete(void* p, std::size_t /*n*/) noexcept {
    std::free(p);
}
#endif

using namespace lariv::protocol;
using namespace lariv::protocol::test;

namespace {

const std::string ida = id_a.to_string();
const std::string idb = id_b.to_string();
const std::string binary_payload = std::string("\0\r\n\nROUTE x 3\r\n\xff\xfe", 17) + "tail";

std::vector<link_frame> all_frames() {
    return {
        link_hello{},
        link_hello{1, "prod-eu", 2, 123, "s3cret"},
        link_hello{7, "caf\xc3\xa9 \"q\" \\ \t", std::numeric_limits<std::uint32_t>::max(),
                   std::numeric_limits<std::uint32_t>::max(),
                   std::string(max_link_token_size, 'k')},
        route_msg{id_a, id_b, "hello", ""},
        route_msg{id_b, id_a, "", "t-1"},
        route_msg{id_a, id_a, binary_payload, "Tok_en.9:x-y"},
        rack_msg{id_a, "m-17", std::nullopt},
        rack_msg{id_b, "x", error_code::queue_full},
        rack_msg{
            id_a,
            std::string_view("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ:."),
            error_code::node_unreachable},
        request_msg{0, link_op::info, id_a},
        request_msg{std::numeric_limits<std::uint64_t>::max(), link_op::kick, id_b},
        response_msg{0, std::nullopt, ""},
        response_msg{42, std::nullopt, R"({"id":"x","name":"n"})"},
        response_msg{43, error_code::stale_session, ""},
        response_msg{44, std::nullopt, binary_payload},
        ping_msg{},
        pong_msg{},
        err_msg{error_code::not_authorized, "cluster token mismatch"},
        err_msg{error_code::draining, ""},
    };
}

/// Checks `in` gives a fatal `code` at every chunking, after which the decoder refuses
/// everything without consuming.
void check_fatal(const std::string& in, error_code code, const limits& lim = {}) {
    CAPTURE(in);
    for (const std::size_t chunk : {std::size_t{0}, std::size_t{1}, std::size_t{7}}) {
        CAPTURE(chunk);
        link_decoder d(lim);
        const auto out = decode_all(d, in, chunk);
        REQUIRE_FALSE(out.empty());
        for (std::size_t i = 0; i + 1 < out.size(); ++i) {
            CHECK(out[i].status == decode_status::good);
        }
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

/// Decodes one whole frame and returns it (views into `frame` or the decoder).
link_frame decode_one(link_decoder& d, std::string_view frame) {
    const auto r = d.decode(frame);
    REQUIRE(r.status == decode_status::good);
    CHECK(r.consumed == frame.size());
    return r.message;
}

void check_good(const std::string& frame, const link_frame& want, const limits& lim = {}) {
    CAPTURE(frame);
    link_decoder d(lim);
    CHECK(decode_one(d, frame) == want);
}

}  // namespace

TEST_CASE("link: every frame round-trips at every split and every chunk size") {
    for (const auto& m : all_frames()) {
        const std::string frame = enc(m);
        CAPTURE(frame);
        for (std::size_t cut = 0; cut <= frame.size(); ++cut) {
            link_decoder d;
            const std::string_view first = std::string_view(frame).substr(0, cut);
            auto r = d.decode(first);
            if (r.status == decode_status::good) {
                CHECK(cut == frame.size());
                CHECK(r.message == m);
                continue;
            }
            REQUIRE(r.status == decode_status::need_more);
            REQUIRE(r.consumed == first.size());
            r = d.decode(std::string_view(frame).substr(cut));
            REQUIRE(r.status == decode_status::good);
            CHECK(r.consumed == frame.size() - cut);
            CHECK(r.message == m);
        }
        for (std::size_t chunk = 1; chunk <= frame.size(); ++chunk) {
            link_decoder d;
            const auto out = decode_all(d, frame, chunk);
            REQUIRE(out.size() == 1);
            CHECK(out[0].status == decode_status::good);
            CHECK(out[0].frame == frame);
        }
    }
}

TEST_CASE("link: a batch of every frame in one buffer decodes in order, in any chunking") {
    std::string batch;
    std::vector<std::string> frames;
    for (const auto& m : all_frames()) {
        frames.push_back(enc(m));
        batch += frames.back();
    }
    for (const std::size_t chunk : {0, 1, 2, 3, 7, 16, 64, 1000}) {
        CAPTURE(chunk);
        link_decoder d;
        const auto out = decode_all(d, batch, chunk);
        REQUIRE(out.size() == frames.size());
        for (std::size_t i = 0; i < frames.size(); ++i) {
            CHECK(out[i].status == decode_status::good);
            CHECK(out[i].frame == frames[i]);
        }
        CHECK(d.decode(std::string_view{}).status == decode_status::need_more);
        CHECK(d.buffered() == 0);
    }
}

TEST_CASE("link: wire forms are the documented ones") {
    CHECK(enc(link_hello{1, "c", 2, 123, "t"}) ==
          "LINK "
          "60\r\n{\"cluster\":\"c\",\"epoch\":123,\"node\":2,\"token\":\"t\",\"version\":1}\r\n");
    CHECK(enc(route_msg{id_a, id_b, "hello", ""}) ==
          "ROUTE " + ida + " " + idb + " 5\r\nhello\r\n");
    CHECK(enc(route_msg{id_a, id_b, "", "m-1"}) == "ROUTE " + ida + " " + idb + " 0 m-1\r\n\r\n");
    CHECK(enc(rack_msg{id_a, "m-1", std::nullopt}) == "RACK " + ida + " m-1 ok\r\n");
    CHECK(enc(rack_msg{id_a, "m-1", error_code::node_unreachable}) ==
          "RACK " + ida + " m-1 node_unreachable\r\n");
    CHECK(enc(request_msg{9, link_op::info, id_b}) == "REQ 9 INFO " + idb + "\r\n");
    CHECK(enc(request_msg{10, link_op::kick, id_b}) == "REQ 10 KICK " + idb + "\r\n");
    CHECK(enc(response_msg{9, std::nullopt, "{}"}) == "RES 9 ok 2\r\n{}\r\n");
    CHECK(enc(response_msg{10, std::nullopt, ""}) == "RES 10 ok 0\r\n\r\n");
    CHECK(enc(response_msg{11, error_code::unknown_session, ""}) == "RES 11 unknown_session\r\n");
    CHECK(enc(link_frame{ping_msg{}}) == "PING\r\n");
    CHECK(enc(link_frame{pong_msg{}}) == "PONG\r\n");
    CHECK(enc(link_frame{err_msg{error_code::not_authorized, "bad token"}}) ==
          "-ERR not_authorized bad token\r\n");
    CHECK(to_string(link_op::info) == "INFO");
    CHECK(to_string(link_op::kick) == "KICK");
}

TEST_CASE("link: encoders append and never clear") {
    std::string out = "prefix";
    encode(out, route_msg{id_a, id_b, "x", ""});
    encode(out, link_frame{ping_msg{}});
    CHECK(out == "prefix" + enc(route_msg{id_a, id_b, "x", ""}) + "PING\r\n");
    std::string header = "h";
    encode_route_header(header, id_a, id_b, 3, "tok");
    CHECK(header.size() - 1 <= max_route_header_size);
    header += "abc\r\n";
    CHECK(header == "h" + enc(route_msg{id_a, id_b, "abc", "tok"}));
    // The longest header fits max_route_header_size exactly.
    header.clear();
    encode_route_header(header, id_a, id_b, std::numeric_limits<std::size_t>::max(),
                        std::string(max_token_size, 't'));
    CHECK(header.size() == max_route_header_size);
}

TEST_CASE("link: typed input (bare newlines, lower case, extra blanks, blank lines) is accepted") {
    const std::string typed = "\n\r\nping\n  PoNg \t\r\nroute " + ida + "\t" + idb +
                              "  3  k\nabc\nrack " + ida + " k OK\nreq 5 kick " + idb +
                              "\nres 5 QUEUE_FULL\nres 6 Ok 2\n{}\n-err DRAINING  bye \n";
    link_decoder d;
    const auto out = decode_all(d, typed);
    std::vector<std::string> frames;
    for (const auto& o : out) {
        CHECK(o.status == decode_status::good);
        frames.push_back(o.frame);
    }
    const std::vector<std::string> want = {
        "PING\r\n",
        "PONG\r\n",
        enc(route_msg{id_a, id_b, "abc", "k"}),
        enc(rack_msg{id_a, "k", std::nullopt}),
        enc(request_msg{5, link_op::kick, id_b}),
        enc(response_msg{5, error_code::queue_full, ""}),
        enc(response_msg{6, std::nullopt, "{}"}),
        "-ERR draining bye\r\n",
    };
    CHECK(frames == want);
}

TEST_CASE("link: RES with a zero-byte body is just the terminator") {
    check_good("RES 7 ok 0\r\n\r\n", response_msg{7, std::nullopt, ""});
    check_good("RES 7 ok 0\n\n", response_msg{7, std::nullopt, ""});
    check_good("ROUTE " + ida + " " + idb + " 0\r\n\r\n", route_msg{id_a, id_b, "", ""});
    check_fatal("RES 7 ok 0\r\nX\r\n", error_code::bad_syntax);
    check_fatal("RES 7 ok 0\r\n\rX", error_code::bad_syntax);
}

TEST_CASE("link: LINK decodes its JSON fields") {
    check_good(
        "LINK 60\r\n{\"version\":1,\"cluster\":\"c\",\"node\":2,\"epoch\":123,\"token\":\"t\"}\r\n",
        link_hello{1, "c", 2, 123, "t"});
    // Unknown fields are ignored; whitespace is JSON's.
    const std::string j =
        R"({ "token" : "", "epoch":4294967295, "node":0, "cluster":"x", "version":2, "extra":[1,{}] })";
    check_good("LINK " + std::to_string(j.size()) + "\r\n" + j + "\r\n",
               link_hello{2, "x", 0, 4294967295U, ""});
}

TEST_CASE("link: every decode error is fatal") {
    const std::string r = "ROUTE " + ida + " " + idb + " ";
    // Verbs that are not link frames, client verbs included.
    check_fatal("FROB\r\n", error_code::unknown_command);
    check_fatal("PING\r\nSEND " + ida + " 1\r\nx\r\n", error_code::unknown_command);
    check_fatal("HELLO\r\n", error_code::unknown_command);
    check_fatal("+OK\r\n", error_code::unknown_command);
    check_fatal("MSG " + ida + " 1\r\nx\r\n", error_code::unknown_command);
    // ROUTE.
    check_fatal("ROUTE\r\n", error_code::bad_syntax);
    check_fatal("ROUTE " + ida + " 3\r\nabc\r\n", error_code::bad_syntax);
    check_fatal("ROUTE zz " + idb + " 3\r\nabc\r\n", error_code::bad_syntax);
    check_fatal("ROUTE " + ida + " " + idb + "0 3\r\nabc\r\n", error_code::bad_syntax);
    check_fatal(r + "\r\n", error_code::bad_syntax);
    check_fatal(r + "-3\r\nabc\r\n", error_code::bad_syntax);
    check_fatal(r + "3x\r\nabc\r\n", error_code::bad_syntax);
    check_fatal(r + "3 bad/token\r\nabc\r\n", error_code::bad_syntax);
    check_fatal(r + "3 tok extra\r\nabc\r\n", error_code::bad_syntax);
    check_fatal(r + "3\x01 tok\r\nabc\r\n", error_code::bad_syntax);
    check_fatal(r + "3\r\nabcd\r\n", error_code::bad_syntax);  // bad terminator
    check_fatal(r + "3\r\nabc\rX", error_code::bad_syntax);
    check_fatal(r + "4294967296000000000000\r\n", error_code::frame_too_large);
    check_fatal(r + "1048577\r\n", error_code::frame_too_large);
    // RACK.
    check_fatal("RACK\r\n", error_code::bad_syntax);
    check_fatal("RACK " + ida + "\r\n", error_code::bad_syntax);
    check_fatal("RACK " + ida + " tok\r\n", error_code::bad_syntax);
    check_fatal("RACK " + ida + " tok nope\r\n", error_code::bad_syntax);
    check_fatal("RACK " + ida + " tok ok extra\r\n", error_code::bad_syntax);
    check_fatal("RACK " + ida + " b@d ok\r\n", error_code::bad_syntax);
    check_fatal("RACK 123 tok ok\r\n", error_code::bad_syntax);
    check_fatal("RACK " + ida + " tok ok\x7f\r\n", error_code::bad_syntax);
    // REQ.
    check_fatal("REQ\r\n", error_code::bad_syntax);
    check_fatal("REQ 1 INFO\r\n", error_code::bad_syntax);
    check_fatal("REQ x INFO " + ida + "\r\n", error_code::bad_syntax);
    check_fatal("REQ -1 INFO " + ida + "\r\n", error_code::bad_syntax);
    check_fatal("REQ 18446744073709551616 INFO " + ida + "\r\n", error_code::bad_syntax);
    check_fatal("REQ 000000000000000000001 INFO " + ida + "\r\n", error_code::bad_syntax);
    check_fatal("REQ 1 LIST " + ida + "\r\n", error_code::bad_syntax);
    check_fatal("REQ 1 INFO " + ida + " extra\r\n", error_code::bad_syntax);
    check_fatal("REQ 1 INFO zz\r\n", error_code::bad_syntax);
    // RES.
    check_fatal("RES\r\n", error_code::bad_syntax);
    check_fatal("RES 1\r\n", error_code::bad_syntax);
    check_fatal("RES x ok 0\r\n\r\n", error_code::bad_syntax);
    check_fatal("RES 1 nope\r\n", error_code::bad_syntax);
    check_fatal("RES 1 queue_full extra\r\n", error_code::bad_syntax);
    check_fatal("RES 1 ok\r\n", error_code::bad_syntax);
    check_fatal("RES 1 ok x\r\n", error_code::bad_syntax);
    check_fatal("RES 1 ok 2 extra\r\n{}\r\n", error_code::bad_syntax);
    check_fatal("RES 1 ok 65537\r\n", error_code::frame_too_large);
    // LINK: header, then JSON of the wrong shape.
    check_fatal("LINK\r\n", error_code::bad_syntax);
    check_fatal("LINK x\r\n", error_code::bad_syntax);
    check_fatal("LINK 2 extra\r\n{}\r\n", error_code::bad_syntax);
    check_fatal("LINK 65537\r\n", error_code::frame_too_large);
    const auto link = [](std::string_view j) {
        return "LINK " + std::to_string(j.size()) + "\r\n" + std::string(j) + "\r\n";
    };
    const std::string ok = R"("version":1,"cluster":"c","node":2,"epoch":3,"token":"t")";
    check_good(link("{" + ok + "}"), link_hello{1, "c", 2, 3, "t"});
    for (const std::string& bad_json : {
             std::string("not json"),
             std::string("[1,2]"),
             std::string("\"s\""),
             std::string("{"),
             std::string(""),
             std::string(R"({"cluster":"c","node":2,"epoch":3,"token":"t"})"),
             std::string(R"({"version":1,"node":2,"epoch":3,"token":"t"})"),
             std::string(R"({"version":1,"cluster":"c","epoch":3,"token":"t"})"),
             std::string(R"({"version":1,"cluster":"c","node":2,"token":"t"})"),
             std::string(R"({"version":1,"cluster":"c","node":2,"epoch":3})"),
             std::string(R"({"version":"1","cluster":"c","node":2,"epoch":3,"token":"t"})"),
             std::string(R"({"version":1,"cluster":7,"node":2,"epoch":3,"token":"t"})"),
             std::string(R"({"version":1,"cluster":"c","node":-2,"epoch":3,"token":"t"})"),
             std::string(R"({"version":1,"cluster":"c","node":4294967296,"epoch":3,"token":"t"})"),
             std::string(R"({"version":1,"cluster":"c","node":2,"epoch":3.5,"token":"t"})"),
             std::string(R"({"version":1,"cluster":"c","node":2,"epoch":3,"token":null})"),
             std::string(R"({"version":1,"cluster":"c","node":2,"epoch":true,"token":"t"})"),
         }) {
        check_fatal(link(bad_json), error_code::bad_json);
    }
    // Other lines.
    check_fatal("PING x\r\n", error_code::bad_syntax);
    check_fatal("PONG x\r\n", error_code::bad_syntax);
    check_fatal("PING\x01\r\n", error_code::bad_syntax);
    check_fatal("PING\rX\r\n", error_code::bad_syntax);
    check_fatal("-ERR\r\n", error_code::bad_syntax);
    check_fatal("-ERR no_such_code x\r\n", error_code::bad_syntax);
    check_fatal("-ERR internal a\x02z\r\n", error_code::bad_syntax);
    check_fatal(std::string(5000, 'P'), error_code::line_too_long);
    check_fatal("PING" + std::string(4093, ' ') + "\r\n", error_code::line_too_long);
}

TEST_CASE("link: limits are honoured at their exact values") {
    limits lim;
    lim.max_line = 100;
    lim.max_payload = 64;
    lim.max_json = 80;
    lim.max_json_depth = 3;
    const std::string r = "ROUTE " + ida + " " + idb + " ";
    // Payload exactly at max_payload, and one over (refused on the line, before any body byte).
    const std::string max_payload(64, 'p');
    check_good(enc(route_msg{id_a, id_b, max_payload, ""}), route_msg{id_a, id_b, max_payload, ""},
               lim);
    check_fatal(r + "65\r\n", error_code::frame_too_large, lim);
    {
        link_decoder d(lim);
        const auto res = d.decode(std::string_view(r + "65\r\n" + std::string(65, 'p')));
        CHECK(res.status == decode_status::bad);
        CHECK(res.fatal);
        CHECK(res.consumed == r.size() + 4);  // the line only
    }
    // The production limit: exactly 1 MiB passes, whole and byte-chunked in large pieces.
    {
        const std::string big(limits{}.max_payload, 'b');
        const std::string frame = enc(route_msg{id_a, id_b, big, "t"});
        for (const std::size_t chunk : {std::size_t{0}, std::size_t{4096}, std::size_t{65536}}) {
            link_decoder d;
            const auto out = decode_all(d, frame, chunk);
            REQUIRE(out.size() == 1);
            CHECK(out[0].status == decode_status::good);
            CHECK(out[0].frame == frame);
        }
        check_fatal(r + std::to_string(limits{}.max_payload + 1) + "\r\n",
                    error_code::frame_too_large);
    }
    // A line of exactly max_line bytes passes; one more is line_too_long.
    const std::string spaces_ok(100 - 4, ' ');
    check_good("PING" + spaces_ok + "\r\n", ping_msg{}, lim);
    check_fatal("PING" + spaces_ok + " \r\n", error_code::line_too_long, lim);
    check_fatal(std::string(102, 'x'), error_code::line_too_long, lim);
    // RES JSON exactly at max_json, and one over.
    const std::string json80(80, 'j');
    check_good("RES 1 ok 80\r\n" + json80 + "\r\n", response_msg{1, std::nullopt, json80}, lim);
    check_fatal("RES 1 ok 81\r\n", error_code::frame_too_large, lim);
    // LINK JSON: too big, too deep.
    check_fatal("LINK 81\r\n", error_code::frame_too_large, lim);
    const std::string deep =
        R"({"version":1,"cluster":"c","node":2,"epoch":3,"token":"t","x":[[[]]]})";
    REQUIRE(deep.size() <= lim.max_json);
    check_fatal("LINK " + std::to_string(deep.size()) + "\r\n" + deep + "\r\n",
                error_code::bad_json, lim);
    const std::string shallow =
        R"({"version":1,"cluster":"c","node":2,"epoch":3,"token":"t","x":[[]]})";
    check_good("LINK " + std::to_string(shallow.size()) + "\r\n" + shallow + "\r\n",
               link_hello{1, "c", 2, 3, "t"}, lim);
    // The buffer never holds more than max_buffered(), however the bytes arrive.
    link_decoder d(lim);
    const auto out = decode_all(d, enc(route_msg{id_a, id_b, max_payload, ""}), 1);
    CHECK(out.size() == 1);
}

TEST_CASE("link: tokens and names at their maximum size, and one over") {
    const std::string tok64(max_token_size, 'a');
    const std::string tok65(max_token_size + 1, 'a');
    const std::string r = "ROUTE " + ida + " " + idb + " 1 ";
    check_good(r + tok64 + "\r\nx\r\n", route_msg{id_a, id_b, "x", tok64});
    check_fatal(r + tok65 + "\r\nx\r\n", error_code::bad_syntax);
    check_good("RACK " + ida + " " + tok64 + " ok\r\n", rack_msg{id_a, tok64, std::nullopt});
    check_fatal("RACK " + ida + " " + tok65 + " ok\r\n", error_code::bad_syntax);
    std::string out;
    CHECK_THROWS_AS(encode(out, route_msg{id_a, id_b, "x", tok65}), std::invalid_argument);
    CHECK_THROWS_AS(encode(out, route_msg{id_a, id_b, "x", "a b"}), std::invalid_argument);
    CHECK_THROWS_AS(encode_route_header(out, id_a, id_b, 1, tok65), std::invalid_argument);
    CHECK_THROWS_AS(encode(out, rack_msg{id_a, "", std::nullopt}), std::invalid_argument);
    CHECK_THROWS_AS(encode(out, rack_msg{id_a, tok65, std::nullopt}), std::invalid_argument);
    CHECK(out.empty());

    // LINK: token up to 256 bytes, cluster up to 64.
    const link_hello max_hello{1, std::string(max_cluster_name_size, 'c'), 1, 1,
                               std::string(max_link_token_size, 't')};
    check_good(enc(max_hello), max_hello);
    const auto link = [](const std::string& cluster, const std::string& token) {
        const std::string j = R"({"version":1,"cluster":")" + cluster +
                              R"(","node":1,"epoch":1,"token":")" + token + R"("})";
        return "LINK " + std::to_string(j.size()) + "\r\n" + j + "\r\n";
    };
    check_fatal(link(std::string(max_cluster_name_size + 1, 'c'), "t"), error_code::bad_json);
    check_fatal(link("c", std::string(max_link_token_size + 1, 't')), error_code::bad_json);
    // Sizes count the decoded bytes: an escaped character is one byte.
    check_good(link(std::string(max_cluster_name_size - 1, 'c') + "\\u0041", "t"),
               link_hello{1, std::string(max_cluster_name_size - 1, 'c') + "A", 1, 1, "t"});
    link_hello h = max_hello;
    h.token += 't';
    CHECK_THROWS_AS(encode(out, h), std::invalid_argument);
    h = max_hello;
    h.cluster += 'c';
    CHECK_THROWS_AS(encode(out, h), std::invalid_argument);
    CHECK_THROWS_AS(encode(out, response_msg{1, error_code::internal, "{}"}),
                    std::invalid_argument);
}

TEST_CASE("link: node_unreachable is a 2xx code with a stable wire name") {
    CHECK(to_number(error_code::node_unreachable) == 204);
    CHECK(to_string(error_code::node_unreachable) == "node_unreachable");
    CHECK(parse_error_code("node_unreachable") == error_code::node_unreachable);
    CHECK(parse_error_code("NODE_UNREACHABLE") == error_code::node_unreachable);
    CHECK_FALSE(is_fatal(error_code::node_unreachable));
    check_good("RACK " + ida + " t node_unreachable\r\n",
               rack_msg{id_a, "t", error_code::node_unreachable});
    check_good("RES 3 node_unreachable\r\n", response_msg{3, error_code::node_unreachable, ""});
    check_good("-ERR node_unreachable no link to node 2\r\n",
               err_msg{error_code::node_unreachable, "no link to node 2"});
    // The client protocol carries it too.
    reply_decoder rd;
    const auto r = rd.decode(std::string_view("ACK t node_unreachable\r\n"));
    REQUIRE(r.status == decode_status::good);
    CHECK(r.message == reply{ack_msg{"t", error_code::node_unreachable}});
}

#if LARIV_COUNT_ALLOCATIONS
TEST_CASE("link: a ROUTE that arrived whole is decoded without a copy or an allocation") {
    const std::string frame = enc(route_msg{id_a, id_b, "zero-copy payload", "k-1"}) + "PING\r\n";
    link_decoder d;
    (void)d.decode(std::string_view("PING\r\n"));  // any first-use setup happens here
    const std::size_t before = allocations.load();
    const auto r = d.decode(frame);
    const std::size_t during = allocations.load() - before;
    REQUIRE(r.status == decode_status::good);
    CHECK(during == 0);
    const auto& m = std::get<route_msg>(r.message);
    CHECK(m.from == id_a);
    CHECK(m.to == id_b);
    CHECK(m.payload == "zero-copy payload");
    CHECK(m.token == "k-1");
    CHECK(m.payload.data() >= frame.data());
    CHECK(m.payload.data() < frame.data() + frame.size());
    CHECK(d.buffered() == 0);
    CHECK(r.consumed == frame.size() - 6);
    const auto r2 = d.decode(std::string_view(frame).substr(r.consumed));
    CHECK(std::holds_alternative<ping_msg>(r2.message));
}

TEST_CASE("link: encode(route_msg) allocates only to grow the output") {
    const std::string payload(1000, 'p');
    const route_msg m{id_a, id_b, payload, "tok"};
    std::string out;
    out.reserve(4096);
    std::size_t before = allocations.load();
    encode(out, m);
    encode(out, m);
    CHECK(allocations.load() - before == 0);
    // Without room: one allocation per growth, at most.
    std::string small;
    before = allocations.load();
    encode(small, m);
    CHECK(allocations.load() - before == 1);
    CHECK(small == out.substr(0, small.size()));
    // Many frames into one buffer grow it geometrically.
    std::string batch;
    before = allocations.load();
    for (int i = 0; i < 1000; ++i) {
        encode(batch, m);
    }
    CHECK(allocations.load() - before < 40);
}
#endif

TEST_CASE("link: a ROUTE split across reads keeps its token") {
    // Line and body both arrive in pieces, so both pass through the reader's buffer: the body
    // overwrites the bytes the line's token was read from.
    const route_msg m{id_a, id_b, "abcdefghijklmnop", "tok-9"};
    const std::string frame = enc(m);
    const std::size_t header = frame.find('\n') + 1;
    link_decoder d;
    auto r = d.decode(std::string_view(frame).substr(0, header - 3));
    CHECK(r.status == decode_status::need_more);
    r = d.decode(std::string_view(frame).substr(header - 3, 4));
    CHECK(r.status == decode_status::need_more);
    CHECK(d.buffered() == 1);
    r = d.decode(std::string_view(frame).substr(header + 1));
    REQUIRE(r.status == decode_status::good);
    CHECK(std::get<route_msg>(r.message) == m);
}

TEST_CASE("link: shrink frees the buffer only when no frame is pending") {
    link_decoder d;
    auto r = d.decode(std::string_view("PIN"));
    CHECK(r.status == decode_status::need_more);
    d.shrink();
    CHECK(d.buffered() == 3);
    r = d.decode(std::string_view("G\r\n"));
    CHECK(r.status == decode_status::good);
    d.shrink();
    CHECK(d.buffered() == 0);
    const std::array<std::byte, 6> bytes{std::byte{'P'}, std::byte{'O'},  std::byte{'N'},
                                         std::byte{'G'}, std::byte{'\r'}, std::byte{'\n'}};
    r = d.decode(std::span<const std::byte>(bytes));
    CHECK(std::holds_alternative<pong_msg>(r.message));
    CHECK(d.limits() == limits{});
}

TEST_CASE("link: the examples in PROTOCOL.md section 11 decode as documented") {
    std::ifstream f(LARIV_PROTOCOL_MD);
    REQUIRE(f);
    std::string dialer;
    std::string acceptor;
    bool in_section = false;
    for (std::string line; std::getline(f, line);) {
        if (line.rfind("## 11.", 0) == 0) {
            in_section = true;
        } else if (in_section && line.rfind("## ", 0) == 0) {
            break;
        } else if (in_section && line.rfind("> ", 0) == 0) {
            dialer += line.substr(2) + "\r\n";
        } else if (in_section && line.rfind("< ", 0) == 0) {
            acceptor += line.substr(2) + "\r\n";
        }
    }
    REQUIRE_FALSE(dialer.empty());
    REQUIRE_FALSE(acceptor.empty());
    for (const std::string* side : {&dialer, &acceptor}) {
        CAPTURE(*side);
        link_decoder d;
        const auto out = decode_all(d, *side);
        CHECK(out.size() >= 4);
        for (const auto& o : out) {
            CHECK(o.status == decode_status::good);
        }
        // Both sides open with a LINK.
        const auto r = link_decoder().decode(*side);
        REQUIRE(r.status == decode_status::good);
        CHECK(std::holds_alternative<link_hello>(r.message));
    }
}
