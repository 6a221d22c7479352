#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/encoder.hpp"

#include <fstream>

#include <doctest/doctest.h>

#include "helpers.hpp"

using namespace lariv::protocol;
using namespace lariv::protocol::test;

namespace {

const std::string binary_payload = std::string("\0\r\n\nSEND x 3\r\n\xff\xfe", 16) + "tail";

std::vector<command> all_commands() {
    return {
        hello_msg{},
        hello_msg{1, "node-7", "s3cret", true},
        hello_msg{2, "caf\xc3\xa9 \"quoted\" \\ \t", "", false},
        ping_msg{},
        pong_msg{},
        send_msg{id_a, "hello", ""},
        send_msg{id_b, "", "t-1"},
        send_msg{id_a, binary_payload, "Tok_en.9:x-y"},
        info_msg{id_a},
        list_msg{},
        list_msg{id_b, 0},
        list_msg{std::nullopt, 25},
        list_msg{id_a, 1000},
        kick_msg{id_b},
        stats_msg{},
        quit_msg{},
    };
}

std::vector<reply> all_replies() {
    return {
        ok_msg{},
        ok_msg{"bye"},
        err_msg{error_code::unknown_session, "no session 0102"},
        err_msg{error_code::draining, ""},
        ping_msg{},
        pong_msg{},
        deliver_msg{id_a, "payload"},
        deliver_msg{id_b, ""},
        deliver_msg{id_a, binary_payload},
        ack_msg{"7", std::nullopt},
        ack_msg{"abc-1", error_code::queue_full},
        ack_msg{"x", error_code::stale_session},
        body_msg{body_kind::hello, R"({"version":1})"},
        body_msg{body_kind::info, "{}"},
        body_msg{body_kind::list, "{\"sessions\":[],\"next\":null}"},
        body_msg{body_kind::stats, "{\"a\":\"\\r\\n\"}"},
    };
}

// Every split of every frame, and every chunk size, decodes to exactly the message encoded.
template <class Decoder, class Message>
void check_every_split(const Message& m) {
    const std::string frame = enc(m);
    CAPTURE(frame);
    for (std::size_t cut = 0; cut <= frame.size(); ++cut) {
        Decoder d;
        const std::string_view first = std::string_view(frame).substr(0, cut);
        const std::string_view second = std::string_view(frame).substr(cut);
        auto r = d.decode(first);
        if (r.status == decode_status::good) {
            // Only possible when the cut is after the whole frame.
            CHECK(cut == frame.size());
            CHECK(r.message == m);
            continue;
        }
        REQUIRE(r.status == decode_status::need_more);
        REQUIRE(r.consumed == first.size());
        r = d.decode(second);
        REQUIRE(r.status == decode_status::good);
        CHECK(r.consumed == second.size());
        CHECK(r.message == m);
    }
    for (std::size_t chunk = 1; chunk <= frame.size(); ++chunk) {
        Decoder d;
        const auto out = decode_all(d, frame, chunk);
        REQUIRE(out.size() == 1);
        CHECK(out[0].status == decode_status::good);
        CHECK(out[0].frame == frame);
    }
}

}  // namespace

TEST_CASE("every command round-trips through encode and decode at every split") {
    for (const auto& m : all_commands()) {
        check_every_split<command_decoder>(m);
    }
}

TEST_CASE("every reply round-trips through encode and decode at every split") {
    for (const auto& m : all_replies()) {
        check_every_split<reply_decoder>(m);
    }
}

TEST_CASE("a batch of every command in one read decodes in order, in any chunking") {
    std::string batch;
    std::vector<std::string> frames;
    for (const auto& m : all_commands()) {
        frames.push_back(enc(m));
        batch += frames.back();
    }
    for (std::size_t chunk : {0, 1, 2, 3, 7, 16, 64, 1000}) {
        CAPTURE(chunk);
        command_decoder d;
        const auto out = decode_all(d, batch, chunk);
        REQUIRE(out.size() == frames.size());
        for (std::size_t i = 0; i < frames.size(); ++i) {
            CHECK(out[i].status == decode_status::good);
            CHECK(out[i].frame == frames[i]);
        }
        // The last frame may still sit in the buffer; the next call releases it.
        CHECK(d.decode(std::string_view{}).status == decode_status::need_more);
        CHECK(d.buffered() == 0);
    }
}

TEST_CASE("a batch of every reply in one read decodes in order, in any chunking") {
    std::string batch;
    std::vector<std::string> frames;
    for (const auto& m : all_replies()) {
        frames.push_back(enc(m));
        batch += frames.back();
    }
    for (std::size_t chunk : {0, 1, 5, 33, 4096}) {
        reply_decoder d;
        const auto out = decode_all(d, batch, chunk);
        REQUIRE(out.size() == frames.size());
        for (std::size_t i = 0; i < frames.size(); ++i) {
            CHECK(out[i].frame == frames[i]);
        }
    }
}

