// lariv_embed_example — how a host Asio server embeds the Lariv session registry.
//
// The host is an ordinary Asio server: its own io_context and threads, its own acceptor and its
// own tiny line protocol for operators (port --port, default 7421):
//     who           lists the registry's sessions ("<id> <name>" per line, then "."),
//     say <text>    broadcasts <text> to every registered session as a MSG from the host,
//     to <id> <text> routes <text> to one session through registry::send,
//     quit          closes the operator connection.
// A second acceptor (port --registry-port, default 7422) takes connections for the registry: the
// host accepts them and hands each socket to registry::adopt, and from then on the registry speaks
// the Lariv wire protocol (PROTOCOL.md) with them. Hooks tell the host when sessions open and close.
//
// --cluster-etcd URL [--node-id N] [--peer-port P] [--cluster-token T]: the host joins a cluster
// of larivd nodes (lariv/server/cluster.hpp): its registry's sessions and theirs route to each
// other by id, and "to <id> <text>" reaches a session on any node. The node id is claimed in etcd
// before the registry is built (auto by default), because every session id carries it.
//
// --selftest: binds ephemeral ports, connects a protocol client and an operator client to itself,
// checks that the open hook fired and that a broadcast arrived, and exits 0 (or 1) within ~1 s.
#include <asio/bind_executor.hpp>
#include <asio/connect.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/read_until.hpp>
#include <asio/signal_set.hpp>
#include <asio/strand.hpp>
#include <asio/streambuf.hpp>
#include <asio/use_future.hpp>
#include <asio/write.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <istream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "lariv/protocol/decoder.hpp"
#include "lariv/protocol/encoder.hpp"
#include "lariv/protocol/json.hpp"
#include "lariv/server/cluster.hpp"
#include "lariv/server/registry.hpp"
#include "lariv/server/session.hpp"

namespace {

using asio::ip::tcp;
namespace srv = lariv::server;
namespace proto = lariv::protocol;

/// The id the host uses as "from" in its own notices: node 0, never issued to a session.
constexpr proto::session_id host_id{};

/// The host's per-session data, kept in session::user_data().
struct member {
    std::chrono::steady_clock::time_point joined;
};

/// The host application: owns the io_context, the registry and both acceptors.
class host {
public:
    host(std::uint16_t line_port, std::uint16_t registry_port,
         const std::optional<srv::cluster_options>& cluster = std::nullopt)
        : control_(asio::make_strand(io_))
        , cluster_(cluster ? std::make_unique<srv::cluster>(io_.get_executor(), *cluster) : nullptr)
        , registry_(io_.get_executor(), make_config(join()), make_hooks())
        , line_acceptor_(control_, tcp::endpoint(asio::ip::address_v4::loopback(), line_port))
        , registry_acceptor_(control_, tcp::endpoint(asio::ip::address_v4::loopback(), registry_port)) {
        if (cluster_) {
            cluster_->attach(registry_);  // sends to other nodes' ids now go over the links
        }
    }

    ~host() { shutdown(); }

    void start(unsigned threads) {
        // Keep io_.run() from returning when the io_context runs out of work for a moment (no
        // client connected, every acceptor closed): shutdown() still needs these threads to run
        // the async_shutdown completion. Without the guard, run() could return between the
        // acceptors closing and async_shutdown being called, and shutdown() would wait forever.
        work_.emplace(io_.get_executor());
        accept_lines();
        accept_registry_clients();
        for (unsigned i = 0; i < threads; ++i) {
            threads_.emplace_back([this] { io_.run(); });
        }
    }
    /// Shutdown order: acceptors and operator connections, then the registry's sessions through
    /// async_shutdown (drained and flushed while the io_context still runs), then the threads.
    void shutdown() {
        if (stopped_.exchange(true)) {
            return;
        }
        asio::post(control_, [this] {
            std::error_code ec;
            line_acceptor_.close(ec);
            registry_acceptor_.close(ec);
            std::lock_guard lk(lines_mu_);
            for (auto& s : lines_) {
                if (auto p = s.lock()) {
                    p->close();
                }
            }
        });
        if (cluster_ && !threads_.empty()) {
            // Leave first: peers drop this node at once instead of after the lease TTL.
            auto left = cluster_->async_leave(asio::use_future);
            left.wait_for(std::chrono::seconds(3));
        }
        std::promise<std::error_code> drained;
        registry_.async_shutdown(std::chrono::seconds(2), [&](std::error_code ec) { drained.set_value(ec); });
        if (!threads_.empty()) {
            drained.get_future().wait();
        }
        work_.reset();
        io_.stop();
        for (auto& t : threads_) {
            t.join();
        }
        threads_.clear();
        io_.restart();
        io_.poll();
    }

