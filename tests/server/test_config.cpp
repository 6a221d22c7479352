// Configuration: precedence file < environment < flags (library functions and the larivd
// binary), validation, exit codes (64 usage, 78 configuration).
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

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

/// Runs a shell command line, capturing stdout (stderr discarded), and its exit code.
run_result run(const std::string& cmdline) {
    run_result r;
    FILE* p = ::popen((cmdline + " 2>/dev/null").c_str(), "r");
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
    CHECK(run(larivd + " --port notanumber --check-config").code == 64);
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
