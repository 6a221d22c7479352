#include "lariv/server/registry.hpp"

#include <chrono>

#include "lariv/server/session.hpp"

namespace lariv::server {

std::string_view to_string(close_reason r) noexcept {
    switch (r) {
        case close_reason::client_quit:
            return "client_quit";
        case close_reason::client_closed:
            return "client_closed";
        case close_reason::io_error:
            return "io_error";
        case close_reason::protocol_error:
            return "protocol_error";
        case close_reason::handshake_timeout:
            return "handshake_timeout";
        case close_reason::heartbeat_timeout:
            return "heartbeat_timeout";
        case close_reason::idle_timeout:
            return "idle_timeout";
        case close_reason::frame_timeout:
            return "frame_timeout";
        case close_reason::slow_consumer:
            return "slow_consumer";
        case close_reason::kicked:
            return "kicked";
        case close_reason::server_full:
            return "server_full";
        case close_reason::draining:
            return "draining";
        case close_reason::count_:
            break;
    }
    return "unknown";
}

std::optional<protocol::error_code> error_for(close_reason r) noexcept {
    using protocol::error_code;
    switch (r) {
        case close_reason::handshake_timeout:
        case close_reason::heartbeat_timeout:
        case close_reason::idle_timeout:
        case close_reason::frame_timeout:
            return error_code::timeout;
        case close_reason::slow_consumer:
            return error_code::slow_consumer;
        case close_reason::kicked:
            return error_code::not_authorized;
        case close_reason::server_full:
            return error_code::server_full;
        case close_reason::draining:
            return error_code::draining;
        default:
            return std::nullopt;  // the client left, or the stream is already broken
    }
}

namespace {
config with_epoch(config c) {
    if (c.boot_epoch == 0) {
        // Seconds since the Unix epoch: a new value at each start, so ids never repeat across
        // restarts of a node (unless two starts fall in the same second; set boot_epoch then).
        const auto now = std::chrono::system_clock::now().time_since_epoch();
        c.boot_epoch = static_cast<std::uint32_t>(
            std::chrono::duration_cast<std::chrono::seconds>(now).count());
        if (c.boot_epoch == 0) {
            c.boot_epoch = 1;
        }
    }
    return c;
}
}  // namespace

registry::registry(asio::any_io_executor ex, const config& cfg, hooks h)
    : ex_(std::move(ex))
    , cfg_(with_epoch(cfg))
    , hooks_(std::move(h))
    , sessions_(lariv::Options{.buffer_capacity = cfg_.registry_buffer,
                               .node_id = cfg_.node_id,
                               .tag = cfg_.boot_epoch}) {
    reload(cfg_);
}

registry::~registry() {
    close_all(close_reason::draining);
    // Drop the registry's references; sessions still running handlers keep themselves alive.
    std::vector<lariv::Index> all;
    sessions_.for_each([&](const lariv::Index& i, const std::shared_ptr<session>&) { all.push_back(i); });
    for (const auto& i : all) {
        (void)sessions_.take(i);
    }
}

void registry::adopt(asio::ip::tcp::socket socket) {
    stats_.accepted.fetch_add(1, std::memory_order_relaxed);
    open_.fetch_add(1, std::memory_order_relaxed);  // released in session::finish_close
    auto s = std::make_shared<session>(*this, std::move(socket));
    if (draining()) {
        s->refuse(protocol::error_code::draining, "server is draining");
        return;
    }
    auto idx = add(s);
    if (!idx) {
        stats_.refused_full.fetch_add(1, std::memory_order_relaxed);
        stats_.closed[static_cast<std::size_t>(close_reason::server_full)].fetch_add(1);
        s->refuse(protocol::error_code::server_full, "max sessions reached");
        return;
    }
    s->start(*idx);
}

std::optional<lariv::Index> registry::add(const std::shared_ptr<session>& s) {
    // Reserve a place under max_sessions first (relaxed: a counter, not a publication).
    std::size_t n = live_.load(std::memory_order_relaxed);
    do {
        if (n >= hot_.max_sessions.load(std::memory_order_relaxed)) {
            return std::nullopt;
        }
    } while (!live_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    auto idx = sessions_.try_push(s);
    if (!idx) {
        live_.fetch_sub(1, std::memory_order_relaxed);
    }
    return idx;
}

void registry::remove(lariv::Index i) {
    if (sessions_.remove(i)) {
        live_.fetch_sub(1, std::memory_order_relaxed);
    }
}

std::shared_ptr<session> registry::find(protocol::session_id id) const {
    // Copy the shared_ptr under the guard and let the guard go: no I/O under a guard.
    if (auto g = sessions_.get(to_index(id))) {
        return *g;
    }
    return nullptr;
}

protocol::error_code registry::missing_reason(protocol::session_id id) const {
    if (id.node() == cfg_.node_id && id.epoch() == cfg_.boot_epoch && id.generation() != 0 &&
        id.slot() < sessions_.capacity()) {
        return protocol::error_code::stale_session;
    }
    return protocol::error_code::unknown_session;
}

std::optional<protocol::error_code> registry::send(protocol::session_id to,
                                                   protocol::session_id from,
                                                   std::string_view payload) {
    if (draining()) {
        return protocol::error_code::draining;
    }
    auto target = find(to);
    if (!target) {
        return missing_reason(to);
    }
    switch (target->deliver(from, payload)) {
        case session::enqueue_result::ok:
            stats_.msgs_out.fetch_add(1, std::memory_order_relaxed);
            stats_.bytes_routed.fetch_add(payload.size(), std::memory_order_relaxed);
            return std::nullopt;
        case session::enqueue_result::queue_full:
            stats_.queue_drops.fetch_add(1, std::memory_order_relaxed);
            return protocol::error_code::queue_full;
        case session::enqueue_result::closed:
            break;
    }
    return missing_reason(to);
}

bool registry::kick(protocol::session_id id, close_reason why) {
    auto s = find(id);
    if (!s) {
        return false;
    }
    s->close(why);
    return true;
}

void registry::for_each(const std::function<bool(session&)>& f, std::uint32_t first_slot) const {
    // Collect a bounded batch of shared_ptrs under guards, then call f without any guard held.
    std::vector<std::shared_ptr<session>> batch;
    std::uint32_t next = first_slot;
    bool more = true;
    while (more) {
        batch.clear();
        more = false;
        sessions_.for_each(
            [&](const lariv::Index& i, const std::shared_ptr<session>& s) {
                if (batch.size() == 256) {
                    more = true;
                    next = i.slot();
                    return false;
                }
                batch.push_back(s);
                return true;
            },
            next);
        for (auto& s : batch) {
            if (!f(*s)) {
                return;
            }
        }
    }
}

protocol::list_page registry::list(std::optional<protocol::session_id> after,
                                   std::uint32_t limit,
                                   const std::function<bool(const session&)>& keep) const {
    protocol::list_page page;
    if (limit == 0 || limit > cfg_.limits.max_list) {
        limit = std::min<std::uint32_t>(cfg_.limits.max_list, 100);
    }
    // Slot order is a stable cursor: a session keeps its slot for life, so paging by
    // "slot > after.slot" shows each session at most once while others come and go.
    const std::uint32_t first = after ? after->slot() + 1 : 0;
    if (after && after->slot() == 0xFFFFFFFFU) {
        return page;
    }
    std::optional<protocol::session_id> last;
    bool full = false;
    for_each(
        [&](session& s) {
            if (!s.handshaken() || (keep && !keep(s))) {
                return true;
            }
            if (page.sessions.size() == limit) {
                full = true;
                return false;
            }
            page.sessions.push_back(s.info());
            last = s.id();
            return true;
        },
        first);
    if (full) {
        page.next = last;
    }
    return page;
}

std::uint64_t registry::queued_bytes_total() const {
    std::uint64_t total = 0;
    for_each([&](session& s) {
        total += s.queued_bytes();
        return true;
    });
    return total;
}

nlohmann::json registry::stats_json() const {
    nlohmann::json j;
    j["sessions"] = size();
    j["accepted"] = stats_.accepted.load();
    j["refused_full"] = stats_.refused_full.load();
    j["handshakes"] = stats_.handshakes.load();
    j["msgs_in"] = stats_.msgs_in.load();
    j["msgs_out"] = stats_.msgs_out.load();
    j["bytes_routed"] = stats_.bytes_routed.load();
    j["send_errors"] = stats_.send_errors.load();
    j["queue_drops"] = stats_.queue_drops.load();
    j["protocol_errors"] = stats_.protocol_errors.load();
    j["rate_limited"] = stats_.rate_limited.load();
    j["accept_errors"] = stats_.accept_errors.load();
    j["lariv_buffers"] = lariv_buffers();
    j["lariv_capacity"] = lariv_capacity();
    j["draining"] = draining();
    nlohmann::json closed = nlohmann::json::object();
    for (std::size_t r = 0; r < close_reason_count; ++r) {
        closed[std::string(to_string(static_cast<close_reason>(r)))] = stats_.closed[r].load();
    }
    j["closed"] = closed;
    return j;
}

void registry::drain() {
    if (draining_.exchange(true, std::memory_order_acq_rel)) {
        return;
    }
    for_each([](session& s) {
        s.drain();
        return true;
    });
}

void registry::close_all(close_reason why) {
    for_each([why](session& s) {
        s.close(why);
        return true;
    });
}

void registry::reload(const config& cfg) {
    // relaxed: independent settings, each read on its own at use time.
    hot_.max_sessions.store(cfg.max_sessions, std::memory_order_relaxed);
    hot_.max_queue_bytes.store(cfg.max_queue_bytes, std::memory_order_relaxed);
    hot_.rate_limit.store(cfg.rate_limit, std::memory_order_relaxed);
    hot_.rate_burst.store(cfg.rate_burst, std::memory_order_relaxed);
    hot_.idle_timeout_ms.store(cfg.idle_timeout_ms, std::memory_order_relaxed);
}

}  // namespace lariv::server
