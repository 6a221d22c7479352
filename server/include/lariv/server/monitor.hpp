// lariv/server/monitor.hpp — the monitoring endpoint (its own port, loopback by default):
//   GET /healthz   200 "ok", or 503 "draining" as soon as a drain starts
//   GET /varz      the server as JSON: version, revision, start time, uptime, node id, boot epoch,
//                  limits, sessions, CPU and memory of the process, the STATS totals, and the
//                  configuration with its secrets redacted (as nats-server's /varz)
//   GET /metrics   Prometheus text format
//   GET /connz     sessions as JSON: ?limit=N&after=<id> (slot-order paging) or
//                  ?sort=age|msgs_in|msgs_out|queued&offset=N&limit=N (as nats-server's /connz);
//                  &name=<text> keeps sessions whose HELLO name contains <text>;
//                  ?state=closed: the ring of recently closed sessions (max_closed_sessions),
//                  newest first, with reason, duration and close time (offset/limit page it).
//                  Each entry: INFO's fields plus remote, bytes_in, bytes_out, idle_ms, rtt_us
// The path and the query's keys and values are percent-decoded ('+' is a space in the query);
// numbers are decimal digits in a range (limit 1..10000, offset 0..4294967295). A malformed
// escape or number, a parameter the endpoint does not take, or one given twice is a 400 whose
// text/plain body says why. HEAD answers as GET does, without the body.
// HTTP/1.0-style: one request per connection, bounded request size and time.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <asio/ip/tcp.hpp>
#include <nlohmann/json.hpp>

#include "lariv/server/cluster.hpp"
#include "lariv/server/config.hpp"
#include "lariv/server/registry.hpp"

namespace lariv::server {

class listener;
class http_conn;

class monitor {
public:
    /// Binds `ep` (throws listen_error naming the "monitor" listener and `ep`). `reg` must outlive the monitor and the HTTP
    /// connections it accepted (stop() closes those). Past `max_connections` open HTTP
    /// connections, a new one is answered 503 at once.
    monitor(asio::any_io_executor ex, const asio::ip::tcp::endpoint& ep, registry& reg,
            std::size_t max_connections = 16);
    ~monitor();
    void start();
    /// Stops accepting and closes the open HTTP connections (their handlers then run as no-ops).
    void stop();
    [[nodiscard]] std::uint16_t port() const noexcept;
    /// The bound address and port.
    [[nodiscard]] asio::ip::tcp::endpoint endpoint() const noexcept;

    /// The response body and status for a request target (path + query); for tests and embedders.
    struct response {
        int status = 200;
        std::string content_type;
        std::string body;
    };
    /// A malformed target is a 400, never an exception. `config` is what /varz shows as the
    /// configuration (secrets already redacted; null for none).
    [[nodiscard]] static response handle(registry& reg, const std::string& target,
                                         const nlohmann::json& config = nullptr, const cluster* cl = nullptr);
    /// The cluster /routez, /healthz?format=json and /metrics report (it must outlive the
    /// monitor). Call before start().
    void set_cluster(const cluster* c) noexcept { cluster_ = c; }
    /// The configuration /varz shows (larivd: redacted_json(cfg)). Call before start().
    void set_config(nlohmann::json redacted) {
        config_ = std::make_shared<const nlohmann::json>(std::move(redacted));
    }

    /// Open HTTP connections, and those refused over the cap.
    struct conn_count {
        std::atomic<std::size_t> open{0};
        std::atomic<std::uint64_t> refused{0};
    };
    [[nodiscard]] std::size_t open_connections() const noexcept { return count_->open.load(); }
    [[nodiscard]] std::uint64_t refused_connections() const noexcept { return count_->refused.load(); }

private:
    asio::any_io_executor ex_;
    registry& reg_;
    std::shared_ptr<conn_count> count_;
    std::shared_ptr<const nlohmann::json> config_;  // shared with the HTTP connections
    const cluster* cluster_ = nullptr;
    std::size_t max_connections_;
    std::shared_ptr<listener> listener_;
    std::mutex conns_mu_;
    std::vector<std::weak_ptr<http_conn>> conns_;
};

/// GET /healthz from cfg's monitor address and port (0.0.0.0 is probed as 127.0.0.1) with a 2 s
/// timeout; true on a 200 answer.
bool probe_health(const config& cfg);

}  // namespace lariv::server
