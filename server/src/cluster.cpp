// The cluster (lariv/server/cluster.hpp): membership in etcd (detail/etcd.hpp), one TCP link per
// pair of nodes speaking PROTOCOL.md section 11, and the registry's remote_router.
//
// Threads and ownership (server/DESIGN.md "Cluster"):
// - cluster_impl's membership state (lease, claim, watch, dialing) lives on its strand_.
// - A peer object exists per node id ever seen and lives as long as the impl (never freed while
//   the cluster runs), so the routing path finds it through a flat array of atomic pointers
//   (slots_, ids < slot_count) without a lock or a reference count; larger ids take peers_mu_.
// - A peer's link, outbound queue, pending ACK tokens and requests are guarded by its out_mu:
//   the one lock a forwarded message takes (as a local one takes its target's queue lock). It
//   appends the encoded ROUTE to `pending`; the link's strand swaps `pending` with its write
//   buffer, so one write carries every message queued meanwhile (no write per message) and the
//   two buffers ping-pong (no allocation per message once they have grown).
// - A link_conn is one TCP connection; its handlers run on its own strand and keep it (and the
//   impl) alive. A dead link fails what waits on it: every pending tokened ROUTE gets
//   `ACK <token> node_unreachable`, every request node_unreachable.
#include "lariv/server/cluster.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <unistd.h>
#include <unordered_map>

#include <asio/bind_executor.hpp>
#include <asio/connect.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/write.hpp>

#include "lariv/protocol/link.hpp"
#include "lariv/server/detail/etcd.hpp"
#include "lariv/server/detail/registry_core.hpp"
#include "lariv/server/detail/secret.hpp"
#include "lariv/server/listener.hpp"
#include "lariv/server/log.hpp"
#include "lariv/server/options.hpp"
#include "lariv/server/registry.hpp"

namespace lariv::server {

namespace {
class cluster_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "lariv.cluster"; }
    std::string message(int c) const override {
        switch (static_cast<cluster_errc>(c)) {
            case cluster_errc::id_taken:
                return "the node id is held by a live node";
            case cluster_errc::etcd_unavailable:
                return "etcd did not answer";
            case cluster_errc::no_free_id:
                return "no free node id";
            case cluster_errc::left:
                return "the cluster was stopped";
        }
        return "unknown cluster error";
    }
};
}  // namespace

const std::error_category& cluster_category() noexcept {
    static const cluster_category_impl c;
    return c;
}

namespace detail {

namespace {
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;
using protocol::error_code;
using level = spdlog::level::level_enum;

enum class link_state : int { down = 0, connecting = 1, up = 2 };
enum class lease_state : int { joining = 0, held = 1, lost = 2, left = 3 };

const char* to_string(link_state s) {
    switch (s) {
        case link_state::down:
            return "down";
        case link_state::connecting:
            return "connecting";
        case link_state::up:
            return "up";
    }
    return "down";
}

const char* to_string(lease_state s) {
    switch (s) {
        case lease_state::joining:
            return "joining";
        case lease_state::held:
            return "held";
        case lease_state::lost:
            return "lost";
        case lease_state::left:
            return "left";
    }
    return "lost";
}

std::uint32_t random_u32() {
    std::random_device rd;
    std::uint32_t v = 0;
    while (v == 0) {
        v = rd();
    }
    return v;
}

/// "host:port" (or "[v6]:port") split; nullopt when malformed.
std::optional<std::pair<std::string, std::string>> split_host_port(std::string_view a) {
    const auto colon = a.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == a.size()) {
        return std::nullopt;
    }
    std::string host(a.substr(0, colon));
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    return std::pair{host, std::string(a.substr(colon + 1))};
}

}  // namespace

class link_conn;

/// One other node, as this node knows it (see the file comment for who writes what).
struct peer {
    explicit peer(std::uint32_t n) : node(n) {}
    const std::uint32_t node;
    // Membership: written on the impl strand; epoch is read by the routing path (acquire).
    std::atomic<std::uint32_t> epoch{0};  // 0 = not in etcd now
    std::string address;                  // impl strand
    // Dialing (impl strand).
    bool dialing = false;
    unsigned attempts = 0;
    std::unique_ptr<asio::steady_timer> retry;
    // The link and its queue (out_mu).
    mutable std::mutex out_mu;
    std::atomic<link_state> state{link_state::down};
    std::shared_ptr<link_conn> link;
    std::string pending;
    std::size_t writing_bytes = 0;  // what the link is writing now (counts against the cap)
    bool writing = false;
    std::deque<std::pair<protocol::session_id, std::string>> acks;  // tokened ROUTEs awaiting RACK
    std::unordered_map<std::uint64_t, remote_router::request_done> requests;
    std::uint64_t next_request = 1;
    std::uint64_t msgs_out = 0;
    std::uint64_t bytes_out = 0;
    std::string shown_address;  // address, for routez (out_mu)
    std::string last_error;     // out_mu
    std::int64_t up_since_ms = 0;
    // When the link last went down (or the peer appeared without one), steady-clock ns; 0 =
    // never. A link down for longer than the lease TTL is the same as the node leaving.
    std::atomic<std::int64_t> down_since{0};
    // Written by the link's strand only (one writer: a load and a store), read by monitoring.
    std::atomic<std::uint64_t> msgs_in{0};
    std::atomic<std::uint64_t> bytes_in{0};
    std::atomic<std::uint64_t> reconnects{0};
};

class cluster_impl final : public remote_router, public std::enable_shared_from_this<cluster_impl> {
public:
    cluster_impl(asio::any_io_executor ex, cluster_options o);

    // --- remote_router (any thread)
    std::optional<error_code> forward(protocol::session_id to, protocol::session_id from, std::string_view payload,
                                      std::string_view token) override;
    void request(bool kick, protocol::session_id target, request_done done) override;

    // --- cluster's members
    void start();  // opens the peer acceptor (after construction: needs shared_from_this)
    void join(std::function<void(std::error_code, std::uint32_t)> done);
    void attach(std::shared_ptr<registry_core> core);
    void leave(std::function<void(std::error_code)> done);
    void stop();
    [[nodiscard]] nlohmann::json routez() const;
    [[nodiscard]] nlohmann::json health() const;
    void write_metrics(std::ostream& o) const;
    [[nodiscard]] std::string last_error() const {
        std::lock_guard lk(err_mu_);
        return last_error_;
    }

