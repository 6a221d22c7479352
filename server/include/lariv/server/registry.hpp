// lariv/server/registry.hpp — the session registry as an Asio library: connections held in a
// Lariv under 128-bit ids (node id | boot epoch | scrambled generation and slot), with lookup,
// routing, eviction, iteration, paging, stats, drain and an asynchronous shutdown.
//
// It runs on the host's executor, owns no threads, installs no signal handler. Two kinds of
// member share one registry and route to each other in both directions:
//   - adopt(stream): a connected Asio stream (tcp::socket, ssl::stream<tcp::socket>,
//     local::stream_protocol::socket, ...) becomes a Lariv-protocol session (PROTOCOL.md);
//   - attach(shared_ptr<T>): the host's own connection object, any T satisfying `host_session`
//     (host_session.hpp); the host keeps its own protocol.
//
// Thread-safety: every public member may be called from any thread at once. Lookups, routing,
// kicks and iteration take no lock of the registry's own (that is what Lariv is for).
//
// Lifetime: destroying the registry is safe at any moment, with its io_context running, stopped,
// or never run again. Sessions share ownership of the registry's core (detail/registry_core.hpp),
// so a handler that runs later finds it alive; the destructor disables the hooks, closes every
// session (reason shutdown) and lets go of them without waiting. The io_context must outlive the
// registry *object* (as for any Asio I/O object); the sessions it still holds die with it.
// For a clean end (every session told, flushed and closed), co_await / wait for async_shutdown.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <system_error>
#include <utility>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/async_result.hpp>
#include <asio/error.hpp>
#include <asio/execution/outstanding_work.hpp>
#include <asio/post.hpp>
#include <asio/prefer.hpp>

#include "lariv/protocol/error.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/protocol/session_id.hpp"
#include "lariv/server/detail/registry_core.hpp"
#include "lariv/server/host_session.hpp"
#include "lariv/server/options.hpp"
#include "lariv/server/session.hpp"
#include "lariv/server/session_state.hpp"

namespace lariv::server {

class registry {
public:
    using executor_type = asio::any_io_executor;

    /// Sessions run on strands of their stream's executor; the registry's own timers on `ex`.
    /// `opts` is validated (throws config_error) and copied; boot_epoch 0 becomes a random one.
    registry(executor_type ex, const registry_options& opts, hooks h = {});
    /// Safe at any moment (see the header comment); never blocks on a session.
    ~registry();
    registry(const registry&) = delete;
    registry& operator=(const registry&) = delete;

    [[nodiscard]] executor_type get_executor() const noexcept { return core_->executor(); }

    /// Takes a connected stream and makes it a Lariv-protocol session (or refuses it with
    /// server_full / draining, telling the client). Returns at once. A TLS stream must have
    /// completed its handshake; lariv/server/tls.hpp's tls_stream also keeps its ssl::context
    /// alive for as long as the session lives (a bare ssl::stream leaves that to the caller). The session runs on a
    /// strand of the stream's executor: accept onto the io_context's executor (as
    /// `acceptor.async_accept(io, ...)` does), not onto a strand shared by many streams, or
    /// their sessions run one at a time.
    template <class Stream>
    void adopt(Stream stream) {
        core_->admit(std::make_shared<stream_session<Stream>>(core_, std::move(stream)));
    }

    /// Registers the host's own session. Returns its id, or nullopt when the registry is full or
    /// shutting down. From now on it is live (routable). The host calls detach(id) once it ended.
    template <host_session T>
    std::optional<protocol::session_id> attach(std::shared_ptr<T> s) {
        return core_->attach(std::make_shared<detail::host_entry<T>>(std::move(s)));
    }
    /// The host session `id` ended (its transport is closed). False if no such host session.
    bool detach(protocol::session_id id) { return core_->detach(id); }

