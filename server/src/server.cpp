#include "lariv/server/server.hpp"

#include <sys/resource.h>

#include <optional>

#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include "lariv/server/listener.hpp"
#include "lariv/server/log.hpp"
#include "lariv/server/monitor.hpp"
#include "lariv/server/tls.hpp"

namespace lariv::server {

std::size_t clamp_to_fd_limit(std::size_t max_sessions, std::size_t reserve) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
        return max_sessions;
    }
    // Raise the soft limit toward the hard one first, as daemons do.
    if (rl.rlim_cur < rl.rlim_max) {
        rlimit want = rl;
        want.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0) {
            rl = want;
        }
    }
    const auto limit = static_cast<std::size_t>(rl.rlim_cur);
    const std::size_t usable = limit > reserve ? limit - reserve : 1;
    return std::min(max_sessions, usable);
}

namespace {
/// The registry's options from a config: max_sessions clamped to the fd limit. The one path for
/// start-up and SIGHUP.
registry_options effective_options(const config& c, std::size_t& clamped) {
    c.validate();
    // The monitor's connections have a cap of their own and their descriptors are reserved too,
    // so monitor load never takes a descriptor a session could have had.
    const std::size_t reserve = reserved_fds + (c.monitor_port != 0 ? c.max_monitor_connections : 0);
    clamped = clamp_to_fd_limit(c.max_sessions, reserve);
    if (clamped < c.max_sessions) {
        log::event(spdlog::level::warn, "max_sessions lowered to fit the open-file limit",
                   {{"requested", c.max_sessions}, {"max_sessions", clamped}, {"reserved_fds", reserve}});
    }
    registry_options o = c;
    o.max_sessions = clamped;
    return o;
}

tls_files tls_files_of(const config& c) { return {c.tls_cert, c.tls_key, c.tls_ca}; }

cluster_options cluster_options_of(const config& c) {
    cluster_options o;
    o.etcd = c.cluster_etcd;
    o.name = c.cluster_name;
    o.node_id = c.node_id_auto ? 0 : c.node_id;
    o.peer_address = c.peer_address;
    o.peer_port = c.peer_port;
    o.peer_advertise = c.peer_advertise;
    if (!c.listen_address.empty()) {
        o.client_advertise = c.listen_address + ":" + std::to_string(c.port);
    }
    o.token = c.cluster_token;
    o.lease_ttl = std::chrono::seconds(c.cluster_lease_ttl_s);
    o.link_queue_bytes = c.cluster_link_queue_bytes;
    o.join_timeout = std::chrono::milliseconds(c.cluster_join_timeout_ms);
    o.boot_epoch = c.boot_epoch;
    return o;
}
}  // namespace