    // --- used by link_conn (any thread unless noted)
    [[nodiscard]] std::shared_ptr<registry_core> core() const { return core_.lock(); }
    [[nodiscard]] peer* find_peer(std::uint32_t node) const;
    [[nodiscard]] const cluster_options& opts() const noexcept { return opts_; }
    [[nodiscard]] std::uint32_t node_id() const noexcept { return node_id_.load(std::memory_order_acquire); }
    [[nodiscard]] std::uint32_t epoch() const noexcept { return epoch_; }
    [[nodiscard]] protocol::link_hello hello() const {
        return protocol::link_hello{protocol::link_version, opts_.name, node_id(), epoch_, opts_.token};
    }
    [[nodiscard]] bool stopped() const noexcept { return stopped_.load(std::memory_order_acquire); }
    [[nodiscard]] bool lease_held() const noexcept { return lease_state_.load() == lease_state::held; }
    /// Appends a control frame (RACK, RES, PING, PONG) to p's queue and starts a write. Never
    /// refused (they answer what the peer sent, which its own cap bounds).
    template <class Frame>
    void push(peer& p, const Frame& f);
    /// The link is up for p: it becomes p's link (a previous one is closed). `first` is written
    /// before anything else (the acceptor's LINK answer).
    void link_up(peer& p, const std::shared_ptr<link_conn>& l, std::string_view first);
    /// l (p's link, or a dial of p that never came up) ended with `why`.
    void link_down(peer& p, const link_conn* l, const std::string& why);
    /// What waited on a link that is gone or replaced: its senders' ACKs and its INFO/KICK
    /// requests complete with node_unreachable (the owner's verdict will never come).
    void fail_waiting(const std::deque<std::pair<protocol::session_id, std::string>>& acks,
                      std::unordered_map<std::uint64_t, request_done>& reqs);
    void note_error(std::string e);
    std::uint64_t unreachable() const noexcept { return unreachable_.load(std::memory_order_relaxed); }
    /// The verdict for a peer without a link: node_unreachable, or unknown_session once the
    /// link has been down for longer than the lease TTL (the same as the node leaving: etcd
    /// would have dropped a node that silent). Only on the failure path (one clock read).
    [[nodiscard]] error_code no_link(const peer& p) {
        const std::int64_t since = p.down_since.load(std::memory_order_relaxed);
        const std::int64_t now = clock::now().time_since_epoch().count();
        if (since != 0 && now - since > std::chrono::duration_cast<clock::duration>(opts_.lease_ttl).count()) {
            return error_code::unknown_session;
        }
        unreachable_.fetch_add(1, std::memory_order_relaxed);
        return error_code::node_unreachable;
    }

    asio::any_io_executor ex_;

private:
    // Membership (strand_).
    void join_step();
    void claim();
    void claim_id(std::uint32_t id);
    void join_retry(const std::string& what, std::error_code ec);
    void finish_join(std::error_code ec, std::uint32_t id);
    void schedule_keepalive(std::chrono::milliseconds after);
    void keepalive_round();
    void lease_lost(const std::string& why);
    void rejoin();
    void start_watch();
    void watch_retry();
    void reconcile(const std::vector<etcd_kv>& kvs);
    void apply(const etcd_event& e);
    void upsert(std::uint32_t id, std::string address, std::uint32_t epoch);
    void remove(std::uint32_t id, const std::string& why);
    void maybe_dial(peer& p);
    void dial_failed(peer& p, const std::string& why);
    void accept_one();
    [[nodiscard]] std::string key(std::uint32_t id) const { return prefix_ + std::to_string(id); }
    [[nodiscard]] std::string value() const;
    [[nodiscard]] std::optional<std::uint32_t> id_of_key(std::string_view k) const;
    peer& get_or_create(std::uint32_t id);
    void set_lease_state(lease_state s) { lease_state_.store(s, std::memory_order_release); }

    cluster_options opts_;
    asio::strand<asio::any_io_executor> strand_;
    std::shared_ptr<etcd_client> etcd_;
    std::shared_ptr<etcd_watch> watch_;
    tcp::acceptor acceptor_;
    std::string advertise_;
    std::string prefix_;
    const std::uint32_t epoch_;
    std::atomic<std::uint32_t> node_id_{0};
    std::weak_ptr<registry_core> core_;
    std::atomic<bool> stopped_{false};
    bool leaving_ = false;
    bool attached_ = false;

    // Join (strand_).
    std::function<void(std::error_code, std::uint32_t)> join_done_;
    clock::time_point join_started_{};
    clock::time_point join_deadline_{};
    unsigned join_attempts_ = 0;
    unsigned auto_tries_ = 0;
    // Lease (strand_; the atomics are read by monitoring).
    std::atomic<std::int64_t> lease_id_{0};
    std::atomic<lease_state> lease_state_{lease_state::joining};
    clock::time_point last_renew_{};
    unsigned renew_failures_ = 0;
    asio::steady_timer ka_timer_;
    asio::steady_timer join_timer_;
    asio::steady_timer watch_timer_;
    unsigned watch_failures_ = 0;
    std::atomic<std::uint64_t> lease_losses_{0};

    // Peers (see the file comment).
    static constexpr std::uint32_t slot_count = 4096;
    std::array<std::atomic<peer*>, slot_count> slots_{};
    mutable std::mutex peers_mu_;
    std::map<std::uint32_t, std::unique_ptr<peer>> peers_;

    std::atomic<std::uint64_t> unreachable_{0};
    mutable std::mutex err_mu_;
    std::string last_error_;
    std::minstd_rand rng_{std::random_device{}()};
};

// ------------------------------------------------------------------------------------ link_conn

/// One TCP link to a peer node (PROTOCOL.md section 11). Handlers run on strand_.
class link_conn final : public std::enable_shared_from_this<link_conn> {
public:
    link_conn(std::shared_ptr<cluster_impl> c, tcp::socket s, peer* p)
        : c_(std::move(c))
        , strand_(asio::make_strand(c_->ex_))
        , sock_(std::move(s))
        , dialer_(p != nullptr)
        , p_(p)
        , dec_(c_->core() ? c_->core()->options().limits : protocol::limits{})
        , hb_(strand_) {
        std::error_code ec;
        sock_.set_option(tcp::no_delay(true), ec);
        const auto ep = sock_.remote_endpoint(ec);
        remote_ = ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
    }

    /// Dialer: send LINK, wait for the acceptor's LINK.
    void start_dialer() {
        asio::dispatch(strand_, [self = shared_from_this()] {
            self->started_ = clock::now();
            self->last_input_ = self->started_;
            protocol::encode(self->hs_, self->c_->hello());
            asio::async_write(self->sock_, asio::buffer(self->hs_),
                              asio::bind_executor(self->strand_, [self](std::error_code ec, std::size_t) {
                                  if (ec) {
                                      self->do_close("write LINK: " + ec.message());
                                  }
                              }));
            self->arm_heartbeat();
            self->read();
        });
    }
    /// Acceptor: wait for the dialer's LINK.
    void start_acceptor() {
        asio::dispatch(strand_, [self = shared_from_this()] {
            self->started_ = clock::now();
            self->last_input_ = self->started_;
            self->arm_heartbeat();
            self->read();
        });
    }
    /// Starts a write of p's queue. Any thread (called by whoever set p.writing).
    void post_write() {
        asio::post(strand_, [self = shared_from_this()] { self->do_write(); });
    }
    void close(std::string why) {
        asio::post(strand_, [self = shared_from_this(), why = std::move(why)] { self->do_close(why); });
    }
    [[nodiscard]] const std::string& remote() const noexcept { return remote_; }

private:
    void read() {
        if (rbuf_.empty()) {
            rbuf_.resize(64U << 10);
        }
        sock_.async_read_some(asio::buffer(rbuf_),
                              asio::bind_executor(strand_, [self = shared_from_this()](std::error_code ec, std::size_t n) {
                                  self->on_read(ec, n);
                              }));
    }

    void on_read(std::error_code ec, std::size_t n) {
        if (closed_) {
            return;
        }
        if (ec) {
            do_close(ec == asio::error::eof ? std::string("closed by the peer") : "read: " + ec.message());
            return;
        }
        last_input_ = clock::now();
        // One share of the registry's core per read, not per frame.
        std::shared_ptr<registry_core> core = c_->core();
        std::string_view in(rbuf_.data(), n);
        std::uint64_t msgs = 0;
        std::uint64_t bytes = 0;
        while (!in.empty() && !closed_) {
            auto r = dec_.decode(in);
            in.remove_prefix(r.consumed);
            if (r.status == protocol::decode_status::need_more) {
                break;
            }
            if (r.status == protocol::decode_status::bad) {
                // Every decode error on a link is fatal: the peer is out of step.
                std::string f;
                protocol::encode(f, protocol::err_msg{r.error, r.detail});
                std::error_code wec;
                asio::write(sock_, asio::buffer(f), wec);  // best effort, the link closes anyway
                do_close("bad frame from the peer: " + std::string(protocol::to_string(r.error)) + " " +
                         std::string(r.detail));
                return;
            }
            if (!up_) {
                handshake(r.message);
                continue;
            }
            std::visit([&](const auto& m) { on_frame(m, core.get(), msgs, bytes); }, r.message);
        }
        if (msgs != 0 && p_ != nullptr) {
            p_->msgs_in.store(p_->msgs_in.load(std::memory_order_relaxed) + msgs, std::memory_order_relaxed);
            p_->bytes_in.store(p_->bytes_in.load(std::memory_order_relaxed) + bytes, std::memory_order_relaxed);
        }
        if (!closed_) {
            read();
        }
    }

