// The registry core: ids, admission, lookup, routing, drain and shutdown.
#include "lariv/server/registry.hpp"

#include <algorithm>
#include <random>
#include <thread>

#include <spdlog/spdlog.h>

#include "lariv/server/log.hpp"
#include "lariv/server/session.hpp"

namespace lariv::server {

#ifdef LARIV_TEST_SEAMS
namespace {
std::mutex seam_mu;
std::function<void()> after_publish_seam;
void after_publish() {
    std::function<void()> f;
    {
        std::lock_guard lk(seam_mu);
        f = after_publish_seam;
    }
    if (f) {
        f();
    }
}
}  // namespace
namespace testing {
void set_after_publish(std::function<void()> f) {
    std::lock_guard lk(seam_mu);
    after_publish_seam = std::move(f);
}
}  // namespace testing
#define LARIV_SEAM_AFTER_PUBLISH() after_publish()
#else
#define LARIV_SEAM_AFTER_PUBLISH() ((void)0)
#endif

namespace detail {

thread_local const registry_core* hook_scope::core = nullptr;
thread_local int hook_scope::depth = 0;

namespace {

std::uint32_t random_u32() {
    std::random_device rd;  // getrandom(2) on Linux
    return static_cast<std::uint32_t>(rd());
}

registry_options with_epoch(registry_options o) {
    o.validate();
    // A random epoch from the OS: no two starts of one node share it (with probability 2^-32
    // per pair), unlike a clock-derived one that repeats for two starts within one second.
    while (o.boot_epoch == 0) {
        o.boot_epoch = random_u32();
    }
    return o;
}

}  // namespace

id_codec::id_codec() {
    std::random_device rd;
    for (auto& k : key_) {
        k = (std::uint64_t{rd()} << 32) | rd();
    }
}

registry_core::registry_core(asio::any_io_executor ex, registry_options opts, hooks h)
    : ex_(std::move(ex))
    , opts_(with_epoch(std::move(opts)))
    , hooks_(std::move(h))
    , sessions_(lariv::Options{.buffer_capacity = opts_.registry_buffer,
                               .node_id = opts_.node_id,
                               .tag = opts_.boot_epoch})
    , closed_(opts_.max_closed_sessions)
    , grace_timer_(ex_) {
    // spdlog creates its default logger on first use; do it here, before I/O threads log (the
    // creation is thread-safe, but TSan cannot see that inside the uninstrumented libspdlog).
    (void)spdlog::default_logger_raw();
    drain_linger_ms_.store(opts_.drain_timeout_ms, std::memory_order_relaxed);
    reload(opts_);
}

registry_core::~registry_core() = default;

// ------------------------------------------------------------------------------------ admission
//
// Admission vs drain (the "half-built session" defect): a session becomes visible only by the
// seq_cst move accepted -> handshaking/live, made after its id is written; then admission reads
// phase_ (seq_cst). A drain stores phase_ (seq_cst), then walks the sessions reading each state
// (seq_cst). With all four seq_cst, either the walk sees the session visible (and drains it), or
// the admission sees the drain (and drains the session itself), or both (drain is idempotent).

std::optional<lariv::Index> registry_core::publish(const std::shared_ptr<session_base>& e) {
    // Reserve a place under max_sessions first (relaxed: a counter, not a publication).
    std::size_t n = live_.load(std::memory_order_relaxed);
    do {
        if (n >= hot_.max_sessions.load(std::memory_order_relaxed)) {
            return std::nullopt;
        }
    } while (!live_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    auto idx = sessions_.try_push(e);
    if (!idx) {
        live_.fetch_sub(1, std::memory_order_relaxed);
        return std::nullopt;
    }
    // Still invisible (state accepted): nobody else reads id_ until the state move publishes it.
    e->id_ = ids_.encode(*idx);
    LARIV_SEAM_AFTER_PUBLISH();
    return idx;
}

void registry_core::admit(const std::shared_ptr<session>& s) {
    stats_.accepted.fetch_add(1, std::memory_order_relaxed);
    open_.fetch_add(1, std::memory_order_relaxed);  // released in connection_closed()
    if (phase_.load(std::memory_order_seq_cst) != phase::running) {
        s->refuse(protocol::error_code::draining, "server is draining");
        return;
    }
    if (!claim_ip(s->remote(), s->ip_key_)) {
        stats_.refused_per_ip.fetch_add(1, std::memory_order_relaxed);
        stats_.closed[static_cast<std::size_t>(close_reason::server_full)].fetch_add(1);
        s->refuse(protocol::error_code::server_full, "max_sessions_per_ip reached for this address");
        return;
    }
    auto idx = publish(s);
    if (!idx) {
        release_ip(s->ip_key_);
        s->ip_key_.clear();
        stats_.refused_full.fetch_add(1, std::memory_order_relaxed);
        stats_.closed[static_cast<std::size_t>(close_reason::server_full)].fetch_add(1);
        s->refuse(protocol::error_code::server_full, "max sessions reached");
        return;
    }
    s->start(*idx);  // writes index_, moves to handshaking (seq_cst), starts reading
    switch (phase_.load(std::memory_order_seq_cst)) {
        case phase::running:
            break;
        case phase::draining:
            s->drain();
            break;
        case phase::stopped:
            s->close(close_reason::shutdown);
            break;
    }
}

bool registry_core::claim_ip(const std::string& remote, std::string& key) {
    key.clear();
    const std::uint32_t cap = opts_.max_sessions_per_ip;
    const auto colon = remote.rfind(':');
    if (cap == 0 || colon == std::string::npos || remote.rfind("unix", 0) == 0) {
        return true;
    }
    std::string ip = remote.substr(0, colon);
    std::lock_guard lk(ip_mu_);
    auto& n = per_ip_[ip];
    if (n >= cap) {
        if (n == 0) {
            per_ip_.erase(ip);
        }
        return false;
    }
    ++n;
    key = std::move(ip);
    return true;
}

void registry_core::release_ip(const std::string& key) {
    if (key.empty()) {
        return;
    }
    std::lock_guard lk(ip_mu_);
    if (auto it = per_ip_.find(key); it != per_ip_.end() && --it->second == 0) {
        per_ip_.erase(it);
    }
}

void registry_core::note_auth_failure(const std::string& remote) {
    stats_.auth_failures.fetch_add(1, std::memory_order_relaxed);
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now().time_since_epoch())
                         .count();
    auto last = auth_log_at_.load(std::memory_order_relaxed);
    if (now - last >= 1000 &&
        auth_log_at_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
        const auto skipped = auth_log_skipped_.exchange(0, std::memory_order_relaxed);
        log::event(spdlog::level::warn, "HELLO auth failed",
                   {{"remote", remote},
                    {"suppressed", skipped},  // failures since the last line (one a second at most)
                    {"auth_failures", stats_.auth_failures.load(std::memory_order_relaxed)}});
    } else {
        auth_log_skipped_.fetch_add(1, std::memory_order_relaxed);
    }
}

std::optional<protocol::session_id> registry_core::attach(std::shared_ptr<session_base> e) {
    if (phase_.load(std::memory_order_seq_cst) != phase::running) {
        return std::nullopt;
    }
    auto idx = publish(e);
    if (!idx) {
        stats_.refused_full.fetch_add(1, std::memory_order_relaxed);
        return std::nullopt;
    }
    open_.fetch_add(1, std::memory_order_relaxed);  // released by detach()
    stats_.attached.fetch_add(1, std::memory_order_relaxed);
    e->state_.must_move(session_state::live, std::memory_order_seq_cst);
    if (phase_.load(std::memory_order_seq_cst) != phase::running) {
        e->drain();  // a drain or destruction started meanwhile: the host is told to close
    }
    return e->id_;
}

bool registry_core::detach(protocol::session_id id) {
    const auto idx = ids_.decode(id);
    {
        // Only host sessions detach: a Lariv-protocol session's id is public (HELLO gives it out)
        // and it leaves the registry through its own state machine. The guard is released
        // before take(), which waits for guards (its own would deadlock). An index names one
        // entry for life, so the kind cannot change between the two.
        auto g = sessions_.get(idx);
        if (!g || !(*g)->is_host()) {
            return false;
        }
    }
    // take(): exactly one detach of an id wins; later ones (and stale ids) find nothing.
    auto taken = sessions_.take(idx);
    if (!taken) {
        return false;
    }
    auto& e = *taken;
    e->state_.move(session_state::closing);
    e->state_.move(session_state::closed);
    live_.fetch_sub(1, std::memory_order_relaxed);
    stats_.closed[static_cast<std::size_t>(close_reason::client_closed)].fetch_add(1, std::memory_order_relaxed);
    record_closed(*e, close_reason::client_closed);
    connection_closed();
    return true;
}

// ------------------------------------------------------------------------- closed-session ring

void closed_ring::push(closed_session c) {
    std::lock_guard lk(mu_);
    ++total_;
    if (ring_.size() < cap_) {
        ring_.push_back(std::move(c));
        return;
    }
    ring_[next_] = std::move(c);
    next_ = (next_ + 1) % cap_;
}

std::vector<closed_session> closed_ring::snapshot() const {
    std::lock_guard lk(mu_);
    std::vector<closed_session> out;
    out.reserve(ring_.size());
    // ring_[next_ - 1] is the newest once the ring is full (ring_.back() until then).
    for (std::size_t k = 0; k < ring_.size(); ++k) {
        const std::size_t newest = (next_ + ring_.size() - 1) % ring_.size();
        out.push_back(ring_[(newest + ring_.size() - k) % ring_.size()]);
    }
    return out;
}

std::uint64_t closed_ring::total() const {
    std::lock_guard lk(mu_);
    return total_;
}

void registry_core::record_closed(const session_base& s, close_reason why) {
    if (closed_.capacity() == 0) {
        return;
    }
    closed_session c;
    c.reason = why;
    c.host = s.is_host();
    if (c.host) {
        // detach() runs in the host's own close path, maybe under its own lock: the registry does
        // not call back into the host object here (its info() could take that lock again).
        c.info.id = s.id();
        c.info.age_ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                       session_base::clock::now() - s.created())
                                                       .count());
    } else {
        c.info = s.info();
        c.remote = s.remote();
        c.conn = s.connection();
    }
    c.closed_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    closed_.push(std::move(c));
}