    /// The visible session with this id (any kind), or nullptr.
    [[nodiscard]] std::shared_ptr<session_base> find(protocol::session_id id) const {
        return core_->find(id);
    }
    /// The Lariv-protocol session with this id, or nullptr.
    [[nodiscard]] std::shared_ptr<session> find_session(protocol::session_id id) const;
    /// Why `id` names no routable session (PROTOCOL.md section 5): stale_session = this node and
    /// boot issued it and that session has ended (or is ending); unknown_session = not issued
    /// here (another node or epoch, a generation its slot has not reached, or a session whose
    /// HELLO is not accepted yet).
    [[nodiscard]] protocol::error_code missing_reason(protocol::session_id id) const {
        return core_->missing_reason(id);
    }
    /// Routes `payload` to session `to` (any kind) as a message from `from`. nullopt = queued.
    /// Only live sessions are routable (a Lariv-protocol session after its HELLO).
    std::optional<protocol::error_code> send(protocol::session_id to, protocol::session_id from,
                                             std::string_view payload) {
        return core_->send(to, from, payload);
    }
    /// Closes session `id` with `why`. False if there is no such session.
    bool kick(protocol::session_id id, close_reason why = close_reason::kicked) {
        return core_->kick(id, why);
    }
    /// Calls f(session_base&) for visible sessions in slot order, from `first_slot`; f may return
    /// false to stop. Weakly consistent (Lariv's iteration). f runs without a guard held.
    void for_each(const std::function<bool(session_base&)>& f, std::uint32_t first_slot = 0) const {
        core_->for_each(f, first_slot);
    }
    /// One page of session infos after `after`, in slot order (a session shows at most once
    /// across pages while others come and go). `keep`, if given, filters the sessions. With
    /// `max_body` != 0 the page also stops early, with its `next` cursor set, where its JSON (the
    /// `+LIST` body) would pass that many bytes: the wire LIST passes limits.max_json.
    [[nodiscard]] protocol::list_page list(std::optional<protocol::session_id> after, std::uint32_t limit,
                                           const std::function<bool(const session_base&)>& keep = {},
                                           std::size_t max_body = 0) const {
        return core_->list(after, limit, keep, max_body);
    }
    /// The page size list() applies for a requested `limit` (0 = the default 100; at most
    /// limits.max_list).
    [[nodiscard]] std::uint32_t page_limit(std::uint32_t limit) const noexcept {
        return core_->page_limit(limit);
    }
    /// The Lariv slot an id of this registry decodes to (ids are scrambled), or nullopt for an id
    /// of another node or boot. For tests and diagnostics.
    [[nodiscard]] std::optional<std::uint32_t> slot_of(protocol::session_id id) const {
        return core_->slot_of(id);
    }
    /// The Lariv index (generation and slot) an id of this registry decodes to, or nullopt.
    [[nodiscard]] std::optional<lariv::Index> index_of(protocol::session_id id) const {
        return core_->index_of(id);
    }

    /// Connections still open (registered or not, closing included).
    [[nodiscard]] std::size_t open_connections() const noexcept { return core_->open_connections(); }
    /// Registered sessions (approximate under concurrency).
    [[nodiscard]] std::size_t size() const noexcept { return core_->size(); }
    [[nodiscard]] registry_stats& stats() noexcept { return core_->stats(); }
    [[nodiscard]] const registry_stats& stats() const noexcept { return core_->stats(); }
    [[nodiscard]] nlohmann::json stats_json() const;
    [[nodiscard]] const registry_options& options() const noexcept { return core_->options(); }
    [[nodiscard]] std::uint32_t node_id() const noexcept { return options().node_id; }
    [[nodiscard]] std::uint32_t boot_epoch() const noexcept { return options().boot_epoch; }
    [[nodiscard]] std::size_t lariv_buffers() const noexcept { return core_->lariv_buffers(); }
    [[nodiscard]] std::size_t lariv_capacity() const noexcept { return core_->lariv_capacity(); }
    [[nodiscard]] std::uint64_t queued_bytes_total() const;
    [[nodiscard]] const hot_settings& hot() const noexcept { return core_->hot(); }
    /// The last options().max_closed_sessions sessions that closed (/connz?state=closed).
    [[nodiscard]] const detail::closed_ring& recently_closed() const noexcept {
        return core_->recently_closed();
    }