    [[nodiscard]] std::uint16_t line_port() const { return line_acceptor_.local_endpoint().port(); }
    [[nodiscard]] std::uint32_t node_id() const { return registry_.node_id(); }
    [[nodiscard]] std::uint16_t registry_port() const {
        return registry_acceptor_.local_endpoint().port();
    }
    [[nodiscard]] int opened() const { return opened_.load(); }
    [[nodiscard]] int closed() const { return closed_.load(); }
    asio::io_context& context() { return io_; }

    /// Sends `text` to every registered session as a MSG from the host. Returns how many got it.
    int broadcast(const std::string& text) {
        int n = 0;
        registry_.for_each([&](srv::session_base& s) {
            if (s.routable() && s.deliver(host_id, text) == srv::deliver_result::ok) {
                ++n;
            }
            return true;
        });
        return n;
    }

    /// The text of the `who` command.
    std::string who() const {
        std::string out;
        registry_.for_each([&](srv::session_base& s) {
            if (s.routable()) {
                const auto name = s.info().name;
                out += s.id().to_string() + " " + (name.empty() ? "-" : name) + "\n";
            }
            return true;
        });
        return out + ".\n";
    }

    /// Routes `text` to one session, as the registry does for a client's SEND.
    std::string route(const std::string& id_text, const std::string& text) {
        auto id = proto::session_id::parse(id_text);
        if (!id) {
            return "error: bad id\n";
        }
        if (auto err = registry_.send(*id, host_id, text)) {
            return "error: " + std::string(proto::to_string(*err)) + "\n";
        }
        return "ok\n";
    }

private:
    /// With a cluster: claims the node id in etcd (running the io_context on this thread until
    /// the claim completes; the I/O threads start later) and returns it with the boot epoch.
    std::pair<std::uint32_t, std::uint32_t> join() {
        if (!cluster_) {
            return {21, 0};
        }
        auto claimed = cluster_->async_join(asio::use_future);
        while (claimed.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
            io_.run_one();
        }
        const std::uint32_t id = claimed.get();  // throws: id taken, etcd unreachable
        return {id, cluster_->boot_epoch()};
    }

    static srv::registry_options make_config(std::pair<std::uint32_t, std::uint32_t> identity) {
        srv::registry_options c;
        c.node_id = identity.first;
        c.boot_epoch = identity.second;
        c.max_sessions = 1000;
        c.registry_buffer = 64;
        c.heartbeat_ms = 10000;
        return c;
    }

    srv::hooks make_hooks() {
        srv::hooks h;
        h.on_open = [this](srv::session& s) {
            s.user_data() = member{std::chrono::steady_clock::now()};
            ++opened_;
            std::printf("joined: %s %s (%s)\n", s.id().to_string().c_str(), s.name().c_str(),
                        s.remote().c_str());
            // Greet the newcomer with a host notice of our own.
            std::string frame;
            proto::encode(frame, proto::deliver_msg{host_id, "welcome " + s.name()});
            (void)s.send_frame(frame);
        };
        h.on_close = [this](srv::session& s, srv::close_reason why) {
            ++closed_;
            std::printf("left: %s (%.*s)\n", s.id().to_string().c_str(),
                        static_cast<int>(srv::to_string(why).size()), srv::to_string(why).data());
        };
        return h;
    }

    void accept_registry_clients() {
        // Onto the io_context's executor, not the acceptors' strand (see registry::adopt).
        registry_acceptor_.async_accept(io_, [this](std::error_code ec, tcp::socket sock) {
            if (ec == asio::error::operation_aborted || !registry_acceptor_.is_open()) {
                return;
            }
            if (!ec) {
                registry_.adopt(std::move(sock));  // from here on the registry owns it
            }
            accept_registry_clients();
        });
    }

    /// One operator connection speaking the host's own line protocol.
    class line_session : public std::enable_shared_from_this<line_session> {
    public:
        line_session(host& h, tcp::socket s) : host_(h), socket_(std::move(s)) {}
        void start() { read(); }
        /// Any thread: the close runs on the connection's own strand.
        void close() {
            asio::post(socket_.get_executor(), [self = shared_from_this()] {
                std::error_code ec;
                self->socket_.close(ec);
            });
        }