    void refuse(error_code code, const std::string& why) {
        std::string f;
        protocol::encode(f, protocol::err_msg{code, why});
        std::error_code ec;
        asio::write(sock_, asio::buffer(f), ec);  // a few bytes on a fresh socket: best effort
        do_close("refused: " + why);
    }

    void handshake(const protocol::link_frame& frame) {
        if (const auto* e = std::get_if<protocol::err_msg>(&frame)) {
            do_close("the peer refused the link: " + std::string(protocol::to_string(e->code)) + " " +
                     std::string(e->message));
            return;
        }
        const auto* h = std::get_if<protocol::link_hello>(&frame);
        if (h == nullptr) {
            refuse(error_code::handshake_required, "send LINK first");
            return;
        }
        const cluster_options& o = c_->opts();
        if (h->version != protocol::link_version) {
            refuse(error_code::unsupported_version, "this node speaks link version 1");
            return;
        }
        if (!detail::same_secret(h->token, o.token)) {
            refuse(error_code::not_authorized, "bad cluster token");
            return;
        }
        if (h->cluster != o.name) {
            refuse(error_code::not_authorized, "this node is in cluster '" + o.name + "'");
            return;
        }
        peer* p = dialer_ ? p_ : c_->find_peer(h->node);
        const std::uint32_t known = p != nullptr ? p->epoch.load(std::memory_order_acquire) : 0;
        if (dialer_) {
            if (h->node != p_->node || h->epoch != known) {
                do_close("the peer at this address is node " + std::to_string(h->node) + " epoch " +
                         std::to_string(h->epoch) + ", not the one etcd lists");
                return;
            }
            up_ = true;
            c_->link_up(*p_, shared_from_this(), {});
            return;
        }
        if (h->node == c_->node_id() || h->node > c_->node_id()) {
            refuse(error_code::not_authorized, "the lower node id dials: node " + std::to_string(c_->node_id()) +
                                                   " dials node " + std::to_string(h->node));
            return;
        }
        if (p == nullptr || known == 0) {
            refuse(error_code::not_authorized, "node " + std::to_string(h->node) + " is not in etcd (yet)");
            return;
        }
        if (known != h->epoch) {
            refuse(error_code::not_authorized, "etcd lists node " + std::to_string(h->node) + " with another boot epoch");
            return;
        }
        p_ = p;
        up_ = true;
        std::string first;
        protocol::encode(first, c_->hello());
        c_->link_up(*p_, shared_from_this(), first);
    }

    void on_frame(const protocol::route_msg& m, registry_core* core, std::uint64_t& msgs, std::uint64_t& bytes) {
        ++msgs;
        bytes += m.payload.size();
        std::optional<error_code> err = core != nullptr ? core->send_local(m.to, m.from, m.payload)
                                                        : std::optional<error_code>(error_code::draining);
        if (!m.token.empty()) {
            c_->push(*p_, protocol::rack_msg{m.from, m.token, err});
        }
    }
    void on_frame(const protocol::rack_msg& m, registry_core* core, std::uint64_t&, std::uint64_t&) {
        std::pair<protocol::session_id, std::string> front;
        {
            std::lock_guard lk(p_->out_mu);
            if (p_->acks.empty() || p_->acks.front().first != m.from || p_->acks.front().second != m.token) {
                front.first = {};
            } else {
                front = std::move(p_->acks.front());
                p_->acks.pop_front();
            }
        }
        if (front.second.empty()) {
            do_close("RACK without a matching tokened ROUTE");
            return;
        }
        if (core != nullptr) {
            core->deliver_ack(m.from, m.token, m.error);
        }
    }
    void on_frame(const protocol::request_msg& m, registry_core* core, std::uint64_t&, std::uint64_t&) {
        protocol::response_msg res;
        res.id = m.id;
        std::string json;
        if (core == nullptr) {
            res.error = error_code::draining;
        } else if (m.op == protocol::link_op::info) {
            if (auto s = core->find(m.target); s && s->routable()) {
                json = nlohmann::json(s->info()).dump();
                res.json = json;
            } else {
                res.error = core->missing_reason(m.target);
            }
        } else if (!core->kick(m.target, close_reason::kicked)) {
            res.error = core->missing_reason(m.target);
        }
        c_->push(*p_, res);
    }
    void on_frame(const protocol::response_msg& m, registry_core*, std::uint64_t&, std::uint64_t&) {
        remote_router::request_done done;
        {
            std::lock_guard lk(p_->out_mu);
            auto it = p_->requests.find(m.id);
            if (it != p_->requests.end()) {
                done = std::move(it->second);
                p_->requests.erase(it);
            }
        }
        if (done) {
            done(m.error, std::string(m.json));
        }
    }
    void on_frame(const protocol::ping_msg&, registry_core*, std::uint64_t&, std::uint64_t&) {
        c_->push(*p_, protocol::pong_msg{});
    }
    void on_frame(const protocol::pong_msg&, registry_core*, std::uint64_t&, std::uint64_t&) {}
    void on_frame(const protocol::link_hello&, registry_core*, std::uint64_t&, std::uint64_t&) {
        do_close("LINK again on an open link");
    }
    void on_frame(const protocol::err_msg& e, registry_core*, std::uint64_t&, std::uint64_t&) {
        do_close("the peer closed the link: " + std::string(protocol::to_string(e.code)) + " " +
                 std::string(e.message));
    }

    void do_write() {
        if (closed_ || !up_) {
            return;
        }
        {
            std::lock_guard lk(p_->out_mu);
            if (p_->link.get() != this) {
                return;
            }
            if (p_->pending.empty()) {
                p_->writing = false;
                p_->writing_bytes = 0;
                return;
            }
            writing_.clear();
            writing_.swap(p_->pending);
            p_->writing_bytes = writing_.size();
        }
        asio::async_write(sock_, asio::buffer(writing_),
                          asio::bind_executor(strand_, [self = shared_from_this()](std::error_code ec, std::size_t) {
                              if (ec) {
                                  self->do_close("write: " + ec.message());
                                  return;
                              }
                              self->do_write();
                          }));
    }