TEST_CASE("typed input: bare newlines, lower case, extra blanks and blank lines are accepted") {
    const std::string typed = "\n\r\nhello\nping\n  PiNg  \t\r\nsend " + id_a.to_string() +
                              "  5\nhello\n" + "info " + id_b.to_string() +
                              "\nlist   limit=3   after=" + id_a.to_string() + "\nquit\n";
    command_decoder d;
    std::vector<command> got;
    std::string_view in = typed;
    while (!in.empty()) {
        auto r = d.decode(in);
        in.remove_prefix(r.consumed);
        if (r.status == decode_status::need_more) {
            break;
        }
        REQUIRE(r.status == decode_status::good);
        if (auto* s = std::get_if<send_msg>(&r.message)) {
            CHECK(s->payload == "hello");  // checked before the view expires
            s->payload = {};
        }
        got.push_back(r.message);
    }
    const std::vector<command> want = {
        hello_msg{},    ping_msg{},        ping_msg{}, send_msg{id_a, {}, {}},
        info_msg{id_b}, list_msg{id_a, 3}, quit_msg{}};
    CHECK(got == want);
}

TEST_CASE("a payload that arrived whole is handed out without a copy") {
    const std::string frame = enc(send_msg{id_a, "zero-copy payload", "k"}) + "PING\r\n";
    command_decoder d;
    const auto r = d.decode(frame);
    REQUIRE(r.status == decode_status::good);
    const auto& s = std::get<send_msg>(r.message);
    CHECK(s.payload == "zero-copy payload");
    CHECK(s.payload.data() >= frame.data());
    CHECK(s.payload.data() < frame.data() + frame.size());
    CHECK(d.buffered() == 0);
    // The rest of the input is left to the next call.
    CHECK(r.consumed == frame.size() - 6);
    const auto r2 = d.decode(std::string_view(frame).substr(r.consumed));
    CHECK(r2.status == decode_status::good);
    CHECK(std::holds_alternative<ping_msg>(r2.message));
}

TEST_CASE("MSG payload of every byte value passes untouched") {
    std::string all(256, '\0');
    for (int i = 0; i < 256; ++i) {
        all[static_cast<std::size_t>(i)] = static_cast<char>(i);
    }
    const std::string frame = enc(deliver_msg{id_b, all});
    for (std::size_t chunk : {1, 3, 100}) {
        reply_decoder d;
        const auto out = decode_all(d, frame, chunk);
        REQUIRE(out.size() == 1);
        CHECK(out[0].frame == frame);
    }
}

TEST_CASE("need_more takes every byte and an empty input takes none") {
    command_decoder d;
    auto r = d.decode(std::string_view{});
    CHECK(r.status == decode_status::need_more);
    CHECK(r.consumed == 0);
    r = d.decode(std::string_view("SEND " + id_a.to_string() + " 10\r\nabc"));
    CHECK(r.status == decode_status::need_more);
    CHECK(r.consumed == 5 + 32 + 5 + 3);
    CHECK(d.buffered() == 3);  // the header was parsed; only payload bytes are held
    r = d.decode(std::string_view("defghij\r\n"));
    REQUIRE(r.status == decode_status::good);
    CHECK(std::get<send_msg>(r.message).payload == "abcdefghij");
    r = d.decode(std::string_view{});
    CHECK(r.status == decode_status::need_more);
    CHECK(d.buffered() == 0);
}

TEST_CASE("a payload terminated by a lone \\r waits for its \\n") {
    command_decoder d;
    auto r = d.decode(std::string_view("SEND " + id_a.to_string() + " 2\r\nab\r"));
    CHECK(r.status == decode_status::need_more);
    r = d.decode(std::string_view("\nPING\r\n"));
    REQUIRE(r.status == decode_status::good);
    CHECK(std::get<send_msg>(r.message).payload == "ab");
    CHECK(r.consumed == 1);
}

TEST_CASE("encode_send_header and encode_deliver_header match the full encoders") {
    std::string out;
    encode_send_header(out, id_a, 3, "tok");
    CHECK(out.size() <= max_header_size);
    out += "abc\r\n";
    CHECK(out == enc(send_msg{id_a, "abc", "tok"}));
    CHECK(out == "SEND " + id_a.to_string() + " 3 tok\r\nabc\r\n");
    out.clear();
    encode_deliver_header(out, id_b, 3);
    out += "xyz\r\n";
    CHECK(out == enc(deliver_msg{id_b, "xyz"}));
    CHECK(out == "MSG " + id_b.to_string() + " 3\r\nxyz\r\n");
}