    private:
        void read() {
            asio::async_read_until(socket_, buf_, '\n',
                                   [self = shared_from_this()](std::error_code ec, std::size_t) {
                                       if (!ec) {
                                           self->on_line();
                                       }
                                   });
        }
        void on_line() {
            std::istream in(&buf_);
            std::string line;
            std::getline(in, line);
            if (!line.empty() && line.back() == '\r') {
                line.pop_back();
            }
            std::string reply;
            if (line == "who") {
                reply = host_.who();
            } else if (line.rfind("say ", 0) == 0) {
                reply = "sent to " + std::to_string(host_.broadcast(line.substr(4))) + "\n";
            } else if (line.rfind("to ", 0) == 0 && line.size() > 36) {
                reply = host_.route(line.substr(3, 32), line.substr(std::min<std::size_t>(36, line.size())));
            } else if (line == "quit") {
                std::error_code ec;
                socket_.close(ec);
                return;
            } else {
                reply = "commands: who | say <text> | to <id> <text> | quit\n";
            }
            out_ = std::move(reply);
            asio::async_write(socket_, asio::buffer(out_),
                              [self = shared_from_this()](std::error_code ec, std::size_t) {
                                  if (!ec) {
                                      self->read();
                                  }
                              });
        }

        host& host_;
        tcp::socket socket_;
        asio::streambuf buf_;
        std::string out_;
    };

    void accept_lines() {
        // Each operator connection gets a strand of its own (its handlers never run at once).
        line_acceptor_.async_accept(asio::any_io_executor(asio::make_strand(io_)),
                                    [this](std::error_code ec, tcp::socket sock) {
            if (ec == asio::error::operation_aborted || !line_acceptor_.is_open()) {
                return;
            }
            if (!ec) {
                auto s = std::make_shared<line_session>(*this, std::move(sock));
                {
                    std::lock_guard lk(lines_mu_);
                    lines_.push_back(s);
                }
                s->start();
            }
            accept_lines();
        });
    }

    asio::io_context io_;
    asio::strand<asio::io_context::executor_type> control_;  // the acceptors' strand
    std::unique_ptr<srv::cluster> cluster_;  // before registry_: the id comes from it
    srv::registry registry_;  // constructed on our executor; owns no threads
    tcp::acceptor line_acceptor_;
    tcp::acceptor registry_acceptor_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
    std::vector<std::thread> threads_;
    std::mutex lines_mu_;
    std::vector<std::weak_ptr<line_session>> lines_;
    std::atomic<int> opened_{0};
    std::atomic<int> closed_{0};
    std::atomic<bool> stopped_{false};
};

// ------------------------------------------------------------------------------------ selftest

/// A minimal blocking protocol client for the selftest (a watchdog bounds the whole run).
struct proto_client {
    explicit proto_client(asio::io_context& io) : socket(io) {}
    tcp::socket socket;
    proto::reply_decoder dec;
    std::string rx;