void registry_core::remove(const lariv::Index& i) {
    if (sessions_.remove(i)) {
        live_.fetch_sub(1, std::memory_order_relaxed);
    }
}

void registry_core::connection_closed() {
    // acq_rel: the last close publishes every session's final writes to the shutdown completion.
    if (open_.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
        phase_.load(std::memory_order_acquire) != phase::running) {
        check_done();
    }
}

// ----------------------------------------------------------------------------- lookup, routing

std::shared_ptr<session_base> registry_core::find(protocol::session_id id) const {
    // Copy the shared_ptr under the guard and let the guard go: no I/O under a guard.
    if (auto g = sessions_.get(ids_.decode(id))) {
        std::shared_ptr<session_base> s = *g;
        if (s->visible()) {
            return s;
        }
    }
    return nullptr;
}

std::optional<lariv::Index> registry_core::index_of(protocol::session_id id) const {
    if (id.node() != opts_.node_id || id.epoch() != opts_.boot_epoch) {
        return std::nullopt;
    }
    return ids_.decode(id);
}

std::optional<std::uint32_t> registry_core::slot_of(protocol::session_id id) const {
    if (auto i = index_of(id)) {
        return i->slot();
    }
    return std::nullopt;
}

protocol::error_code registry_core::missing_reason(protocol::session_id id) const {
    // PROTOCOL.md section 5: stale_session = this node and boot issued the id and that session
    // has ended (its slot is free or holds a newer generation, or it is closing); unknown_session
    // = not issued here: another node or epoch, a generation this slot has not reached (forged or
    // corrupted: the keyed scramble makes a made-up id decode to a random slot and generation),
    // or a session whose HELLO has not been accepted yet (its id is not given out before that).
    if (id.node() != opts_.node_id || id.epoch() != opts_.boot_epoch) {
        return protocol::error_code::unknown_session;
    }
    const auto i = ids_.decode(id);
    switch (sessions_.status(i)) {
        case lariv::IndexStatus::ended:
            return protocol::error_code::stale_session;
        case lariv::IndexStatus::never_issued:
            return protocol::error_code::unknown_session;
        case lariv::IndexStatus::live:
            break;
    }
    if (auto g = sessions_.get(i)) {
        const auto st = (*g)->state_.load();
        if (st == session_state::accepted || st == session_state::handshaking) {
            return protocol::error_code::unknown_session;
        }
    }
    return protocol::error_code::stale_session;  // draining, closing, or gone since the status
}

