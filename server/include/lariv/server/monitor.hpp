// lariv/server/monitor.hpp — the monitoring endpoint (its own port, loopback by default):
//   GET /healthz   200 "ok", or 503 "draining" as soon as a drain starts
//   GET /metrics   Prometheus text format
//   GET /connz     sessions as JSON: ?limit=N&after=<id> (slot-order paging) or
//                  ?sort=age|msgs_in|msgs_out|queued&offset=N&limit=N (as nats-server's /connz);
//                  &name=<text> keeps sessions whose HELLO name contains <text>
// HTTP/1.0-style: one request per connection, bounded request size and time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <asio/ip/tcp.hpp>

#include "lariv/server/config.hpp"
#include "lariv/server/registry.hpp"

namespace lariv::server {

class listener;

class monitor {
public:
    /// Binds `ep` (throws std::system_error). `reg` must outlive the monitor.
    monitor(asio::any_io_executor ex, const asio::ip::tcp::endpoint& ep, registry& reg);
    ~monitor();
    void start();
    void stop();
    [[nodiscard]] std::uint16_t port() const noexcept;

    /// The response body and status for a request target (path + query); for tests and embedders.
    struct response {
        int status = 200;
        std::string content_type;
        std::string body;
    };
    [[nodiscard]] static response handle(registry& reg, const std::string& target);

private:
    asio::any_io_executor ex_;
    registry& reg_;
    std::shared_ptr<listener> listener_;
};

/// GET /healthz from cfg's monitor address and port (0.0.0.0 is probed as 127.0.0.1) with a 2 s
/// timeout; true on a 200 answer.
bool probe_health(const config& cfg);

}  // namespace lariv::server
