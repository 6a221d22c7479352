// Configuration: precedence file < environment < flags (library functions and the larivd
// binary), validation, exit codes (64 usage, 78 configuration).
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "support.hpp"

using namespace lariv::test;

#ifndef LARIV_LARIVD_PATH
#error "LARIV_LARIVD_PATH must name the larivd binary"
#endif

namespace {

/// A temporary file removed at scope exit.
struct temp_file {
    std::string path;
    explicit temp_file(const std::string& content) {
        char tmpl[] = "/tmp/lariv_cfg_XXXXXX";
        const int fd = ::mkstemp(tmpl);
        REQUIRE(fd >= 0);
        ::close(fd);
        path = tmpl;
        std::ofstream(path) << content;
    }
    ~temp_file() { std::remove(path.c_str()); }
};

/// Sets an environment variable for the scope.
struct scoped_env {
    std::string name;
    explicit scoped_env(std::string n, const std::string& v) : name(std::move(n)) {
        ::setenv(name.c_str(), v.c_str(), 1);
    }
    ~scoped_env() { ::unsetenv(name.c_str()); }
};

struct run_result {
    int code = -1;
    std::string out;
};

/// Runs a shell command line, capturing stdout (stderr discarded, or with `with_stderr` merged
/// into the output), and its exit code.
run_result run(const std::string& cmdline, bool with_stderr = false) {
    run_result r;
    FILE* p = ::popen((cmdline + (with_stderr ? " 2>&1" : " 2>/dev/null")).c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        r.out.append(buf, n);
    }
    const int st = ::pclose(p);
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

const std::string larivd = LARIV_LARIVD_PATH;

}  // namespace

TEST_CASE("config precedence in the library: defaults < file < environment < flags") {
    temp_file f(R"({"port": 9001, "node_id": 11, "heartbeat_ms": 1234, "log_level": "debug",
                    "limits": {"max_line": 8192}, "slow_consumer": "drop"})");
    srv::config c;
    const srv::config defaults;
    srv::load_file(c, f.path);
    CHECK(c.port == 9001);
    CHECK(c.node_id == 11);
    CHECK(c.heartbeat_ms == 1234);
    CHECK(c.log_level == "debug");
    CHECK(c.limits.max_line == 8192);
    CHECK(c.limits.max_payload == defaults.limits.max_payload);  // untouched key keeps its value
    CHECK(c.slow_consumer == srv::slow_consumer_policy::drop);
    CHECK(c.max_sessions == defaults.max_sessions);

    {
        scoped_env e1("LARIV_NODE_ID", "12");
        scoped_env e2("LARIV_AUTH_TOKEN", "from-env");
        scoped_env e3("LARIV_MAX_PAYLOAD", "2048");
        srv::apply_environment(c);
    }
    CHECK(c.port == 9001);        // file value kept
    CHECK(c.node_id == 12);       // environment over file
    CHECK(c.auth_token == "from-env");
    CHECK(c.limits.max_payload == 2048);
    CHECK(c.limits.max_line == 8192);  // a partial "limits" does not reset the other limits

    // Flags go through merge() last.
    srv::merge(c, nlohmann::json{{"node_id", 13U}, {"limits", {{"max_payload", 4096U}}}});
    CHECK(c.node_id == 13);
    CHECK(c.limits.max_payload == 4096);
    CHECK(c.limits.max_line == 8192);
    CHECK(c.auth_token == "from-env");

    // The env name list covers every JSON key.
    auto names = srv::config_env_names();
    CHECK(names.at("node_id") == "LARIV_NODE_ID");
    CHECK(names.at("max_queue_bytes") == "LARIV_MAX_QUEUE_BYTES");
    nlohmann::json all = srv::config{};
    for (auto it = all.begin(); it != all.end(); ++it) {
        if (it.key() != "limits") {
            CHECK_MESSAGE(names.count(it.key()) == 1, it.key());
        }
    }
    // JSON round trip.
    srv::config back;
    srv::merge(back, nlohmann::json(c));
    CHECK(back == c);
}