std::optional<protocol::error_code> registry_core::send(protocol::session_id to,
                                                        protocol::session_id from,
                                                        std::string_view payload,
                                                        std::string_view token) {
    if (to.node() != opts_.node_id) {
        // Another node's session: the cluster's (one load; no router = a single node, where an
        // id of another node names nothing).
        if (remote_router* r = router_ptr_.load(std::memory_order_acquire)) {
            if (phase_.load(std::memory_order_relaxed) != phase::running) {
                return protocol::error_code::draining;
            }
            return r->forward(to, from, payload, token);
        }
        return protocol::error_code::unknown_session;
    }
    return send_local(to, from, payload);
}

void registry_core::set_router(std::shared_ptr<remote_router> r) {
    remote_router* raw = r.get();
    router_ = std::move(r);
    router_ptr_.store(raw, std::memory_order_release);
}

void registry_core::deliver_ack(protocol::session_id from, std::string_view token,
                                std::optional<protocol::error_code> err) {
    if (err) {
        stats_.send_errors.fetch_add(1, std::memory_order_relaxed);
    }
    if (auto s = find(from)) {
        s->deliver_ack(token, err);
    }
}

std::optional<protocol::error_code> registry_core::send_local(protocol::session_id to,
                                                              protocol::session_id from,
                                                              std::string_view payload) {
    if (phase_.load(std::memory_order_relaxed) != phase::running) {
        return protocol::error_code::draining;
    }
    // One state load: routable implies visible (find() would load it once more).
    std::shared_ptr<session_base> target;
    if (auto g = sessions_.get(ids_.decode(to)); g && (*g)->routable()) {
        target = *g;
    }
    if (!target) {
        return missing_reason(to);
    }
    switch (target->deliver(from, payload)) {
        case deliver_result::ok:
            stats_.msgs_out.fetch_add(1, std::memory_order_relaxed);
            stats_.bytes_routed.fetch_add(payload.size(), std::memory_order_relaxed);
            return std::nullopt;
        case deliver_result::queue_full:
            stats_.queue_drops.fetch_add(1, std::memory_order_relaxed);
            return protocol::error_code::queue_full;
        case deliver_result::closed:
            break;
    }
    return missing_reason(to);
}