TEST_CASE("wire forms are the documented ones") {
    CHECK(enc(ping_msg{}) == "PING\r\n");
    CHECK(enc(pong_msg{}) == "PONG\r\n");
    CHECK(enc(stats_msg{}) == "STATS\r\n");
    CHECK(enc(quit_msg{}) == "QUIT\r\n");
    CHECK(enc(hello_msg{}) == "HELLO {\"version\":1}\r\n");
    CHECK(enc(hello_msg{1, "n", "a", true}) ==
          "HELLO {\"auth\":\"a\",\"name\":\"n\",\"verbose\":true,\"version\":1}\r\n");
    CHECK(enc(info_msg{id_a}) == "INFO " + id_a.to_string() + "\r\n");
    CHECK(enc(kick_msg{id_a}) == "KICK " + id_a.to_string() + "\r\n");
    CHECK(enc(list_msg{id_a, 5}) == "LIST after=" + id_a.to_string() + " limit=5\r\n");
    CHECK(enc(list_msg{}) == "LIST\r\n");
    CHECK(enc(ok_msg{}) == "+OK\r\n");
    CHECK(enc(ok_msg{"bye"}) == "+OK bye\r\n");
    CHECK(enc(err_msg{error_code::queue_full, "full"}) == "-ERR queue_full full\r\n");
    CHECK(enc(ack_msg{"t1", std::nullopt}) == "ACK t1 ok\r\n");
    CHECK(enc(ack_msg{"t1", error_code::unknown_session}) == "ACK t1 unknown_session\r\n");
    CHECK(enc(body_msg{body_kind::stats, "{}"}) == "+STATS 2\r\n{}\r\n");
}

TEST_CASE("free text is made line-safe by the encoder") {
    CHECK(enc(ok_msg{" a\r\nb\0c "}) == "+OK a  b\r\n");  // the literal stops at the NUL
    CHECK(enc(err_msg{error_code::internal, std::string_view("x\ny\0z", 5)}) ==
          "-ERR internal x y z\r\n");
    CHECK(enc(ok_msg{"\r\n"}) == "+OK\r\n");
}

TEST_CASE("encoders refuse bad ack tokens") {
    std::string out;
    CHECK_THROWS_AS(encode(out, send_msg{id_a, "x", "bad token"}), std::invalid_argument);
    CHECK_THROWS_AS(encode(out, send_msg{id_a, "x", std::string(65, 'a')}), std::invalid_argument);
    CHECK_THROWS_AS(encode(out, ack_msg{"", std::nullopt}), std::invalid_argument);
    CHECK_THROWS_AS(encode(out, ack_msg{"a\r\n", std::nullopt}), std::invalid_argument);
    CHECK(valid_token(std::string(64, 'a')));
    CHECK(valid_token("A-z_0.9:"));
    CHECK_FALSE(valid_token("a/b"));
}

TEST_CASE("shrink frees the buffer only when no frame is pending") {
    command_decoder d;
    auto r = d.decode(std::string_view("PIN"));
    CHECK(r.status == decode_status::need_more);
    d.shrink();
    CHECK(d.buffered() == 3);
    r = d.decode(std::string_view("G\r\n"));
    CHECK(r.status == decode_status::good);
    d.shrink();
    CHECK(d.buffered() == 0);
    r = d.decode(std::string_view("PONG\r\n"));
    CHECK(std::holds_alternative<pong_msg>(r.message));
}

TEST_CASE("the example session in PROTOCOL.md decodes as documented") {
    std::ifstream f(LARIV_PROTOCOL_MD);
    REQUIRE(f);
    std::string client;
    std::string server;
    bool in_example = false;
    for (std::string line; std::getline(f, line);) {
        if (line.rfind("## 8.", 0) == 0) {
            in_example = true;
        } else if (line.rfind("## 9.", 0) == 0) {
            break;
        } else if (in_example && line.rfind("> ", 0) == 0) {
            client += line.substr(2) + "\r\n";
        } else if (in_example && line.rfind("< ", 0) == 0) {
            server += line.substr(2) + "\r\n";
        }
    }
    REQUIRE_FALSE(client.empty());
    command_decoder cd;
    const auto commands = decode_all(cd, client);
    std::vector<error_code> errors;
    for (const auto& o : commands) {
        if (o.status == decode_status::bad) {
            errors.push_back(o.error);
        }
    }
    CHECK(commands.size() == 8);  // 6 commands and 2 mistakes
    CHECK(errors == std::vector<error_code>{error_code::bad_syntax, error_code::unknown_command});

    reply_decoder rd;
    const auto replies = decode_all(rd, server);
    CHECK(replies.size() == 9);
    for (const auto& o : replies) {
        CHECK(o.status == decode_status::good);
    }
    // The +HELLO body is a valid hello_reply with the default limits.
    const auto r = reply_decoder().decode(server);
    REQUIRE(r.status == decode_status::good);
    const auto hello = parse_body<hello_reply>(std::get<body_msg>(r.message).json, limits{});
    REQUIRE(hello);
    CHECK(hello->limits == limits{});
    CHECK(hello->session.node() == 7);
}