server::server(const config& cfg, hooks h)
    : cfg_(cfg)
    , work_(asio::make_work_guard(io_)) {
    std::size_t clamped = 0;
    registry_options opts = effective_options(cfg_, clamped);
    max_sessions_.store(clamped);
    if (cfg_.cluster_enabled()) {
        // The node id comes from etcd before any session exists: claim it now, running the
        // io_context on this thread until the claim completes (the I/O threads start later).
        cluster_ = std::make_unique<cluster>(io_.get_executor(), cluster_options_of(cfg_));
        std::optional<std::error_code> joined;
        cluster_->async_join([&joined](std::error_code ec, std::uint32_t) { joined = ec; });
        while (!joined) {
            io_.run_one();
        }
        if (*joined) {
            const std::string why = cluster_->last_error();
            cluster_.reset();
            io_.restart();
            io_.poll();
            throw cluster_error(*joined, "cluster: " + joined->message() + (why.empty() ? "" : ": " + why));
        }
        opts.node_id = cluster_->node_id();
        opts.boot_epoch = cluster_->boot_epoch();
        cfg_.node_id = opts.node_id;
    }
    registry_ = std::make_unique<registry>(io_.get_executor(), opts, std::move(h));
    cfg_.boot_epoch = registry_->boot_epoch();
    if (cluster_) {
        cluster_->attach(*registry_);
    }

    listener::options lo{.backoff_min = std::chrono::milliseconds(cfg_.accept_backoff_min_ms),
                         .backoff_max = std::chrono::milliseconds(cfg_.accept_backoff_max_ms),
                         .name = "client",
                         .socket_executor = {}};
    if (cfg_.io_model == "per_thread" && cfg_.effective_threads() > 1) {
        // A session lives on the io_context its socket was accepted onto: its strand then has
        // one thread, so its handlers never move between cores, and a delivery from another
        // thread is a post that wakes the target's thread (server/DESIGN.md, "Threading").
        for (unsigned i = 1; i < cfg_.effective_threads(); ++i) {
            pool_.push_back(std::make_unique<asio::io_context>(1));
            pool_work_.push_back(asio::make_work_guard(*pool_.back()));
        }
        lo.socket_executor = [this]() -> asio::any_io_executor {
            // relaxed: a round-robin counter; any spread is correct.
            const std::size_t k = next_context_.fetch_add(1, std::memory_order_relaxed) % (pool_.size() + 1);
            return k == 0 ? asio::any_io_executor(io_.get_executor())
                          : asio::any_io_executor(pool_[k - 1]->get_executor());
        };
    }
    auto on_accept_error = [this] {
        registry_->stats().accept_errors.fetch_add(1, std::memory_order_relaxed);
    };
    // Addresses: an IP address, or a name resolved to its first address (config_error if none).
    if (!cfg_.listen_address.empty()) {
        const auto ep = resolve_endpoint("listen_address", cfg_.listen_address, cfg_.port);
        lo.name = "client";
        listener_ = std::make_shared<listener>(
            io_.get_executor(), ep, [this](asio::ip::tcp::socket s) { registry_->adopt(std::move(s)); },
            lo, on_accept_error);
        port_ = listener_->port();
    }
    if (cfg_.tls_enabled()) {
        tls_ctx_ = make_server_tls_context(tls_files_of(cfg_));  // config_error names the key
        const auto tep = resolve_endpoint(cfg_.tls_listen_address.empty() ? "tls_listen_address (from listen_address)"
                                                                          : "tls_listen_address",
                                          cfg_.effective_tls_address(), cfg_.tls_port);
        lo.name = "TLS";
        tls_listener_ = std::make_shared<listener>(
            io_.get_executor(), tep, [this](asio::ip::tcp::socket s) { on_tls_accept(std::move(s)); },
            lo, on_accept_error);
        tls_port_ = tls_listener_->port();
    }
    if (cfg_.monitor_port != 0) {
        const auto mep = resolve_endpoint("monitor_address", cfg_.monitor_address, cfg_.monitor_port);
        monitor_ = std::make_unique<monitor>(io_.get_executor(), mep, *registry_,
                                             cfg_.max_monitor_connections);
        monitor_->set_config(redacted_json(cfg_));
        monitor_->set_cluster(cluster_.get());
        monitor_port_ = monitor_->port();
        monitor_endpoint_ = endpoint_text(monitor_->endpoint());
    }
}

server::~server() {
    stop();
    wait();
    // Shutdown order (server/DESIGN.md): the threads are gone; run out what is queued while the
    // registry and the monitor still exist, then drop them. Handlers that remain hold the
    // registry's core (shared), never the server, so the io_context may destroy them later.
    if (monitor_) {
        monitor_->stop();
    }
    cluster_.reset();  // closes the links and etcd requests (queued: the poll below runs them)
    run_out();
    monitor_.reset();
    registry_.reset();
    run_out();  // what dropping the registry queued on the sessions' io_contexts
}

void server::run_out() {
    // Handlers of one io_context may queue work on another (a delivery to a session on another
    // thread): poll them all until a whole round runs nothing.
    for (int round = 0; round < 1000; ++round) {
        std::size_t ran = 0;
        io_.restart();
        ran += io_.poll();
        for (auto& c : pool_) {
            c->restart();
            ran += c->poll();
        }
        if (ran == 0) {
            return;
        }
    }
}