    /// Graceful shutdown: stop admitting (new connections are told `draining`), tell every
    /// session to drain (flush what was accepted for it, then close), and complete when every
    /// connection is closed, or after `grace` with the stragglers closed at once and the error
    /// asio::error::timed_out (operation_aborted if the registry object is destroyed while it is
    /// pending: it still completes). Signature void(std::error_code); any completion token (callback,
    /// use_awaitable, use_future, experimental::deferred). Completes on the handler's associated
    /// executor, exactly once; calling it again (or after it completed) is fine.
    /// Per-operation cancellation (asio::bind_cancellation_slot, parallel_group, ...): any
    /// cancellation type completes that wait at once with operation_aborted; the shutdown itself
    /// goes on. A cancellation emitted after completion does nothing.
    template <class Token>
    auto async_shutdown(std::chrono::milliseconds grace, Token&& token) {
        return asio::async_initiate<Token, void(std::error_code)>(
            [](auto handler, std::shared_ptr<detail::registry_core> core, std::chrono::milliseconds g) {
                using handler_t = std::decay_t<decltype(handler)>;
                auto slot = asio::get_associated_cancellation_slot(handler);
                auto w = std::make_unique<waiter<handler_t>>(std::move(handler), core->executor());
                w->ticket = core->next_ticket();
                if (slot.is_connected()) {
                    // Assigned before the wait is stored, so no completion can precede it.
                    slot.assign([weak = std::weak_ptr<detail::registry_core>(core),
                                 ticket = w->ticket](asio::cancellation_type type) {
                        if (type != asio::cancellation_type::none) {
                            if (auto c = weak.lock()) {
                                c->cancel_waiter(ticket);
                            }
                        }
                    });
                }
                core->async_shutdown(g, std::move(w));
            },
            token, core_, grace);
    }
    /// Starts a drain without waiting for it (async_shutdown with no waiter and no grace).
    void drain() { core_->drain(); }
    [[nodiscard]] bool draining() const noexcept {
        return core_->current_phase() != detail::registry_core::phase::running;
    }
    /// Closes every session now with `why`.
    void close_all(close_reason why) { core_->close_all(why); }
    /// Applies the hot-reloadable settings: max_sessions, max_queue_bytes, rate_limit, rate_burst,
    /// idle_timeout_ms (validated first; throws config_error). Others need a restart.
    void reload(const registry_options& opts);

private:
    friend class cluster;  // attach() installs its router in the core

    template <class Handler>
    struct waiter final : detail::shutdown_waiter {
        // decay: asio::prefer returns T&& when the executor ignores the property (e.g.
        // use_future's promise_executor); a reference member would dangle.
        using work_t = std::decay_t<decltype(asio::prefer(
            asio::get_associated_executor(std::declval<Handler&>(), std::declval<const executor_type&>()),
            asio::execution::outstanding_work.tracked))>;
        waiter(Handler h, const executor_type& fallback)
            : work(asio::prefer(asio::get_associated_executor(h, fallback),
                                asio::execution::outstanding_work.tracked))
            , handler(std::move(h)) {}
        void complete(std::error_code ec) override {
            auto ex = work;
            asio::post(ex, [h = std::move(handler), w = std::move(work), ec]() mutable {
                (void)w;
                // The slot is left as it is: clearing it here could race an emit on another
                // thread, and the handler assigned to it holds only a weak_ptr and a ticket, so
                // a late emit finds nothing to cancel (the next operation's assign replaces it).
                std::move(h)(ec);
            });
        }
        work_t work;  // keeps the handler's executor busy while the shutdown is pending
        Handler handler;
    };

    std::shared_ptr<detail::registry_core> core_;
};

}  // namespace lariv::server