bool registry_core::kick(protocol::session_id id, close_reason why) {
    auto s = find(id);
    if (!s) {
        return false;
    }
    s->close(why);
    return true;
}

void registry_core::for_each(const std::function<bool(session_base&)>& f, std::uint32_t first_slot) const {
    // Collect a bounded batch of shared_ptrs under guards, then call f without any guard held.
    // The visibility check is seq_cst: it is the drain side of "admission vs drain".
    std::vector<std::shared_ptr<session_base>> batch;
    std::uint32_t next = first_slot;
    bool more = true;
    while (more) {
        batch.clear();
        more = false;
        sessions_.for_each(
            [&](const lariv::Index& i, const std::shared_ptr<session_base>& s) {
                if (batch.size() == 256) {
                    more = true;
                    next = i.slot();
                    return false;
                }
                if (is_visible(s->state_.load(std::memory_order_seq_cst))) {
                    batch.push_back(s);
                }
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

protocol::list_page registry_core::list(std::optional<protocol::session_id> after,
                                        std::uint32_t limit,
                                        const std::function<bool(const session_base&)>& keep,
                                        std::size_t max_body) const {
    protocol::list_page page;
    limit = page_limit(limit);
    // Slot order is a stable cursor: a session keeps its slot for life, so paging by
    // "slot > after's slot" shows each session at most once while others come and go.
    std::uint32_t first = 0;
    if (after) {
        const auto slot = slot_of(*after);
        if (!slot || *slot == 0xFFFFFFFFU) {
            return page;  // a cursor of another node or boot: nothing after it here
        }
        first = *slot + 1;
    }
    // The body's size as it grows: {"next":"<32 hex>","sessions":[e1,e2,...]} is the envelope
    // with a cursor plus each entry and a comma between entries (nlohmann's compact dump, the one
    // the encoder writes). A page stops before an entry that would take it past max_body.
    std::size_t body = 0;
    if (max_body != 0) {
        protocol::list_page probe;
        probe.next = protocol::session_id{};
        body = nlohmann::json(probe).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size();
    }
    std::optional<protocol::session_id> last;
    bool full = false;
    for_each(
        [&](session_base& s) {
            if (!s.routable() || (keep && !keep(s))) {
                return true;
            }
            if (page.sessions.size() == limit) {
                full = true;
                return false;
            }
            auto info = s.info();
            if (max_body != 0) {
                const std::size_t add =
                    nlohmann::json(info).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).size() +
                    (page.sessions.empty() ? 0 : 1);
                if (body + add > max_body && !page.sessions.empty()) {
                    full = true;
                    return false;
                }
                body += add;
            }
            page.sessions.push_back(std::move(info));
            last = s.id();
            return true;
        },
        first);
    if (full) {
        page.next = last;
    }
    return page;
}

std::uint32_t registry_core::page_limit(std::uint32_t requested) const noexcept {
    // 0 = the default page (100); never more than max_list.
    const std::uint32_t want = requested == 0 ? 100 : requested;
    return std::max<std::uint32_t>(1, std::min<std::uint32_t>(want, opts_.limits.max_list));
}

// ------------------------------------------------------------------------------------ shutdown

void registry_core::drain() {
    phase expected = phase::running;
    if (!phase_.compare_exchange_strong(expected, phase::draining, std::memory_order_seq_cst)) {
        return;
    }
    for_each(
        [](session_base& s) {
            s.drain();
            return true;
        },
        0);
}

void registry_core::close_all(close_reason why) {
    for_each(
        [why](session_base& s) {
            s.close(why);
            return true;
        },
        0);
}

void registry_core::async_shutdown(std::chrono::milliseconds grace, std::unique_ptr<shutdown_waiter> w) {
    grace = std::max(grace, std::chrono::milliseconds(0));
    const auto deadline = std::chrono::steady_clock::now() + grace;
    bool start = false;
    {
        std::lock_guard lk(shut_mu_);
        if (shutdown_done_) {
            w->complete(done_ec_);
            return;
        }
        waiters_.push_back(std::move(w));
        // The first call starts the shutdown; a later one with an earlier deadline (stop() during
        // a drain) brings the deadline forward. Timer calls are serialised by shut_mu_.
        if (!shutdown_started_ || deadline < grace_timer_.expiry()) {
            start = !shutdown_started_;
            shutdown_started_ = true;
            drain_linger_ms_.store(grace.count(), std::memory_order_relaxed);
            grace_timer_.expires_at(deadline);
            grace_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
                if (!ec) {
                    self->on_grace_expired();
                }
            });
        }
    }
    if (start) {
        drain();
    }
    check_done();
}

void registry_core::on_grace_expired() {
    {
        std::lock_guard lk(shut_mu_);
        if (shutdown_done_) {
            return;
        }
        grace_expired_ = true;
    }
    log::event(spdlog::level::warn, "shutdown grace over: closing the remaining connections",
               {{"connections", open_connections()}});
    close_all(close_reason::shutdown);
    // Host sessions that did not detach in time are detached here, so the shutdown completes
    // whatever the host does; a later detach() of theirs finds nothing and returns false.
    std::vector<protocol::session_id> hosts;
    for_each(
        [&](session_base& s) {
            if (s.is_host()) {
                hosts.push_back(s.id());
            }
            return true;
        },
        0);
    for (const auto& id : hosts) {
        (void)detach(id);
    }
    check_done();
}

void registry_core::cancel_waiter(std::uint64_t ticket) {
    std::unique_ptr<shutdown_waiter> w;
    {
        std::lock_guard lk(shut_mu_);
        const auto it = std::find_if(waiters_.begin(), waiters_.end(),
                                     [ticket](const auto& p) { return p->ticket == ticket; });
        if (it == waiters_.end()) {
            return;  // already completed (or completing): nothing to cancel
        }
        w = std::move(*it);
        waiters_.erase(it);
    }
    w->complete(asio::error::operation_aborted);
}

void registry_core::note_drain_cut() {
    std::lock_guard lk(shut_mu_);
    grace_expired_ = true;
}

void registry_core::check_done() {
    std::vector<std::unique_ptr<shutdown_waiter>> ws;
    {
        std::lock_guard lk(shut_mu_);
        if (!shutdown_started_ || shutdown_done_ || open_.load(std::memory_order_acquire) != 0) {
            return;
        }
        shutdown_done_ = true;
        done_ec_ = aborted_         ? std::error_code(asio::error::operation_aborted)
                   : grace_expired_ ? std::error_code(asio::error::timed_out)
                                    : std::error_code();
        grace_timer_.cancel();
        ws.swap(waiters_);
    }
    for (auto& w : ws) {
        w->complete(done_ec_);
    }
}

void registry_core::abandon() {
    // 1. No hook starts from now on; wait for those running on other threads (not for this
    //    thread's own, if the registry is destroyed from inside a hook).
    hooks_enabled_.store(false, std::memory_order_seq_cst);
    const int mine = hook_scope::core == this ? hook_scope::depth : 0;
    while (hooks_in_flight_.load(std::memory_order_seq_cst) > mine) {
        std::this_thread::yield();
    }
    // 2. Admit nothing more; close everyone now. A shutdown still pending completes with
    //    operation_aborted: its sessions were cut, not drained.
    {
        std::lock_guard lk(shut_mu_);
        aborted_ = true;
    }
    phase_.store(phase::stopped, std::memory_order_seq_cst);
    close_all(close_reason::shutdown);
    // 3. Let go of every entry (visible or not): breaks the core -> session -> core cycle, so
    //    sessions whose handlers never run again (a stopped io_context) are freed with it.
    //    Host sessions can no longer detach (the front is gone): they are detached here, so a
    //    pending async_shutdown still completes once the Lariv-protocol sessions have closed.
    std::vector<lariv::Index> all;
    sessions_.for_each([&](const lariv::Index& i, const std::shared_ptr<session_base>&) {
        all.push_back(i);
        return true;
    });
    for (const auto& i : all) {
        auto taken = sessions_.take(i);
        if (!taken) {
            continue;  // it removed itself meanwhile
        }
        live_.fetch_sub(1, std::memory_order_relaxed);
        if ((*taken)->is_host() && is_visible((*taken)->state_.load())) {
            (*taken)->state_.move(session_state::closing);
            (*taken)->state_.move(session_state::closed);
            connection_closed();
        }
    }
}

void registry_core::reload(const registry_options& o) {
    const bool idle_changed =
        hot_.idle_timeout_ms.exchange(o.idle_timeout_ms, std::memory_order_relaxed) != o.idle_timeout_ms;
    if (idle_changed) {
        // Session timers are armed for their next deadline only: a new idle timeout must re-arm
        // them, or a session with no deadline running would never see it (rare: SIGHUP).
        for_each(
            [](session_base& b) {
                if (auto* s = dynamic_cast<session*>(&b)) {
                    asio::post(s->strand_, [self = s->shared_from_this()] { self->arm_tick(); });
                }
                return true;
            },
            0);
    }
    hot_.max_sessions.store(o.max_sessions, std::memory_order_relaxed);
    hot_.max_queue_bytes.store(o.max_queue_bytes, std::memory_order_relaxed);
    hot_.rate_limit.store(o.rate_limit, std::memory_order_relaxed);
    hot_.rate_burst.store(o.rate_burst, std::memory_order_relaxed);
}

// --------------------------------------------------------------------------------------- hooks

bool registry_core::hook_enter() noexcept {
    // seq_cst pairs with abandon(): either abandon() sees this hook in flight and waits, or this
    // hook sees hooks disabled and does not run.
    hooks_in_flight_.fetch_add(1, std::memory_order_seq_cst);
    if (!hooks_enabled_.load(std::memory_order_seq_cst)) {
        hooks_in_flight_.fetch_sub(1, std::memory_order_release);
        return false;
    }
    return true;
}

void registry_core::hook_leave() noexcept { hooks_in_flight_.fetch_sub(1, std::memory_order_release); }

void registry_core::hook_failed(const char* what) noexcept {
    stats_.host_errors.fetch_add(1, std::memory_order_relaxed);
    try {
        log::event(spdlog::level::err, "registry: a host hook threw", {{"error", what}});
    } catch (...) {
    }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------- front

registry::registry(executor_type ex, const registry_options& opts, hooks h)
    : core_(std::make_shared<detail::registry_core>(std::move(ex), opts, std::move(h))) {}

registry::~registry() { core_->abandon(); }

std::shared_ptr<session> registry::find_session(protocol::session_id id) const {
    auto s = core_->find(id);
    if (!s || s->is_host()) {
        return nullptr;
    }
    return std::static_pointer_cast<session>(s);
}

void registry::reload(const registry_options& opts) {
    opts.validate();
    core_->reload(opts);
}

std::uint64_t registry::queued_bytes_total() const {
    std::uint64_t total = 0;
    for_each([&](session_base& s) {
        total += s.queued_bytes();
        return true;
    });
    return total;
}

nlohmann::json registry::stats_json() const { return detail::stats_json(*core_); }

nlohmann::json detail::stats_json(const registry_core& core) {
    const auto& st = core.stats();
    nlohmann::json j;
    j["sessions"] = core.size();
    j["accepted"] = st.accepted.load();
    j["attached"] = st.attached.load();
    j["refused_full"] = st.refused_full.load();
    j["refused_per_ip"] = st.refused_per_ip.load();
    j["handshakes"] = st.handshakes.load();
    j["auth_failures"] = st.auth_failures.load();
    j["msgs_in"] = st.msgs_in.load();
    j["msgs_out"] = st.msgs_out.load();
    j["bytes_routed"] = st.bytes_routed.load();
    j["send_errors"] = st.send_errors.load();
    j["queue_drops"] = st.queue_drops.load();
    j["protocol_errors"] = st.protocol_errors.load();
    j["rate_limited"] = st.rate_limited.load();
    j["accept_errors"] = st.accept_errors.load();
    j["host_errors"] = st.host_errors.load();
    j["tls_handshakes"] = st.tls_handshakes.load();
    j["tls_handshake_failures"] = st.tls_handshake_failures.load();
    j["lariv_buffers"] = core.lariv_buffers();
    j["lariv_capacity"] = core.lariv_capacity();
    j["draining"] = core.current_phase() != registry_core::phase::running;
    nlohmann::json closed = nlohmann::json::object();
    for (std::size_t r = 0; r < close_reason_count; ++r) {
        closed[std::string(to_string(static_cast<close_reason>(r)))] = st.closed[r].load();
    }
    j["closed"] = closed;
    return j;
}

}  // namespace lariv::server