    void arm_heartbeat() {
        hb_.expires_after(c_->opts().heartbeat);
        hb_.async_wait(asio::bind_executor(strand_, [self = shared_from_this()](std::error_code ec) {
            if (ec || self->closed_) {
                return;
            }
            const auto now = clock::now();
            const auto hb = self->c_->opts().heartbeat;
            if (!self->up_ && now - self->started_ > std::max<std::chrono::milliseconds>(3 * hb, std::chrono::milliseconds(3000))) {
                self->do_close("no LINK handshake in time");
                return;
            }
            if (now - self->last_input_ > hb * 7 / 2) {
                self->do_close("heartbeat timeout: nothing from the peer for " +
                               std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - self->last_input_).count()) +
                               " ms");
                return;
            }
            if (self->up_) {
                self->c_->push(*self->p_, protocol::ping_msg{});
            }
            self->arm_heartbeat();
        }));
    }

    void do_close(const std::string& why) {
        if (closed_) {
            return;
        }
        closed_ = true;
        hb_.cancel();
        std::error_code ec;
        sock_.shutdown(tcp::socket::shutdown_both, ec);
        sock_.close(ec);
        if (p_ != nullptr && (up_ || dialer_)) {
            c_->link_down(*p_, this, why);
        } else if (!why.empty()) {
            log::event(level::info, "cluster: peer connection closed before its handshake",
                       {{"remote", remote_}, {"reason", why}});
        }
    }

    std::shared_ptr<cluster_impl> c_;
    asio::strand<asio::any_io_executor> strand_;
    tcp::socket sock_;
    const bool dialer_;
    peer* p_;  // the dialer's from the start; the acceptor's once the handshake named it
    bool up_ = false;
    bool closed_ = false;
    protocol::link_decoder dec_;
    std::vector<char> rbuf_;
    std::string writing_;
    std::string hs_;
    asio::steady_timer hb_;
    clock::time_point started_{};
    clock::time_point last_input_{};
    std::string remote_;
};

// ---------------------------------------------------------------------------------- cluster_impl

cluster_impl::cluster_impl(asio::any_io_executor ex, cluster_options o)
    : ex_(ex)
    , opts_(std::move(o))
    , strand_(asio::make_strand(ex))
    , acceptor_(ex)
    , epoch_(opts_.boot_epoch != 0 ? opts_.boot_epoch : random_u32())
    , ka_timer_(strand_)
    , join_timer_(strand_)
    , watch_timer_(strand_) {
    if (opts_.etcd.empty()) {
        throw config_error("cluster: cluster_etcd is empty");
    }
    if (opts_.name.empty() || opts_.name.size() > 64 ||
        opts_.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
            std::string::npos) {
        throw config_error("cluster: cluster_name must be 1..64 characters of [A-Za-z0-9._-]");
    }
    if (opts_.lease_ttl < std::chrono::seconds(1)) {
        throw config_error("cluster: the lease TTL must be at least 1 s");
    }
    if (opts_.token.size() > max_secret_size) {
        throw config_error("cluster: cluster_token is longer than " + std::to_string(max_secret_size) + " bytes");
    }
    try {
        etcd_ = etcd_client::create(strand_, opts_.etcd);
        // A renewal must fail well within the TTL, so a hung etcd is noticed in time.
        etcd_->set_request_timeout(std::clamp<std::chrono::milliseconds>(
            std::chrono::duration_cast<std::chrono::milliseconds>(opts_.lease_ttl) / 3, std::chrono::milliseconds(300),
            std::chrono::milliseconds(5000)));
    } catch (const std::exception& e) {
        throw config_error(std::string("cluster: cluster_etcd: ") + e.what());
    }
    prefix_ = "/lariv/" + opts_.name + "/nodes/";
    const tcp::endpoint ep = resolve_endpoint("peer_address", opts_.peer_address, opts_.peer_port);
    try {
        acceptor_.open(ep.protocol());
        acceptor_.set_option(tcp::acceptor::reuse_address(true));
        acceptor_.bind(ep);
        acceptor_.listen();
    } catch (const std::system_error& e) {
        throw listen_error("peer", opts_.peer_address + ":" + std::to_string(opts_.peer_port), e);
    }
    const std::uint16_t port = acceptor_.local_endpoint().port();
    if (!opts_.peer_advertise.empty()) {
        advertise_ = opts_.peer_advertise;
    } else {
        std::string host = opts_.peer_address;
        if (host == "0.0.0.0" || host == "::" || host.empty()) {
            char name[256] = {};
            host = ::gethostname(name, sizeof name - 1) == 0 ? std::string(name) : std::string("127.0.0.1");
        }
        advertise_ = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
    }
    opts_.peer_port = port;
}

void cluster_impl::start() { asio::dispatch(strand_, [self = shared_from_this()] { self->accept_one(); }); }

std::string cluster_impl::value() const {
    nlohmann::json v = {{"peer", advertise_},
                        {"client", opts_.client_advertise},
                        {"epoch", epoch_},
                        {"version", LARIV_VERSION},
                        {"lease", std::to_string(lease_id_.load())}};
    return v.dump();
}

std::optional<std::uint32_t> cluster_impl::id_of_key(std::string_view k) const {
    if (k.substr(0, prefix_.size()) != prefix_) {
        return std::nullopt;
    }
    k.remove_prefix(prefix_.size());
    std::uint32_t id = 0;
    const auto [p, ec] = std::from_chars(k.data(), k.data() + k.size(), id);
    if (ec != std::errc{} || p != k.data() + k.size() || id == 0) {
        return std::nullopt;
    }
    return id;
}

void cluster_impl::note_error(std::string e) {
    std::lock_guard lk(err_mu_);
    last_error_ = std::move(e);
}

// --- join

void cluster_impl::join(std::function<void(std::error_code, std::uint32_t)> done) {
    asio::dispatch(strand_, [self = shared_from_this(), done = std::move(done)]() mutable {
        if (self->join_done_ || self->node_id() != 0) {
            asio::post(self->ex_, [done = std::move(done), id = self->node_id()] {
                done(id != 0 ? std::error_code() : std::error_code(cluster_errc::left), id);
            });
            return;
        }
        self->join_done_ = std::move(done);
        self->join_started_ = clock::now();
        self->join_deadline_ = self->join_started_ + self->opts_.join_timeout;
        self->join_step();
    });
}

void cluster_impl::join_step() {
    if (stopped()) {
        finish_join(cluster_errc::left, 0);
        return;
    }
    etcd_->grant(opts_.lease_ttl, [self = shared_from_this()](std::error_code ec, std::int64_t lease) {
        if (ec) {
            self->join_retry("lease grant", ec);
            return;
        }
        self->lease_id_.store(lease);
        self->claim();
    });
}

void cluster_impl::claim() {
    if (opts_.node_id != 0) {
        claim_id(opts_.node_id);
        return;
    }
    etcd_->range_prefix(prefix_, [self = shared_from_this()](std::error_code ec, std::vector<etcd_kv> kvs, std::int64_t) {
        if (ec) {
            self->join_retry("range", ec);
            return;
        }
        std::set<std::uint32_t> taken;
        for (const auto& kv : kvs) {
            if (auto id = self->id_of_key(kv.key)) {
                taken.insert(*id);
            }
        }
        std::uint32_t id = 1;
        while (taken.count(id) != 0) {
            ++id;
        }
        self->claim_id(id);
    });
}