    /// The next reply, copied out as "KIND|field|payload" text for easy checks.
    std::string next() {
        for (;;) {
            auto r = dec.decode(std::string_view(rx));
            std::string out;
            if (r.status == proto::decode_status::good) {
                if (auto* m = std::get_if<proto::deliver_msg>(&r.message)) {
                    out = "MSG|" + m->from.to_string() + "|" + std::string(m->payload);
                } else if (auto* b = std::get_if<proto::body_msg>(&r.message)) {
                    out = std::string("BODY|") + std::string(proto::to_string(b->kind)) + "|" +
                          std::string(b->json);
                } else if (auto* e = std::get_if<proto::err_msg>(&r.message)) {
                    out = "ERR|" + std::string(proto::to_string(e->code)) + "|";
                } else {
                    out = "OTHER||";
                }
            } else if (r.status == proto::decode_status::bad) {
                out = "BAD||";
            }
            rx.erase(0, r.consumed);
            if (!out.empty()) {
                return out;
            }
            char buf[4096];
            std::error_code ec;
            const std::size_t n = socket.read_some(asio::buffer(buf), ec);
            if (ec) {
                return "EOF||";
            }
            rx.append(buf, n);
        }
    }
};

std::string read_line(tcp::socket& s, asio::streambuf& buf) {
    std::error_code ec;
    asio::read_until(s, buf, '\n', ec);
    if (ec) {
        return {};
    }
    std::istream in(&buf);
    std::string line;
    std::getline(in, line);
    return line;
}

int selftest() {
    // Bound the whole run: a hang is a failure, not a stuck CI job.
    std::thread([] {
        std::this_thread::sleep_for(std::chrono::seconds(20));
        std::fprintf(stderr, "selftest: timed out\n");
        std::_Exit(1);
    }).detach();

    int failures = 0;
    auto check = [&](bool ok, const char* what) {
        std::printf("selftest: %s: %s\n", what, ok ? "ok" : "FAILED");
        failures += ok ? 0 : 1;
    };
    host h(0, 0);
    h.start(2);
    asio::io_context cio;

    // A protocol client joins through the registry port.
    proto_client pc(cio);
    pc.socket.connect(tcp::endpoint(asio::ip::address_v4::loopback(), h.registry_port()));
    const std::string hello = "HELLO {\"name\":\"selftest\"}\r\n";
    asio::write(pc.socket, asio::buffer(hello));
    const std::string reply = pc.next();
    check(reply.rfind("BODY|HELLO|", 0) == 0, "HELLO answered");
    std::string my_id;
    if (auto j = proto::parse_json(reply.substr(11), proto::limits{})) {
        my_id = (*j).value("session", "");
    }
    check(my_id.size() == 32, "session id received");
    const std::string welcome = pc.next();
    check(welcome == "MSG|" + host_id.to_string() + "|welcome selftest", "on_open hook fired (welcome)");
    check(h.opened() == 1, "open hook counted");

    // An operator connects to the host's own port and uses its line protocol.
    tcp::socket op(cio);
    op.connect(tcp::endpoint(asio::ip::address_v4::loopback(), h.line_port()));
    asio::streambuf obuf;
    asio::write(op, asio::buffer(std::string("who\n")));
    const std::string who1 = read_line(op, obuf);
    const std::string who_end = read_line(op, obuf);
    check(who1 == my_id + " selftest" && who_end == ".", "who lists the session");

    asio::write(op, asio::buffer(std::string("say hello, registry\n")));
    check(read_line(op, obuf) == "sent to 1", "say reached one session");
    check(pc.next() == "MSG|" + host_id.to_string() + "|hello, registry", "broadcast arrived");

    asio::write(op, asio::buffer("to " + my_id + " direct\n"));
    check(read_line(op, obuf) == "ok", "to <id> routed");
    check(pc.next() == "MSG|" + host_id.to_string() + "|direct", "routed message arrived");

    // The client leaves; the close hook fires and the registry forgets it.
    const std::string quit = "QUIT\r\n";
    asio::write(pc.socket, asio::buffer(quit));
    (void)pc.next();  // +OK bye
    check(pc.next() == "EOF||", "server closed after QUIT");
    bool closed = false;
    for (int i = 0; i < 200 && !closed; ++i) {
        closed = h.closed() == 1;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    check(closed, "close hook fired");
    asio::write(op, asio::buffer("to " + my_id + " late\n"));
    check(read_line(op, obuf) == "error: stale_session", "stale id refused");
    std::error_code ec;
    op.close(ec);
    h.shutdown();
    std::printf("selftest: %s\n", failures == 0 ? "PASSED" : "FAILED");
    return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::uint16_t line_port = 7421;
    std::uint16_t registry_port = 7422;
    std::optional<srv::cluster_options> cluster;
    auto cl = [&]() -> srv::cluster_options& {
        if (!cluster) {
            cluster.emplace();
        }
        return *cluster;
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--selftest") {
            return selftest();
        }
        if ((a == "--port" || a == "--registry-port") && i + 1 < argc) {
            const auto v = static_cast<std::uint16_t>(std::strtoul(argv[++i], nullptr, 10));
            (a == "--port" ? line_port : registry_port) = v;
        } else if (a == "--cluster-etcd" && i + 1 < argc) {
            cl().etcd = argv[++i];
        } else if (a == "--cluster-name" && i + 1 < argc) {
            cl().name = argv[++i];
        } else if (a == "--cluster-token" && i + 1 < argc) {
            cl().token = argv[++i];
        } else if (a == "--node-id" && i + 1 < argc) {
            const std::string v = argv[++i];
            cl().node_id = v == "auto" ? 0 : static_cast<std::uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
        } else if (a == "--peer-port" && i + 1 < argc) {
            cl().peer_port = static_cast<std::uint16_t>(std::strtoul(argv[++i], nullptr, 10));
        } else if (a == "--cluster-lease-ttl-s" && i + 1 < argc) {
            cl().lease_ttl = std::chrono::seconds(std::strtoul(argv[++i], nullptr, 10));
        } else {
            std::fprintf(stderr,
                         "usage: %s [--port N] [--registry-port N] [--selftest]\n"
                         "          [--cluster-etcd URL [--cluster-name NAME] [--cluster-token T] [--node-id N|auto]\n"
                         "           [--peer-port P] [--cluster-lease-ttl-s S]]\n",
                         argv[0]);
            return 64;
        }
    }
    if (cluster && cluster->etcd.empty()) {
        std::fprintf(stderr, "%s: the cluster flags need --cluster-etcd\n", argv[0]);
        return 64;
    }
    try {
        host h(line_port, registry_port, cluster);
        h.start(2);
        if (cluster) {
            std::printf("cluster member: node %u\n", h.node_id());
        }
        std::printf("operators: nc localhost %u (who | say <text> | to <id> <text>)\n"
                    "registry clients: nc -C localhost %u (HELLO, SEND, ...)\n",
                    h.line_port(), h.registry_port());
        std::fflush(stdout);
        asio::io_context sigio;
        asio::signal_set signals(sigio, SIGINT, SIGTERM);
        signals.async_wait([](std::error_code, int) {});
        sigio.run();
        h.shutdown();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 70;
    }
    return 0;
}