TEST_CASE("config errors: unknown keys, wrong types, bad environment values, validate()") {
    srv::config c;
    CHECK_THROWS_AS(srv::merge(c, nlohmann::json{{"prot", 1}}), srv::config_error);
    CHECK_THROWS_AS(srv::merge(c, nlohmann::json{{"port", -1}}), srv::config_error);
    CHECK_THROWS_AS(srv::merge(c, nlohmann::json{{"port", 70000}}), srv::config_error);
    CHECK_THROWS_AS(srv::merge(c, nlohmann::json{{"port", "7411"}}), srv::config_error);
    CHECK_THROWS_AS(srv::merge(c, nlohmann::json{{"slow_consumer", "maybe"}}), srv::config_error);
    CHECK_THROWS_AS(srv::merge(c, nlohmann::json::array()), srv::config_error);
    {
        scoped_env e("LARIV_PORT", "12ab");
        CHECK_THROWS_AS(srv::apply_environment(c), srv::config_error);
    }
    {
        scoped_env e("LARIV_THREADS", "-3");
        CHECK_THROWS_AS(srv::apply_environment(c), srv::config_error);
    }
    temp_file bad("{ not json");
    CHECK_THROWS_AS(srv::load_file(c, bad.path), srv::config_error);
    CHECK_THROWS_AS(srv::load_file(c, "/nonexistent/lariv.json"), srv::config_error);

    srv::config v;
    v.port = 0;  // 0 = ephemeral: valid
    CHECK_NOTHROW(v.validate());
    v.max_sessions = 0;
    CHECK_THROWS_AS(v.validate(), srv::config_error);
    v = srv::config{};
    v.log_level = "loud";
    CHECK_THROWS_AS(v.validate(), srv::config_error);
    v = srv::config{};
    v.max_queue_bytes = v.limits.max_payload - 1;
    CHECK_THROWS_AS(v.validate(), srv::config_error);
    // The server constructor validates too.
    auto t = test_config();
    t.registry_buffer = 0;
    CHECK_THROWS_AS(srv::server{t}, srv::config_error);
}