void server::start(const nlohmann::ordered_json& extra) {
    if (listener_) {
        listener_->start();
    }
    if (tls_listener_) {
        tls_listener_->start();
    }
    if (monitor_) {
        monitor_->start();
    }
    const unsigned n = cfg_.effective_threads();
    for (unsigned i = 0; i < n; ++i) {
        asio::io_context& ctx = (pool_.empty() || i == 0) ? io_ : *pool_[i - 1];
        threads_.emplace_back([&ctx] {
            for (;;) {
                try {
                    ctx.run();
                    return;
                } catch (const std::exception& e) {
                    log::event(spdlog::level::err, "I/O thread: unhandled exception", {{"error", e.what()}});
                }
            }
        });
    }
    if (log::enabled(spdlog::level::info)) {
        log::fields f = log::fields::object();
        for (const auto& [k, v] : extra.items()) {
            f[k] = v;
        }
        const nlohmann::ordered_json d = describe();  // named: items() of a temporary dangles
        for (const auto& [k, v] : d.items()) {
            f[k] = v;
        }
        log::event(spdlog::level::info, "larivd started", f);
    }
}

nlohmann::ordered_json server::describe() const {
    const registry_options& o = registry_->options();
    nlohmann::ordered_json f = nlohmann::ordered_json::object();
    f["version"] = LARIV_VERSION;
    f["listen"] = listener_ ? endpoint_text(listener_->endpoint()) : std::string("off");
    f["tls"] = tls_listener_ ? endpoint_text(tls_listener_->endpoint()) : std::string("off");
    f["monitor"] = monitor_ ? monitor_endpoint_ : std::string("off");
    f["node"] = cfg_.node_id;
    if (cluster_) {
        f["cluster"] = cfg_.cluster_name;
        f["peer"] = cluster_->routez().value("peer_address", std::string());
        f["etcd"] = cfg_.cluster_etcd;
    }
    f["epoch"] = cfg_.boot_epoch;
    f["threads"] = cfg_.effective_threads();
    f["io_model"] = pool_.empty() ? "shared" : "per_thread";
    // On or off only: a token never reaches a log line.
    f["client_auth"] = !o.auth_token.empty();
    f["admin_auth"] = !o.admin_token.empty();
    f["tls_client_certs"] = tls_listener_ && !cfg_.tls_ca.empty();
    f["max_sessions"] = max_sessions();
    f["max_sessions_requested"] = cfg_.max_sessions;
    f["max_sessions_per_ip"] = o.max_sessions_per_ip;
    f["max_monitor_connections"] = cfg_.max_monitor_connections;
    f["max_line"] = o.limits.max_line;
    f["max_payload"] = o.limits.max_payload;
    f["max_json"] = o.limits.max_json;
    f["max_queue_bytes"] = o.max_queue_bytes;
    f["slow_consumer"] = o.slow_consumer == slow_consumer_policy::drop ? "drop" : "disconnect";
    f["rate_limit"] = o.rate_limit;
    f["rate_burst"] = o.rate_burst;
    f["handshake_timeout_ms"] = o.handshake_timeout_ms;
    f["frame_timeout_ms"] = o.frame_timeout_ms;
    f["heartbeat_ms"] = o.heartbeat_ms;
    f["idle_timeout_ms"] = o.idle_timeout_ms;
    f["write_deadline_ms"] = o.write_deadline_ms;
    f["drain_timeout_ms"] = o.drain_timeout_ms;
    return f;
}

void server::drain() {
    if (draining_.exchange(true) || stopped_.load()) {
        return;
    }
    log::event(spdlog::level::info, "draining",
               {{"sessions", registry_->size()}, {"drain_timeout_ms", cfg_.drain_timeout_ms}});
    if (cluster_) {
        // Leave first (the lease revoked: peers drop this node at once), then drain.
        cluster_->async_leave([this](std::error_code) {
            shutdown_then_stop(std::chrono::milliseconds(cfg_.drain_timeout_ms));
        });
        return;
    }
    shutdown_then_stop(std::chrono::milliseconds(cfg_.drain_timeout_ms));
}

void server::stop() {
    if (stopped_.exchange(true)) {
        return;
    }
    shutdown_then_stop(std::chrono::milliseconds(50));
}