void cluster_impl::claim_id(std::uint32_t id) {
    etcd_->put_if_absent(
        key(id), [&] {
            // The value names the node; node_id_ is not set until the claim succeeds.
            return value();
        }(),
        lease_id_.load(),
        [self = shared_from_this(), id](std::error_code ec, bool created, std::optional<etcd_kv> holder) {
            if (ec) {
                self->join_retry("claim", ec);
                return;
            }
            if (created) {
                self->node_id_.store(id, std::memory_order_release);
                self->last_renew_ = clock::now();
                self->set_lease_state(lease_state::held);
                log::event(level::info, "cluster: joined",
                           {{"cluster", self->opts_.name},
                            {"node", id},
                            {"epoch", self->epoch_},
                            {"peer", self->advertise_},
                            {"etcd", self->opts_.etcd},
                            {"lease_ttl_s", self->opts_.lease_ttl.count()}});
                self->schedule_keepalive(std::chrono::duration_cast<std::chrono::milliseconds>(self->opts_.lease_ttl) / 3);
                self->finish_join({}, id);
                return;
            }
            if (self->opts_.node_id == 0) {
                if (++self->auto_tries_ > 64) {
                    self->note_error("no free node id after 64 tries");
                    self->finish_join(cluster_errc::no_free_id, 0);
                } else {
                    self->claim();  // someone took it first: look again
                }
                return;
            }
            std::string holder_peer = "?";
            std::uint32_t holder_epoch = 0;
            if (holder) {
                try {
                    const auto v = nlohmann::json::parse(holder->value);
                    holder_peer = v.value("peer", std::string("?"));
                    holder_epoch = v.value("epoch", 0U);
                } catch (const std::exception&) {
                }
            }
            // A holder that advertises this node's own peer address is a previous run of it
            // (this process bound that address): wait for its lease to expire.
            if (holder_peer == self->advertise_ &&
                clock::now() < self->join_started_ + self->opts_.lease_ttl + std::chrono::seconds(2)) {
                log::event(level::info, "cluster: waiting for this node's previous run's lease to expire",
                           {{"node", id}, {"holder_epoch", holder_epoch}});
                self->join_timer_.expires_after(std::chrono::milliseconds(500));
                self->join_timer_.async_wait([self, id](std::error_code e) {
                    if (!e) {
                        self->claim_id(id);
                    }
                });
                return;
            }
            self->note_error("node id " + std::to_string(id) + " is held by " + holder_peer + " (epoch " +
                             std::to_string(holder_epoch) + ")");
            self->etcd_->revoke(self->lease_id_.load(), [](std::error_code) {});
            self->finish_join(cluster_errc::id_taken, 0);
        });
}

void cluster_impl::join_retry(const std::string& what, std::error_code ec) {
    note_error("etcd " + opts_.etcd + ": " + what + ": " + ec.message() +
               (etcd_->last_error().empty() ? std::string() : " (" + etcd_->last_error() + ")"));
    if (stopped()) {
        finish_join(cluster_errc::left, 0);
        return;
    }
    if (clock::now() >= join_deadline_) {
        finish_join(cluster_errc::etcd_unavailable, 0);
        return;
    }
    const auto delay = std::chrono::milliseconds(std::min(1000U, 100U << std::min(join_attempts_++, 4U)));
    join_timer_.expires_after(delay);
    join_timer_.async_wait([self = shared_from_this()](std::error_code e) {
        if (!e) {
            self->join_step();
        } else {
            self->finish_join(cluster_errc::left, 0);
        }
    });
}

void cluster_impl::finish_join(std::error_code ec, std::uint32_t id) {
    if (auto done = std::exchange(join_done_, nullptr)) {
        asio::post(ex_, [done = std::move(done), ec, id] { done(ec, id); });
    }
}

// --- lease

void cluster_impl::schedule_keepalive(std::chrono::milliseconds after) {
    ka_timer_.expires_after(std::max(after, std::chrono::milliseconds(100)));
    ka_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
        if (!ec) {
            self->keepalive_round();
        }
    });
}

void cluster_impl::keepalive_round() {
    if (stopped() || leaving_) {
        return;
    }
    const auto ttl_ms = std::chrono::duration_cast<std::chrono::milliseconds>(opts_.lease_ttl);
    // Lost or not, renew the lease this node holds first: etcd keeps leases across its own
    // restart (their TTL reset), so after an outage the old lease and key may well be alive.
    etcd_->keepalive(lease_id_.load(), [self = shared_from_this(), ttl_ms](std::error_code ec, std::int64_t ttl) {
        if (self->stopped() || self->leaving_) {
            return;
        }
        if (!ec && ttl > 0) {
            self->last_renew_ = clock::now();
            self->renew_failures_ = 0;
            if (self->lease_state_.load() == lease_state::lost) {
                self->set_lease_state(lease_state::held);
                log::event(level::info, "cluster: lease held again (etcd kept it)", {{"node", self->node_id()}});
            }
            self->schedule_keepalive(ttl_ms / 3);
            return;
        }
        if (!ec) {
            self->lease_lost("the lease expired in etcd");
            self->rejoin();
            return;
        }
        ++self->renew_failures_;
        self->note_error("etcd keepalive: " + ec.message());
        if (clock::now() - self->last_renew_ >= self->opts_.lease_ttl) {
            self->lease_lost("no renewal for the lease TTL: " + ec.message());
        }
        self->schedule_keepalive(std::chrono::milliseconds(std::min(1000U, 100U << std::min(self->renew_failures_, 4U))));
    });
}

void cluster_impl::lease_lost(const std::string& why) {
    if (lease_state_.load() != lease_state::lost) {
        lease_losses_.fetch_add(1, std::memory_order_relaxed);
        set_lease_state(lease_state::lost);
        note_error("lease lost: " + why);
        log::event(level::warn, "cluster: lease lost; this node is not advertised until etcd answers again "
                                "(local routing goes on)",
                   {{"node", node_id()}, {"reason", why}});
    }
}

void cluster_impl::rejoin() {
    etcd_->grant(opts_.lease_ttl, [self = shared_from_this()](std::error_code ec, std::int64_t lease) {
        if (ec) {
            self->note_error("etcd lease grant: " + ec.message());
            self->schedule_keepalive(std::chrono::milliseconds(1000));
            return;
        }
        const std::uint32_t id = self->node_id();
        self->etcd_->put_if_absent(
            self->key(id), self->value(), lease,
            [self, id, lease](std::error_code e, bool created, std::optional<etcd_kv> holder) {
                if (e) {
                    self->note_error("etcd claim: " + e.message());
                    self->schedule_keepalive(std::chrono::milliseconds(1000));
                    return;
                }
                if (created) {
                    self->lease_id_.store(lease);
                    self->last_renew_ = clock::now();
                    self->set_lease_state(lease_state::held);
                    log::event(level::info, "cluster: lease held again; node id re-claimed", {{"node", id}});
                    self->schedule_keepalive(std::chrono::duration_cast<std::chrono::milliseconds>(self->opts_.lease_ttl) / 3);
                    return;
                }
                if (holder) {
                    // This node's own key, under a lease it no longer renews (an older grant):
                    // take that lease back.
                    try {
                        const auto v = nlohmann::json::parse(holder->value);
                        if (v.value("epoch", 0U) == self->epoch_ && holder->lease != 0) {
                            self->etcd_->revoke(lease, [](std::error_code) {});
                            self->lease_id_.store(holder->lease);
                            self->schedule_keepalive(std::chrono::milliseconds(0));
                            return;
                        }
                    } catch (const std::exception&) {
                    }
                }
                // Someone else holds this id now. This node's ids carry it, so it cannot take
                // another without renaming its live sessions: it stays unadvertised (serving its
                // local sessions; peers answer unknown_session for its ids, the boot epoch in
                // them matching no other process) and tries again.
                std::string who = holder ? holder->value : std::string("?");
                self->note_error("node id " + std::to_string(id) + " is held by another node now: " + who);
                self->etcd_->revoke(lease, [](std::error_code) {});
                self->schedule_keepalive(std::chrono::milliseconds(2000));
            });
    });
}

// --- discovery