TEST_CASE("larivd --print-config: flags > environment > file") {
    temp_file f(R"({"port": 9001, "node_id": 11, "heartbeat_ms": 1234, "monitor_port": 9002})");
    auto r = run("env LARIV_NODE_ID=12 LARIV_HEARTBEAT_MS=4321 " + larivd + " --config " + f.path +
                 " --node-id 13 --print-config");
    REQUIRE(r.code == 0);
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    CHECK(j["port"] == 9001);          // file only
    CHECK(j["monitor_port"] == 9002);  // file only
    CHECK(j["heartbeat_ms"] == 4321);  // env over file
    CHECK(j["node_id"] == 13);         // flag over env and file
    CHECK(j["max_sessions"] == srv::config{}.max_sessions);  // default

    // Without any source: the defaults.
    r = run("env -u LARIV_PORT " + larivd + " --print-config");
    REQUIRE(r.code == 0);
    j = nlohmann::json::parse(r.out, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    CHECK(j["port"] == 7411);
    CHECK(j["listen_address"] == "127.0.0.1");
}

TEST_CASE("larivd exit codes: --check-config 0/78, unknown flag 64, bad env 78, --version 0") {
    temp_file good(R"({"port": 9001})");
    temp_file bad_value(R"({"port": 9001, "log_level": "loud"})");
    temp_file unknown_key(R"({"prot": 9001})");
    temp_file not_json("{ nope");
    CHECK(run(larivd + " --config " + good.path + " --check-config").code == 0);
    CHECK(run(larivd + " --config " + bad_value.path + " --check-config").code == 78);
    CHECK(run(larivd + " --config " + unknown_key.path + " --check-config").code == 78);
    CHECK(run(larivd + " --config " + not_json.path + " --check-config").code == 78);
    CHECK(run("env LARIV_PORT=nope " + larivd + " --check-config").code == 78);
    CHECK(run(larivd + " --config /nonexistent/larivd.json --check-config").code == 78);
    CHECK(run(larivd + " --no-such-flag").code == 64);
    CHECK(run(larivd + " --port notanumber --check-config").code == 78);  // a bad value, not usage
    CHECK(run(larivd + " extra-positional").code == 64);
    auto v = run(larivd + " --version");
    CHECK(v.code == 0);
    CHECK(v.out.find("larivd") != std::string::npos);
    CHECK(run(larivd + " --help").code == 0);
}

TEST_CASE("config: merge() accepts non-negative JSON integers stored as signed (regression)") {
    // Regression: nlohmann::json stores a C++ int (e.g. json{{"node_id", 13}}) as number_integer, not
    // number_unsigned; read_value() in server/src/config.cpp tested is_number_unsigned() only, so
    // an embedder building its config as JSON in code got "must be a non-negative integer" for 13.
    srv::config c;
    CHECK_NOTHROW(srv::merge(c, nlohmann::json{{"node_id", 13}}));
    CHECK(c.node_id == 13);
    // Negative values must still be refused.
    CHECK_THROWS_AS(srv::merge(c, nlohmann::json{{"node_id", -1}}), srv::config_error);
}

// ------------------------------------------------------------------ the key table, every source

namespace {

/// Single-quoted for /bin/sh.
std::string sh_quote(const std::string& v) {
    std::string out = "'";
    for (char ch : v) {
        out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
    }
    return out + "'";
}

/// Bad texts for a key (as a flag or environment value), each with why it is bad.
std::vector<std::string> bad_texts(const srv::setting& s) {
    using K = srv::setting::kind;
    std::vector<std::string> v;
    switch (s.type) {
        case K::integer:
            v = {"-1", "abc", "1x", "", " 5", "+5", "99999999999999999999999"};
            if (s.min > 0) {
                v.push_back(std::to_string(s.min - 1));
            }
            if (s.max < std::numeric_limits<std::uint64_t>::max()) {
                v.push_back(std::to_string(s.max + 1));
            }
            break;
        case K::choice:
            v = {"loud", "", "TEXT "};
            break;
        case K::text:
            v = {std::string(s.max + 1, 'x')};
            if (s.min > 0) {
                v.push_back("");
            }
            break;
    }
    return v;
}

/// Bad JSON values for a key in a file.
std::vector<nlohmann::json> bad_json(const srv::setting& s) {
    using K = srv::setting::kind;
    std::vector<nlohmann::json> v;
    if (s.type == K::integer) {
        v = {-1, 1.5, "12", true, nullptr};
        if (s.min > 0) {
            v.emplace_back(s.min - 1);
        }
        if (s.max < std::numeric_limits<std::uint64_t>::max()) {
            v.emplace_back(s.max + 1);
        }
    } else {
        v = {5, nlohmann::json::array()};
        v.emplace_back(s.type == K::choice ? std::string("loud") : std::string(s.max + 1, 'x'));
    }
    return v;
}

nlohmann::json file_with(const srv::setting& s, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::object();
    if (s.in_limits) {
        j["limits"][std::string(s.key)] = value;
    } else {
        j[std::string(s.key)] = value;
    }
    return j;
}

/// The message must name the key, the source and the allowed range.
void check_message(const std::string& what, const srv::setting& s, const std::string& source) {
    CHECK_MESSAGE(what.find(std::string(s.key)) != std::string::npos, what);
    CHECK_MESSAGE(what.find(source) != std::string::npos, what, " (source: ", source, ")");
    CHECK_MESSAGE(what.find(s.range()) != std::string::npos, what, " (range: ", s.range(), ")");
}

}  // namespace

TEST_CASE("config table: every key and every source - a bad value is refused naming key, source and range") {
    REQUIRE(srv::settings().size() >= 30);
    for (const auto& s : srv::settings()) {
        CAPTURE(s.key);
        // Text sources (environment, flags): one parser.
        for (const auto& text : bad_texts(s)) {
            CAPTURE(text);
            srv::config c;
            try {
                srv::set_from_text(c, s.key, text, "environment " + s.env());
                FAIL("accepted");
            } catch (const srv::config_error& e) {
                check_message(e.what(), s, "environment " + s.env());
            }
            CHECK(c == srv::config{});  // nothing stored
        }
        // The file: a JSON value of the wrong type or out of range.
        for (const auto& value : bad_json(s)) {
            CAPTURE(value.dump());
            srv::config c;
            try {
                srv::merge(c, file_with(s, value), "file x.json");
                FAIL("accepted");
            } catch (const srv::config_error& e) {
                check_message(e.what(), s, "file x.json");
            }
        }
        // The bounds themselves are accepted by every source.
        if (s.type == srv::setting::kind::integer) {
            for (const std::uint64_t v : {s.min, s.max}) {
                srv::config c;
                CHECK_NOTHROW(srv::set_from_text(c, s.key, std::to_string(v), "flag " + s.flag()));
                srv::config f;
                CHECK_NOTHROW(srv::merge(f, file_with(s, v), "file"));
                CHECK(nlohmann::json(c) == nlohmann::json(f));
            }
        } else if (s.type == srv::setting::kind::choice) {
            for (auto w : s.choices) {
                srv::config c;
                CHECK_NOTHROW(srv::set_from_text(c, s.key, w, "flag"));
            }
        }
    }
    // Unknown keys: top level and inside limits; a limits key at the top level.
    srv::config c;
    CHECK_THROWS_WITH_AS(srv::merge(c, nlohmann::json::parse(R"({"limits":{"max_lne":1}})"), "file f"),
                         doctest::Contains("limits.max_lne"), srv::config_error);
    CHECK_THROWS_WITH_AS(srv::merge(c, nlohmann::json::parse(R"({"max_line":4096})"), "file f"),
                         doctest::Contains("belongs in"), srv::config_error);
}

TEST_CASE("config table: validate() covers an embedder's registry_options - ranges and fit") {
    srv::registry_options o;
    CHECK_NOTHROW(o.validate());
    o.limits.max_line = static_cast<std::size_t>(-1);  // what "--max-line -1" wrapped to before
    CHECK_THROWS_WITH_AS(o.validate(), doctest::Contains("max_line"), srv::config_error);
    o = {};
    o.node_id = 0;
    CHECK_THROWS_WITH_AS(o.validate(), doctest::Contains("node_id"), srv::config_error);
    o = {};
    o.slow_consumer = srv::slow_consumer_policy::drop;
    CHECK_NOTHROW(o.validate());
    // A queue must hold one maximal MSG frame: max_payload plus its header.
    o = {};
    o.max_queue_bytes = o.limits.max_msg_frame();
    CHECK_NOTHROW(o.validate());
    o.max_queue_bytes = o.limits.max_msg_frame() - 1;
    CHECK_THROWS_WITH_AS(o.validate(), doctest::Contains("maximal MSG frame"), srv::config_error);
    o.max_queue_bytes = o.limits.max_payload;  // the old default's mistake: payload only
    CHECK_THROWS_AS(o.validate(), srv::config_error);
    CHECK(srv::registry_options{}.max_queue_bytes >= srv::registry_options{}.limits.max_msg_frame());
}

TEST_CASE("larivd: every key has a flag, and a bad value from any source exits 78 naming key, source and range") {
    const auto help = run(larivd + " --help");
    REQUIRE(help.code == 0);
    temp_file scratch("{}");
    for (const auto& s : srv::settings()) {
        CAPTURE(s.key);
        CHECK_MESSAGE(help.out.find(s.flag() + " ") != std::string::npos, "no flag ", s.flag());
        CHECK(help.out.find("[" + s.range() + "]; default " + s.default_text() + "; env " + s.env() +
                            "; JSON " + s.json_key()) != std::string::npos);
        const std::string bad = bad_texts(s).front();
        // Flag, with a separate value ("--max-line -1") and with "=".
        auto r = run(larivd + " " + s.flag() + " " + sh_quote(bad) + " --check-config", true);
        CHECK_MESSAGE(r.code == 78, r.out);
        check_message(r.out, s, "flag " + s.flag());
        r = run(larivd + " " + s.flag() + "=" + sh_quote(bad) + " --check-config", true);
        CHECK_MESSAGE(r.code == 78, r.out);
        // Environment.
        r = run("env " + s.env() + "=" + sh_quote(bad) + " " + larivd + " --check-config", true);
        CHECK_MESSAGE(r.code == 78, r.out);
        check_message(r.out, s, "environment " + s.env());
        // File.
        std::ofstream(scratch.path, std::ios::trunc) << file_with(s, bad_json(s).front()).dump();
        r = run(larivd + " --config " + scratch.path + " --check-config", true);
        CHECK_MESSAGE(r.code == 78, r.out);
        check_message(r.out, s, "file " + scratch.path);
    }
    // Keys that must fit together: a queue cap below one maximal frame.
    auto r = run(larivd + " --max-payload 8388608 --check-config", true);
    CHECK(r.code == 78);
    CHECK(r.out.find("max_queue_bytes") != std::string::npos);
    CHECK(run(larivd + " --max-payload 8388608 --max-queue-bytes 16777216 --check-config").code == 0);
}

#ifdef LARIV_SOURCE_DIR
TEST_CASE("README: the configuration table names every key") {
    std::ifstream in(std::string(LARIV_SOURCE_DIR) + "/README.md");
    REQUIRE(in);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string readme = ss.str();
    for (const auto& s : srv::settings()) {
        CHECK_MESSAGE(readme.find("`" + std::string(s.key) + "`") != std::string::npos, s.key);
    }
}
#endif