void server::shutdown_then_stop(std::chrono::milliseconds grace) {
    if (listener_) {
        listener_->stop();
    }
    if (tls_listener_) {
        tls_listener_->stop();
    }
    registry_->async_shutdown(grace, [this, grace](std::error_code ec) {
        if (ec) {
            log::event(spdlog::level::warn, "shutdown: grace over, remaining connections closed",
                       {{"grace_ms", grace.count()}});
        } else if (draining_.load()) {
            log::event(spdlog::level::info, "drained: every session closed", {{"grace_ms", grace.count()}});
        }
        if (monitor_) {
            monitor_->stop();
        }
        // Stop the io_context only once both acceptors are closed: their close was posted to
        // their strands above, but a drain that ends within milliseconds could otherwise stop
        // the threads first and leave a listening socket whose new connections nobody answers
        // until ~server.
        std::function<void()> finish = [this] {
            stopped_.store(true);
            work_.reset();
            pool_work_.clear();
            io_.stop();
            for (auto& c : pool_) {
                c->stop();
            }
        };
        if (tls_listener_) {
            finish = [l = tls_listener_, finish] { l->stop(finish); };
        }
        if (listener_) {
            listener_->stop(std::move(finish));
        } else {
            finish();
        }
    });
}

void server::reload(const config& next) {
    std::size_t clamped = 0;
    const registry_options opts = effective_options(next, clamped);
    // TLS: a new context from the files as they are now, built before anything changes, so an
    // unreadable or mismatched file rejects the reload and the old context stays in use.
    std::shared_ptr<asio::ssl::context> ctx;
    if (tls_listener_ && next.tls_enabled()) {
        ctx = make_server_tls_context(tls_files_of(next));
    } else if (tls_listener_ || next.tls_enabled()) {
        log::event(spdlog::level::warn, "reload: turning TLS on or off needs a restart",
                   {{"tls", tls_listener_ ? "stays on with the current certificate" : "stays off"}});
    }
    registry_->reload(opts);
    max_sessions_.store(clamped);
    if (ctx) {
        {
            std::lock_guard lk(tls_mu_);
            tls_ctx_.swap(ctx);
        }
        // `ctx` is now the old context: released here unless streams made from it still live.
        log::event(spdlog::level::info, "reload: TLS certificate loaded for new connections",
                   {{"tls_cert", next.tls_cert}});
    }
}

std::shared_ptr<asio::ssl::context> server::tls_context() const {
    std::lock_guard lk(tls_mu_);
    return tls_ctx_;
}

void server::on_tls_accept(asio::ip::tcp::socket s) {
    // A handshake in progress holds a descriptor and memory like a session does: it counts
    // against max_sessions, and the deadline (handshake_timeout_ms) bounds how long it may.
    registry_stats& st = registry_->stats();
    const std::size_t pending = tls_pending_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (registry_->open_connections() + pending > max_sessions()) {
        tls_pending_.fetch_sub(1, std::memory_order_relaxed);
        st.refused_full.fetch_add(1, std::memory_order_relaxed);
        st.closed[static_cast<std::size_t>(close_reason::server_full)].fetch_add(1, std::memory_order_relaxed);
        std::error_code ec;
        s.close(ec);  // nothing can be said before the handshake: the client sees a close
        return;
    }
    async_server_handshake(
        tls_stream(std::move(s), tls_context()), std::chrono::milliseconds(cfg_.handshake_timeout_ms),
        [this](std::error_code ec, tls_stream&& ts) {
            tls_pending_.fetch_sub(1, std::memory_order_relaxed);
            registry_stats& stats = registry_->stats();
            if (ec) {
                stats.tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
                log::event(spdlog::level::debug, "TLS handshake failed", [&] {
                    return log::fields{{"remote", detail::peer_text(ts.lowest_layer())},
                                       {"error", ec.message()}};
                });
                return;  // the stream (and its socket) is destroyed with the handshake
            }
            stats.tls_handshakes.fetch_add(1, std::memory_order_relaxed);
            registry_->adopt(std::move(ts));
        });
}

void server::wait() {
    for (auto& t : threads_) {
        if (t.joinable() && t.get_id() != std::this_thread::get_id()) {
            t.join();
        }
    }
    threads_.clear();
}

}  // namespace lariv::server