void cluster_impl::start_watch() {
    if (stopped()) {
        return;
    }
    etcd_->range_prefix(prefix_, [self = shared_from_this()](std::error_code ec, std::vector<etcd_kv> kvs,
                                                               std::int64_t rev) {
        if (ec) {
            self->watch_retry();
            return;
        }
        self->reconcile(kvs);
        self->watch_ = self->etcd_->watch_prefix(
            self->prefix_, rev + 1,
            [self](const std::vector<etcd_event>& events, std::int64_t) {
                self->watch_failures_ = 0;
                for (const auto& e : events) {
                    self->apply(e);
                }
            },
            [self](std::error_code e) {
                if (!self->stopped()) {
                    self->note_error("etcd watch ended: " + e.message());
                    self->watch_retry();
                }
            });
    });
}

void cluster_impl::watch_retry() {
    if (stopped()) {
        return;
    }
    watch_timer_.expires_after(std::chrono::milliseconds(std::min(2000U, 100U << std::min(watch_failures_++, 5U))));
    watch_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
        if (!ec) {
            self->start_watch();
        }
    });
}

void cluster_impl::reconcile(const std::vector<etcd_kv>& kvs) {
    std::set<std::uint32_t> seen;
    for (const auto& kv : kvs) {
        apply(etcd_event{etcd_event::kind::put, kv});
        if (auto id = id_of_key(kv.key)) {
            seen.insert(*id);
        }
    }
    std::vector<std::uint32_t> gone;
    {
        std::lock_guard lk(peers_mu_);
        for (const auto& [id, p] : peers_) {
            if (p->epoch.load() != 0 && seen.count(id) == 0) {
                gone.push_back(id);
            }
        }
    }
    for (auto id : gone) {
        remove(id, "no longer in etcd");
    }
}

void cluster_impl::apply(const etcd_event& e) {
    const auto id = id_of_key(e.kv.key);
    if (!id || *id == node_id()) {
        return;
    }
    if (e.type == etcd_event::kind::del) {
        remove(*id, "left the cluster (its key was deleted)");
        return;
    }
    try {
        const auto v = nlohmann::json::parse(e.kv.value);
        const std::string addr = v.at("peer").get<std::string>();
        const std::uint32_t ep = v.at("epoch").get<std::uint32_t>();
        if (ep != 0 && split_host_port(addr)) {
            upsert(*id, addr, ep);
            return;
        }
    } catch (const std::exception&) {
    }
    note_error("etcd: key " + e.kv.key + " has a value this node cannot read: " + e.kv.value.substr(0, 200));
}

peer& cluster_impl::get_or_create(std::uint32_t id) {
    std::lock_guard lk(peers_mu_);
    auto& slot = peers_[id];
    if (!slot) {
        slot = std::make_unique<peer>(id);
        if (id < slot_count) {
            slots_[id].store(slot.get(), std::memory_order_release);
        }
    }
    return *slot;
}

peer* cluster_impl::find_peer(std::uint32_t node) const {
    if (node < slot_count) {
        return slots_[node].load(std::memory_order_acquire);
    }
    std::lock_guard lk(peers_mu_);
    auto it = peers_.find(node);
    return it == peers_.end() ? nullptr : it->second.get();
}

