#pragma once
// `lariv bench`: the load tool (like `nats bench` or `redis-benchmark`). One engine speaks the
// Lariv protocol (through lariv::protocol's codec) or NATS, so the same client measures larivd and
// nats-server side by side (scripts/bench-server.sh). Modes:
//   churn  connect, handshake, close, repeat (sessions/s, handshake latency)
//   route  pipelined sender/receiver pairs, every message checked (msgs/s, MB/s)
//   rate   a fixed total rate across pairs, one-way latency histogram
//   idle   hold N handshaken sessions; server RSS per session and CPU over the hold
// Exit codes as the rest of the CLI: 0 ok, 1 a check failed (loss, corruption, reordering, an
// error reply), 64 usage error, 69 server unavailable (connect failed, connection lost).
#include <cstddef>
#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace lariv::tools {

struct bench_options {
    std::string mode;                 // churn | route | rate | idle
    std::string protocol = "lariv";   // lariv | nats
    std::string server;               // host:port; filled by main from the common option
    bool server_given = false;        // --server or LARIV_SERVER was set (else nats uses :4222)
    std::string server2;              // route, rate: receivers connect here (another node)
    unsigned client_threads = 0;      // 0: mode default
    double seconds = 3.0;
    double warmup = 0.5;
    unsigned pairs = 1;
    std::size_t size = 16;
    bool ack = false;
    unsigned window = 64;
    std::size_t inflight_kib = 256;
    double rate = 10000;
    std::string histogram;            // rate/churn/idle: HdrHistogram percentile text file
    unsigned sessions = 1000;         // idle
    int server_pid = 0;               // read the server's RSS and CPU from /proc
    std::uint32_t timeout_ms = 5000;  // connect/handshake deadline, stall detection
    bool json = false;
    bool quiet = false;
};

/// Declares the `bench` subcommand's options on `sub` (the common ones stay on the parent).
void add_bench_options(CLI::App& sub, bench_options& o);

/// Runs the benchmark; returns the exit code.
int run_bench(bench_options o);

}  // namespace lariv::tools
