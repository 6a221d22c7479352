#include "lariv/protocol/json.hpp"

#include <doctest/doctest.h>

#include "helpers.hpp"

using namespace lariv::protocol;
using namespace lariv::protocol::test;

namespace {

/// Encodes a body, decodes it with a reply decoder and parses it back as T.
template <class T>
T through_the_wire(const T& value, body_kind kind) {
    const std::string frame = enc(value);
    reply_decoder d;
    const auto r = d.decode(frame);
    REQUIRE(r.status == decode_status::good);
    const auto& b = std::get<body_msg>(r.message);
    CHECK(b.kind == kind);
    auto parsed = parse_body<T>(b.json, d.limits());
    REQUIRE(parsed);
    return *parsed;
}

}  // namespace

TEST_CASE("hello_reply, session_info and list_page survive the wire") {
    hello_reply h;
    h.session = id_a;
    h.node = 0x01020304;
    h.server = "larivd/0.1.0";
    h.limits.max_payload = 12345;
    h.heartbeat_ms = 1000;
    CHECK(through_the_wire(h, body_kind::hello) == h);

    const session_info s{id_b, "node-\"7\"", 1234, 99, 5, 6};
    CHECK(through_the_wire(s, body_kind::info) == s);

    list_page p;
    p.sessions = {s, session_info{id_a, "", 0, 0, 0, 0}};
    p.next = id_a;
    CHECK(through_the_wire(p, body_kind::list) == p);
    p.next.reset();
    p.sessions.clear();
    CHECK(through_the_wire(p, body_kind::list) == p);
}

TEST_CASE("JSON field names are the documented ones") {
    const nlohmann::json j = session_info{id_a, "n", 1, 2, 3, 4};
    CHECK(j.dump() == "{\"age_ms\":1,\"id\":\"" + id_a.to_string() +
                          "\",\"msgs_in\":3,\"msgs_out\":4,\"name\":\"n\",\"queued_bytes\":2}");
    const nlohmann::json l = limits{};
    CHECK(l.dump() ==
          "{\"max_json\":65536,\"max_json_depth\":8,\"max_line\":4096,\"max_list\":1000,"
          "\"max_payload\":1048576}");
    std::string out;
    encode_body(out, body_kind::stats, nlohmann::json{{"sessions", 3}});
    CHECK(out == "+STATS 14\r\n{\"sessions\":3}\r\n");
}

TEST_CASE("parse_json enforces depth and size before parsing") {
    limits lim;
    lim.max_json_depth = 3;
    lim.max_json = 32;
    CHECK(parse_json("[[[1]]]", lim));
    CHECK_FALSE(parse_json("[[[[1]]]]", lim));
    CHECK_FALSE(parse_json("{\"a\":{\"b\":{\"c\":{}}}}", lim));
    CHECK(parse_json("{\"a\":\"[[[[[[\"}", lim));    // brackets in strings do not count
    CHECK(parse_json("{\"a\":\"\\\"[[[[\"}", lim));  // nor after an escaped quote
    CHECK(parse_json(std::string(32, ' ').replace(0, 2, "{}"), lim));
    CHECK_FALSE(parse_json(std::string(33, ' ').replace(0, 2, "{}"), lim));
    CHECK_FALSE(parse_json("", lim));
    CHECK_FALSE(parse_json("{", lim));
    CHECK_FALSE(parse_json("{} {}", lim));
    limits deep;
    deep.max_json = 1 << 20;
    CHECK_FALSE(parse_json(std::string(100000, '['), deep));  // refused without recursion
}

TEST_CASE("parse_body refuses the wrong shape") {
    const limits lim;
    CHECK_FALSE(parse_body<session_info>("{}", lim));
    CHECK_FALSE(parse_body<session_info>("{\"id\":\"xyz\"}", lim));
    CHECK_FALSE(parse_body<session_info>("{\"id\":7}", lim));
    CHECK_FALSE(parse_body<hello_reply>("{\"version\":1}", lim));
    CHECK_FALSE(parse_body<list_page>("{\"sessions\":{}}", lim));
    CHECK_FALSE(parse_body<list_page>("[]", lim));
    const auto s = parse_body<session_info>("{\"id\":\"" + id_a.to_string() + "\"}", lim);
    REQUIRE(s);
    CHECK(s->id == id_a);
    CHECK(s->name.empty());
}