void cluster_impl::upsert(std::uint32_t id, std::string address, std::uint32_t ep) {
    peer& p = get_or_create(id);
    const std::uint32_t old = p.epoch.load();
    if (old == ep && p.address == address) {
        maybe_dial(p);
        return;
    }
    std::shared_ptr<link_conn> stale;
    {
        std::lock_guard lk(p.out_mu);
        p.shown_address = address;
        stale = p.link;
    }
    if (stale && old != 0) {
        stale->close("node " + std::to_string(id) + " restarted (new boot epoch)");
    }
    p.address = std::move(address);
    if (p.state.load() != link_state::up) {
        p.down_since.store(clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    }
    p.epoch.store(ep, std::memory_order_release);
    log::event(level::info, "cluster: peer joined", {{"node", id}, {"peer", p.address}, {"epoch", ep}});
    maybe_dial(p);
}

void cluster_impl::remove(std::uint32_t id, const std::string& why) {
    peer* p = find_peer(id);
    if (p == nullptr || p->epoch.load() == 0) {
        return;
    }
    p->epoch.store(0, std::memory_order_release);
    if (p->retry) {
        p->retry->cancel();
    }
    std::shared_ptr<link_conn> l;
    {
        std::lock_guard lk(p->out_mu);
        l = p->link;
    }
    if (l) {
        l->close(why);
    }
    log::event(level::info, "cluster: peer left", {{"node", id}, {"reason", why}});
}

// --- links

void cluster_impl::maybe_dial(peer& p) {
    if (stopped() || !attached_ || p.dialing || p.node <= node_id() || p.epoch.load() == 0 ||
        p.state.load() != link_state::down) {
        return;
    }
    const auto hp = split_host_port(p.address);
    if (!hp) {
        return;
    }
    p.dialing = true;
    p.state.store(link_state::connecting);
    auto resolver = std::make_shared<tcp::resolver>(strand_);
    auto sock = std::make_shared<tcp::socket>(ex_);
    auto timer = std::make_shared<asio::steady_timer>(strand_);
    peer* pp = &p;
    timer->expires_after(std::chrono::seconds(3));
    timer->async_wait([sock, resolver](std::error_code ec) {
        if (!ec) {
            resolver->cancel();
            std::error_code e;
            sock->close(e);
        }
    });
    resolver->async_resolve(
        hp->first, hp->second,
        asio::bind_executor(strand_, [self = shared_from_this(), pp, sock, timer, resolver](
                                         std::error_code ec, tcp::resolver::results_type eps) {
            if (ec) {
                timer->cancel();
                self->dial_failed(*pp, "resolve " + pp->address + ": " + ec.message());
                return;
            }
            asio::async_connect(*sock, eps,
                                asio::bind_executor(self->strand_, [self, pp, sock, timer](std::error_code e, const tcp::endpoint&) {
                                    timer->cancel();
                                    if (e) {
                                        self->dial_failed(*pp, "connect " + pp->address + ": " + e.message());
                                        return;
                                    }
                                    if (self->stopped()) {
                                        return;
                                    }
                                    auto l = std::make_shared<link_conn>(self, std::move(*sock), pp);
                                    l->start_dialer();
                                }));
        }));
}

void cluster_impl::dial_failed(peer& p, const std::string& why) {
    p.dialing = false;
    p.state.store(link_state::down);
    {
        std::lock_guard lk(p.out_mu);
        p.last_error = why;
    }
    if (stopped() || p.epoch.load() == 0) {
        return;
    }
    // Jittered exponential backoff: 50 ms x 2^k up to 2 s, less up to a quarter.
    const unsigned base = std::min(2000U, 50U << std::min(p.attempts++, 6U));
    const unsigned delay = base - static_cast<unsigned>(rng_() % (base / 4 + 1));
    if (!p.retry) {
        p.retry = std::make_unique<asio::steady_timer>(strand_);
    }
    p.retry->expires_after(std::chrono::milliseconds(delay));
    p.retry->async_wait([self = shared_from_this(), pp = &p](std::error_code ec) {
        if (!ec) {
            self->maybe_dial(*pp);
        }
    });
}

void cluster_impl::link_up(peer& p, const std::shared_ptr<link_conn>& l, std::string_view first) {
    std::shared_ptr<link_conn> old;
    bool kick = false;
    // What was sent on a link this one replaces will never be answered on this one (the RACKs
    // that come here answer only this link's ROUTEs, in order): fail it now, as link_down does.
    std::deque<std::pair<protocol::session_id, std::string>> stale_acks;
    std::unordered_map<std::uint64_t, request_done> stale_reqs;
    {
        std::lock_guard lk(p.out_mu);
        old = std::exchange(p.link, l);
        stale_acks.swap(p.acks);
        stale_reqs.swap(p.requests);
        p.pending.clear();
        p.pending.append(first);
        p.writing_bytes = 0;
        p.writing = !p.pending.empty();
        kick = p.writing;
        p.last_error.clear();
        p.up_since_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
        p.state.store(link_state::up, std::memory_order_release);
        p.down_since.store(0, std::memory_order_relaxed);
    }
    if (old) {
        old->close("replaced by a new link");
    }
    if (kick) {
        l->post_write();
    }
    if (!stale_acks.empty() || !stale_reqs.empty()) {
        fail_waiting(stale_acks, stale_reqs);
    }
    asio::post(strand_, [self = shared_from_this(), pp = &p] {
        pp->dialing = false;
        pp->attempts = 0;
    });
    log::event(level::info, "cluster: link up", {{"node", p.node}, {"remote", l->remote()}});
}

void cluster_impl::fail_waiting(const std::deque<std::pair<protocol::session_id, std::string>>& acks,
                                std::unordered_map<std::uint64_t, request_done>& reqs) {
    if (auto core = this->core()) {
        for (const auto& [from, token] : acks) {
            core->deliver_ack(from, token, error_code::node_unreachable);
        }
    }
    unreachable_.fetch_add(acks.size(), std::memory_order_relaxed);
    for (auto& [id, done] : reqs) {
        done(error_code::node_unreachable, {});
    }
}

void cluster_impl::link_down(peer& p, const link_conn* l, const std::string& why) {
    std::deque<std::pair<protocol::session_id, std::string>> acks;
    std::unordered_map<std::uint64_t, request_done> reqs;
    bool was_up = false;
    {
        std::lock_guard lk(p.out_mu);
        p.last_error = why;
        if (p.link.get() == l) {
            was_up = true;
            p.down_since.store(clock::now().time_since_epoch().count(), std::memory_order_relaxed);
            p.link.reset();
            p.state.store(link_state::down, std::memory_order_release);
            p.pending.clear();
            p.writing = false;
            p.writing_bytes = 0;
            acks.swap(p.acks);
            reqs.swap(p.requests);
        }
    }
    if (was_up) {
        p.reconnects.fetch_add(1, std::memory_order_relaxed);
        log::event(level::warn, "cluster: link down", {{"node", p.node}, {"reason", why},
                                                       {"failed_acks", acks.size()}, {"failed_requests", reqs.size()}});
    }
    fail_waiting(acks, reqs);
    asio::post(strand_, [self = shared_from_this(), pp = &p, was_up, why] {
        if (was_up) {
            pp->dialing = false;
            pp->state.store(link_state::down);
            pp->attempts = 0;
            self->dial_failed(*pp, why);  // reconnect after a short, jittered backoff
        } else if (pp->dialing) {
            self->dial_failed(*pp, why);
        }
    });
}

template <class Frame>
void cluster_impl::push(peer& p, const Frame& f) {
    std::shared_ptr<link_conn> kick;
    {
        std::lock_guard lk(p.out_mu);
        if (!p.link) {
            return;
        }
        protocol::encode(p.pending, f);
        if (!p.writing) {
            p.writing = true;
            kick = p.link;
        }
    }
    if (kick) {
        kick->post_write();
    }
}

void cluster_impl::accept_one() {
    if (stopped()) {
        return;
    }
    acceptor_.async_accept(ex_, asio::bind_executor(strand_, [self = shared_from_this()](std::error_code ec, tcp::socket s) {
                               if (self->stopped()) {
                                   return;
                               }
                               if (!ec) {
                                   std::make_shared<link_conn>(self, std::move(s), nullptr)->start_acceptor();
                                   self->accept_one();
                                   return;
                               }
                               // EMFILE and the like: try again shortly rather than spin.
                               self->note_error("peer accept: " + ec.message());
                               auto t = std::make_shared<asio::steady_timer>(self->strand_, std::chrono::milliseconds(100));
                               t->async_wait([self, t](std::error_code) { self->accept_one(); });
                           }));
}

// --- remote_router

std::optional<error_code> cluster_impl::forward(protocol::session_id to, protocol::session_id from,
                                                std::string_view payload, std::string_view token) {
    peer* p = find_peer(to.node());
    // An id of no node the cluster lists, or of an old boot of it: issued by nobody alive.
    if (p == nullptr) {
        return error_code::unknown_session;
    }
    const std::uint32_t ep = p->epoch.load(std::memory_order_acquire);
    if (ep == 0 || ep != to.epoch()) {
        return error_code::unknown_session;
    }
    std::shared_ptr<link_conn> kick;
    {
        std::lock_guard lk(p->out_mu);
        if (!p->link) {
            return no_link(*p);
        }
        if (p->pending.size() + p->writing_bytes + payload.size() > opts_.link_queue_bytes) {
            return error_code::queue_full;
        }
        protocol::encode(p->pending, protocol::route_msg{from, to, payload, token});
        if (!token.empty()) {
            p->acks.emplace_back(from, std::string(token));
        }
        ++p->msgs_out;
        p->bytes_out += payload.size();
        if (!p->writing) {
            p->writing = true;
            kick = p->link;
        }
    }
    if (kick) {
        kick->post_write();
    }
    return std::nullopt;
}

void cluster_impl::request(bool kick, protocol::session_id target, request_done done) {
    auto fail = [&](error_code e) { asio::post(ex_, [done = std::move(done), e] { done(e, {}); }); };
    peer* p = find_peer(target.node());
    const std::uint32_t ep = p != nullptr ? p->epoch.load(std::memory_order_acquire) : 0;
    if (ep == 0 || ep != target.epoch()) {
        fail(error_code::unknown_session);
        return;
    }
    std::shared_ptr<link_conn> w;
    bool queued = false;
    error_code why = error_code::node_unreachable;
    {
        std::lock_guard lk(p->out_mu);
        if (!p->link) {
            why = no_link(*p);
        } else {
            queued = true;
            const std::uint64_t id = p->next_request++;
            p->requests.emplace(id, std::move(done));
            protocol::encode(p->pending,
                             protocol::request_msg{id, kick ? protocol::link_op::kick : protocol::link_op::info, target});
            if (!p->writing) {
                p->writing = true;
                w = p->link;
            }
        }
    }
    if (!queued) {
        fail(why);
        return;
    }
    if (w) {
        w->post_write();
    }
}

// --- attach, leave, stop

void cluster_impl::attach(std::shared_ptr<registry_core> core) {
    core_ = core;
    core->set_router(shared_from_this());
    asio::dispatch(strand_, [self = shared_from_this()] {
        self->attached_ = true;
        self->start_watch();
    });
}

void cluster_impl::leave(std::function<void(std::error_code)> done) {
    asio::dispatch(strand_, [self = shared_from_this(), done = std::move(done)]() mutable {
        self->leaving_ = true;
        self->ka_timer_.cancel();
        const auto st = self->lease_state_.load();
        if (st != lease_state::held || self->lease_id_.load() == 0) {
            self->set_lease_state(lease_state::left);
            asio::post(self->ex_, [done = std::move(done)] { done({}); });
            return;
        }
        self->etcd_->revoke(self->lease_id_.load(), [self, done = std::move(done)](std::error_code ec) mutable {
            self->set_lease_state(lease_state::left);
            log::event(level::info, "cluster: left (lease revoked)", {{"node", self->node_id()}, {"error", ec ? ec.message() : ""}});
            asio::post(self->ex_, [done = std::move(done), ec] { done(ec); });
        });
    });
}

void cluster_impl::stop() {
    if (stopped_.exchange(true)) {
        return;
    }
    etcd_->cancel();
    asio::post(strand_, [self = shared_from_this()] {
        std::error_code ec;
        self->acceptor_.close(ec);
        self->ka_timer_.cancel();
        self->join_timer_.cancel();
        self->watch_timer_.cancel();
        self->finish_join(cluster_errc::left, 0);
        std::vector<std::shared_ptr<link_conn>> links;
        {
            std::lock_guard lk(self->peers_mu_);
            for (auto& [id, p] : self->peers_) {
                if (p->retry) {
                    p->retry->cancel();
                }
                std::lock_guard pl(p->out_mu);
                if (p->link) {
                    links.push_back(p->link);
                }
            }
        }
        for (auto& l : links) {
            l->close("the cluster stopped");
        }
    });
}

// --- monitoring

nlohmann::json cluster_impl::routez() const {
    nlohmann::json peers = nlohmann::json::array();
    {
        std::lock_guard lk(peers_mu_);
        for (const auto& [id, p] : peers_) {
            const std::uint32_t ep = p->epoch.load();
            std::lock_guard pl(p->out_mu);
            if (ep == 0 && !p->link) {
                continue;  // gone from etcd and no link: not a peer now
            }
            peers.push_back({{"node", id},
                             {"address", p->shown_address},
                             {"epoch", ep},
                             {"state", to_string(p->state.load())},
                             {"in_etcd", ep != 0},
                             {"msgs_in", p->msgs_in.load()},
                             {"msgs_out", p->msgs_out},
                             {"bytes_in", p->bytes_in.load()},
                             {"bytes_out", p->bytes_out},
                             {"queue_bytes", p->pending.size() + p->writing_bytes},
                             {"pending_acks", p->acks.size()},
                             {"pending_requests", p->requests.size()},
                             {"reconnects", p->reconnects.load()},
                             {"down_ms", p->down_since.load() == 0 ? std::int64_t{0}
                                                                   : std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                         clock::now().time_since_epoch() -
                                                                         clock::duration(p->down_since.load()))
                                                                         .count()},
                             {"last_error", p->last_error}});
        }
    }
    return {{"cluster", opts_.name},
            {"node", node_id()},
            {"epoch", epoch_},
            {"peer_address", advertise_},
            {"etcd",
             {{"endpoint", opts_.etcd},
              {"lease", to_string(lease_state_.load())},
              {"lease_id", std::to_string(lease_id_.load())},
              {"ttl_s", opts_.lease_ttl.count()},
              {"lease_losses", lease_losses_.load()},
              {"last_error", last_error()}}},
            {"node_unreachable", unreachable()},
            {"peers", peers}};
}

