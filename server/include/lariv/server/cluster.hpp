// lariv/server/cluster.hpp — N registries are one: membership in etcd, routing by the id's node
// part over one TCP link per pair of nodes (PROTOCOL.md section 11, server/DESIGN.md "Cluster").
//
// A cluster object runs on the host's executor and owns no threads. Its life, for a host (larivd
// does exactly this in lariv::server::server):
//
//   lariv::server::cluster c(io.get_executor(), cluster_opts);   // binds the peer listener
//   c.async_join(token);          // void(std::error_code, std::uint32_t node_id): claims the id
//   registry_options o; o.node_id = c.node_id(); o.boot_epoch = c.boot_epoch();
//   lariv::server::registry reg(io.get_executor(), o);
//   c.attach(reg);                // routes reg's sends to other nodes; discovery and links start
//   ...
//   c.async_leave(token);         // void(std::error_code): revokes the lease (peers learn at once)
//
// Membership is etcd's (nothing home-made decides who is alive): the node id is a key
// /lariv/<cluster>/nodes/<id> created only if absent, attached to a lease kept alive; peers are
// found by watching the prefix. The registry's send() decides local vs remote by the id's node
// part; an id of a node the cluster does not know, or of an old boot epoch of it, is
// unknown_session; a known node without a link up is node_unreachable.
//
// Thread-safety: every member may be called from any thread. The registry must outlive the
// cluster's use of it only as the host's own objects do: attach() keeps a share of the registry's
// core, so destroying them in either order is safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/dispatch.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/prefer.hpp>
#include <nlohmann/json.hpp>

namespace lariv::server {

class registry;

/// A cluster member's settings (larivd: the cluster_* and peer_* keys).
struct cluster_options {
    std::string etcd;                ///< etcd's client URL, "http://host:port"
    std::string name = "lariv";      ///< the cluster: keys live under /lariv/<name>/
    std::uint32_t node_id = 0;       ///< 0 = auto: the lowest free id >= 1
    std::string peer_address = "127.0.0.1";  ///< the peer listener's bind address
    std::uint16_t peer_port = 0;     ///< 0 = an ephemeral port
    std::string peer_advertise;      ///< how peers reach this node; "" = peer_address:bound port
    std::string client_advertise;    ///< the client address published for tools ("" = none)
    std::string token;               ///< the cluster secret every link handshake proves
    std::chrono::seconds lease_ttl{10};           ///< the node key's lease
    std::size_t link_queue_bytes = 16U << 20;     ///< per-link outbound cap; over it: queue_full
    std::chrono::milliseconds heartbeat{1000};    ///< link PING interval; 3.5x without input = dead
    std::chrono::milliseconds join_timeout{30000};  ///< async_join gives up after this (etcd down)
    std::uint32_t boot_epoch = 0;    ///< 0 = random; the registry must use boot_epoch()
};

/// Why async_join failed (category cluster_category()).
enum class cluster_errc {
    id_taken = 1,      ///< an explicit node id is held by a live node (last_error() names it)
    etcd_unavailable,  ///< etcd did not answer within join_timeout
    no_free_id,        ///< auto found no free id after many tries
    left,              ///< the cluster was stopped
};
const std::error_category& cluster_category() noexcept;
inline std::error_code make_error_code(cluster_errc e) noexcept {
    return {static_cast<int>(e), cluster_category()};
}

/// A node that could not join (larivd: id_taken exits 78, the rest 69).
class cluster_error : public std::runtime_error {
public:
    cluster_error(std::error_code code, const std::string& what) : std::runtime_error(what), code_(code) {}
    [[nodiscard]] std::error_code code() const noexcept { return code_; }

private:
    std::error_code code_;
};

namespace detail {
class cluster_impl;
}

class cluster {
public:
    using executor_type = asio::any_io_executor;

    /// Validates `o` (throws config_error) and binds the peer listener (throws listen_error).
    /// Nothing talks to etcd until async_join.
    cluster(executor_type ex, cluster_options o);
    /// Stops at once: closes the links and etcd requests (the lease is not revoked: it expires
    /// after its TTL; call async_leave first for a clean leave).
    ~cluster();
    cluster(const cluster&) = delete;
    cluster& operator=(const cluster&) = delete;

    [[nodiscard]] executor_type get_executor() const noexcept;

    /// Grants a lease and claims the node id (explicit, or the lowest free one). Retries while
    /// etcd does not answer, up to join_timeout. An explicit id held by a live node fails with
    /// cluster_errc::id_taken at once, unless the holder advertises this node's own peer address
    /// (a previous run of it that crashed): then it waits up to the lease TTL for it to expire.
    /// Signature void(std::error_code, std::uint32_t node_id); any completion token.
    template <class Token>
    auto async_join(Token&& token) {
        return asio::async_initiate<Token, void(std::error_code, std::uint32_t)>(
            [this](auto handler) {
                auto h = std::make_shared<decltype(handler)>(std::move(handler));
                auto work = asio::prefer(asio::get_associated_executor(*h, get_executor()),
                                         asio::execution::outstanding_work.tracked);
                start_join([h, work](std::error_code ec, std::uint32_t id) {
                    asio::dispatch(work, [h, ec, id] { std::move (*h)(ec, id); });
                });
            },
            token);
    }
    /// Makes `reg` a member: its sends to other nodes' ids go over the links, and ROUTEs from
    /// peers reach its sessions. Starts the watch and the links. Call once, after async_join,
    /// with a registry built with node_id() and boot_epoch().
    void attach(registry& reg);
    /// Revokes the lease (peers drop this node at once) and stops renewing it. The links stay
    /// up so that answers to what is in flight still arrive. void(std::error_code).
    template <class Token>
    auto async_leave(Token&& token) {
        return asio::async_initiate<Token, void(std::error_code)>(
            [this](auto handler) {
                auto h = std::make_shared<decltype(handler)>(std::move(handler));
                auto work = asio::prefer(asio::get_associated_executor(*h, get_executor()),
                                         asio::execution::outstanding_work.tracked);
                start_leave([h, work](std::error_code ec) {
                    asio::dispatch(work, [h, ec] { std::move (*h)(ec); });
                });
            },
            token);
    }

    [[nodiscard]] std::uint32_t node_id() const noexcept;
    [[nodiscard]] std::uint32_t boot_epoch() const noexcept;
    [[nodiscard]] std::uint16_t peer_port() const noexcept;
    [[nodiscard]] const cluster_options& options() const noexcept;
    /// The last membership or link error, "" if none.
    [[nodiscard]] std::string last_error() const;
    /// The /routez body: this node, the etcd lease, every peer with its link and counters.
    [[nodiscard]] nlohmann::json routez() const;
    /// The cluster part of /healthz?format=json: name, node, epoch, lease, peers, peers_up.
    [[nodiscard]] nlohmann::json health() const;
    /// True while the lease is held (the node is advertised).
    [[nodiscard]] bool lease_held() const noexcept;
    /// The lariv_cluster_* metrics, Prometheus text format.
    void write_metrics(std::ostream& o) const;

private:
    void start_join(std::function<void(std::error_code, std::uint32_t)> done);
    void start_leave(std::function<void(std::error_code)> done);
    std::shared_ptr<detail::cluster_impl> impl_;
};

}  // namespace lariv::server

template <>
struct std::is_error_code_enum<lariv::server::cluster_errc> : std::true_type {};