nlohmann::json cluster_impl::health() const {
    std::size_t n = 0;
    std::size_t up = 0;
    {
        std::lock_guard lk(peers_mu_);
        for (const auto& [id, p] : peers_) {
            if (p->epoch.load() != 0) {
                ++n;
                up += p->state.load() == link_state::up ? 1 : 0;
            }
        }
    }
    return {{"name", opts_.name},
            {"node", node_id()},
            {"epoch", epoch_},
            {"lease", to_string(lease_state_.load())},
            {"peers", n},
            {"peers_up", up},
            {"last_error", last_error()}};
}

void cluster_impl::write_metrics(std::ostream& o) const {
    std::uint64_t up = 0;
    std::uint64_t known = 0;
    std::uint64_t mo = 0;
    std::uint64_t mi = 0;
    std::uint64_t bo = 0;
    std::uint64_t bi = 0;
    std::uint64_t rc = 0;
    std::uint64_t qb = 0;
    {
        std::lock_guard lk(peers_mu_);
        for (const auto& [id, p] : peers_) {
            known += p->epoch.load() != 0 ? 1 : 0;
            up += p->state.load() == link_state::up ? 1 : 0;
            mi += p->msgs_in.load();
            bi += p->bytes_in.load();
            rc += p->reconnects.load();
            std::lock_guard pl(p->out_mu);
            mo += p->msgs_out;
            bo += p->bytes_out;
            qb += p->pending.size() + p->writing_bytes;
        }
    }
    auto g = [&](const char* name, const char* type, const char* help, std::uint64_t v) {
        o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n' << name << ' ' << v << '\n';
    };
    g("lariv_cluster_peers", "gauge", "Other nodes etcd lists.", known);
    g("lariv_cluster_peers_up", "gauge", "Peer links up.", up);
    g("lariv_cluster_lease_held", "gauge", "1 while this node's etcd lease is held.",
      lease_state_.load() == lease_state::held ? 1 : 0);
    g("lariv_cluster_lease_losses_total", "counter", "Times the etcd lease was lost.", lease_losses_.load());
    g("lariv_cluster_link_reconnects_total", "counter", "Peer links that went down.", rc);
    g("lariv_cluster_link_queue_bytes", "gauge", "Bytes queued on peer links.", qb);
    g("lariv_cluster_node_unreachable_total", "counter", "Sends and requests answered node_unreachable.",
      unreachable());
    o << "# HELP lariv_cluster_forwarded_messages_total Messages forwarded over peer links.\n"
         "# TYPE lariv_cluster_forwarded_messages_total counter\n"
      << "lariv_cluster_forwarded_messages_total{direction=\"out\"} " << mo << '\n'
      << "lariv_cluster_forwarded_messages_total{direction=\"in\"} " << mi << '\n';
    o << "# HELP lariv_cluster_forwarded_bytes_total Payload bytes forwarded over peer links.\n"
         "# TYPE lariv_cluster_forwarded_bytes_total counter\n"
      << "lariv_cluster_forwarded_bytes_total{direction=\"out\"} " << bo << '\n'
      << "lariv_cluster_forwarded_bytes_total{direction=\"in\"} " << bi << '\n';
}

}  // namespace detail

// -------------------------------------------------------------------------------------- cluster

cluster::cluster(executor_type ex, cluster_options o)
    : impl_(std::make_shared<detail::cluster_impl>(std::move(ex), std::move(o))) {
    impl_->start();
}

cluster::~cluster() { impl_->stop(); }

cluster::executor_type cluster::get_executor() const noexcept { return impl_->ex_; }

void cluster::start_join(std::function<void(std::error_code, std::uint32_t)> done) { impl_->join(std::move(done)); }

void cluster::attach(registry& reg) {
    if (reg.node_id() != impl_->node_id() || reg.boot_epoch() != impl_->epoch()) {
        throw config_error("cluster::attach: the registry's node_id/boot_epoch (" + std::to_string(reg.node_id()) +
                           "/" + std::to_string(reg.boot_epoch()) + ") are not the cluster's (" +
                           std::to_string(impl_->node_id()) + "/" + std::to_string(impl_->epoch()) +
                           "): build the registry after async_join with node_id() and boot_epoch()");
    }
    impl_->attach(reg.core_);
}

void cluster::start_leave(std::function<void(std::error_code)> done) { impl_->leave(std::move(done)); }

std::uint32_t cluster::node_id() const noexcept { return impl_->node_id(); }
std::uint32_t cluster::boot_epoch() const noexcept { return impl_->epoch(); }
std::uint16_t cluster::peer_port() const noexcept { return impl_->opts().peer_port; }
const cluster_options& cluster::options() const noexcept { return impl_->opts(); }
std::string cluster::last_error() const { return impl_->last_error(); }
nlohmann::json cluster::routez() const { return impl_->routez(); }
nlohmann::json cluster::health() const { return impl_->health(); }
bool cluster::lease_held() const noexcept { return impl_->lease_held(); }
void cluster::write_metrics(std::ostream& o) const { impl_->write_metrics(o); }

}  // namespace lariv::server
